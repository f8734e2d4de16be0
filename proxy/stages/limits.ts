// Circuit breakers (Envoy's thresholds): connections, pending requests (waiting for a
// connection) and active requests per upstream. Overflow is answered at once with a coded error.
import type { Socket } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import type { Stage } from './types.ts';

export interface BreakerLimits {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
}

export type Overflow = 'connections' | 'pending' | 'requests';

function overloaded(upstream: string, what: Overflow, limit: number): RemoraError {
  return new RemoraError(
    'REMORA_E_PROXY_OVERLOADED',
    `circuit breaker for ${upstream} is open: ${what} at the limit of ${limit}; retry later or raise the limit`,
    { upstream, limit: what, value: limit },
  );
}

/** Shared connection budget of one upstream; requests wait for a slot up to `maxPendingRequests`. */
export class ConnectionLimiter {
  open = 0;
  #waiters: Array<() => void> = [];
  readonly upstream: string;
  limits: BreakerLimits;
  onOverflow: (what: Overflow) => void;

  constructor(upstream: string, limits: BreakerLimits, onOverflow: (what: Overflow) => void) {
    this.upstream = upstream;
    this.limits = limits;
    this.onOverflow = onOverflow;
  }

  get pending(): number {
    return this.#waiters.length;
  }

  tryOpen(): boolean {
    if (this.open >= this.limits.maxConnections) return false;
    this.open++;
    return true;
  }

  /** A connection closed or went idle: wake one waiter. */
  release(closed: boolean): void {
    if (closed) this.open--;
    this.#waiters.shift()?.();
  }

  /**
   * Dials with a slot already taken (`tryOpen`): the slot is given back if the dial fails, and
   * when the socket closes.
   */
  async dialOpened(dial: () => Promise<Socket>): Promise<Socket> {
    let socket: Socket;
    try {
      socket = await dial();
    } catch (err) {
      this.release(true);
      throw err;
    }
    socket.once('close', () => this.release(true));
    return socket;
  }

  /** Waits for a chance to get a connection; throws at once when too many already wait. */
  wait(timeoutMs: number): Promise<void> {
    if (this.#waiters.length >= this.limits.maxPendingRequests) {
      const what = this.limits.maxPendingRequests === 0 ? 'connections' : 'pending';
      this.onOverflow(what);
      throw overloaded(
        this.upstream,
        what,
        what === 'pending' ? this.limits.maxPendingRequests : this.limits.maxConnections,
      );
    }
    return new Promise((resolve, reject) => {
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(wake);
        if (i !== -1) this.#waiters.splice(i, 1);
        this.onOverflow('pending');
        reject(overloaded(this.upstream, 'connections', this.limits.maxConnections));
      }, timeoutMs);
      this.#waiters.push(wake);
    });
  }
}

/** Refuses requests beyond `maxRequests` in flight at once. */
export function createActiveRequestsStage(o: {
  upstream: string;
  limits: () => BreakerLimits;
  onOverflow: (what: Overflow) => void;
  counter: { active: number };
}): Stage {
  return (next) => async (req) => {
    const max = o.limits().maxRequests;
    if (o.counter.active >= max) {
      o.onOverflow('requests');
      throw overloaded(o.upstream, 'requests', max);
    }
    o.counter.active++;
    try {
      return await next(req);
    } finally {
      o.counter.active--;
    }
  };
}
