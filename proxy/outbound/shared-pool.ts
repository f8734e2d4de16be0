// The per-endpoint pool of connections shared by many requests or streams at once (remora-mux/1
// for HTTP, remora-tcp/1 for TCP): which connection new work gets, when another one is dialed,
// and when one is retired (idle, closing, past the peer certificate's expiry).
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ConnectionLimiter } from '../stages/limits.ts';

/** How long a peer that answered without the protocol is not asked again. */
const UNSUPPORTED_RECHECK_MS = 60_000;

/** When the peer's certificate expires (ms since the epoch; Infinity without TLS). */
export function peerExpiry(socket: Socket): number {
  const cert = (socket as Partial<TLSSocket>).getPeerCertificate?.();
  const t = Date.parse(cert?.valid_to ?? '');
  return Number.isNaN(t) ? Infinity : t;
}

/** A connection that carries many requests or streams at once. */
export interface SharedConnection {
  readonly dead: boolean;
  /** No new work (being closed); closes once what it carries is done. */
  readonly retiring: boolean;
  /** Requests or streams it carries now. */
  readonly load: number;
  /** When `load` last dropped to zero (performance.now()). */
  readonly idleSince: number;
  /** When the peer's certificate expires: no new work after that (ms since the epoch). */
  readonly expiresAt: number;
  /** No new work; closes once what it carries is done. */
  close(): void;
}

export interface SharedPoolOptions<C extends SharedConnection> {
  /** Opens a verified mTLS socket offering `alpn`. */
  dial: () => Promise<Socket>;
  /** The protocol the connections speak; a socket that did not negotiate it is not used. */
  alpn: string;
  /** Wraps a socket that negotiated `alpn`; `onGone` is called once the connection is gone. */
  wrap: (socket: Socket, onGone: (c: C) => void) => C;
  /** Load on one connection before another one is opened. */
  maxLoad: number;
  /** Connections at most (past it, the least loaded one takes more than maxLoad). */
  maxConnections: number;
  /** A connection without load is closed after this time. */
  idleTimeoutMs: number;
  /** The cluster's connection budget (circuit breaker), if the connections count against it. */
  limiter?: ConnectionLimiter;
  pendingTimeoutMs?: number;
}

/**
 * The shared connections to one endpoint (`remora-mux/1` for HTTP, `remora-tcp/1` for TCP): new
 * work goes to the least loaded one, another one is dialed (one dial at a time) only when all are
 * full, and idle ones are swept. `unsupported` turns true for a minute when the peer does not
 * speak the protocol (an older Remora, or not Remora): the caller then takes its fallback path.
 */
export class SharedPool<C extends SharedConnection> {
  readonly o: SharedPoolOptions<C>;
  #conns: C[] = [];
  #dialing: Promise<C | null> | null = null;
  #unsupportedSince = -Infinity;
  #sweeper: NodeJS.Timeout | null = null;
  closed = false;

  constructor(o: SharedPoolOptions<C>) {
    this.o = o;
  }

  get connections(): number {
    return this.#conns.length;
  }

  /** The peer answered without the protocol lately (asked again after a minute). */
  get unsupported(): boolean {
    return performance.now() - this.#unsupportedSince < UNSUPPORTED_RECHECK_MS;
  }

  /**
   * An open connection with room for one more request or stream, or null when another one
   * should be opened. Connections past the peer's certificate expiry are retired here.
   */
  pick(): C | null {
    let best: C | null = null;
    const now = Date.now();
    for (const c of this.#conns) {
      if (!c.retiring && now >= c.expiresAt) c.close();
      if (!c.dead && !c.retiring && (best === null || c.load < best.load)) best = c;
    }
    if (best === null) return null;
    if (best.load >= this.o.maxLoad && this.#conns.length < this.o.maxConnections) return null;
    return best;
  }

  /** A new connection (shared by concurrent callers); null when the peer lacks the protocol. */
  add(): Promise<C | null> {
    this.#dialing ??= this.#dial().finally(() => {
      this.#dialing = null;
    });
    return this.#dialing;
  }

  async #dial(): Promise<C | null> {
    const limiter = this.o.limiter;
    while (limiter !== undefined && !limiter.tryOpen()) {
      const c = this.pick() ?? this.#conns.find((x) => !x.dead && !x.retiring);
      if (c !== undefined && c !== null) return c; // over the budget: share an open one
      await limiter.wait(this.o.pendingTimeoutMs ?? 5000);
    }
    const socket =
      limiter === undefined ? await this.o.dial() : await limiter.dialOpened(this.o.dial);
    if ((socket as Socket & { alpnProtocol?: string | false }).alpnProtocol !== this.o.alpn) {
      this.#unsupportedSince = performance.now();
      socket.destroy();
      return null;
    }
    const c = this.o.wrap(socket, (gone) => {
      this.#conns = this.#conns.filter((x) => x !== gone);
    });
    if (this.closed) c.close();
    else this.#conns.push(c);
    if (this.#sweeper === null) {
      this.#sweeper = setInterval(() => this.#sweep(), Math.max(100, this.o.idleTimeoutMs / 2));
      this.#sweeper.unref();
    }
    return c;
  }

  /** Closes connections idle longer than idleTimeoutMs; runs while there are connections. */
  #sweep(): void {
    const cutoff = performance.now() - this.o.idleTimeoutMs;
    for (const c of this.#conns) if (c.load === 0 && c.idleSince < cutoff) c.close();
    if (this.#conns.length === 0 && this.#sweeper !== null) {
      clearInterval(this.#sweeper);
      this.#sweeper = null;
    }
  }

  /** No new work; each connection closes once what it carries is done. */
  close(): void {
    this.closed = true;
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    this.#sweeper = null;
    for (const c of this.#conns) c.close();
  }
}
