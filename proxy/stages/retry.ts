// Retries where safe, under a budget: connect failures for any method (nothing reached the
// upstream); 5xx answers (but 501), the statuses a route adds, resets and timeouts only for
// idempotent methods; a body is replayed only when it was buffered (Content-Length up to
// maxBufferedBodyBytes) or never sent.
import { RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import type { Clock } from '../../lib/util/index.ts';
import { isIdempotent, type ProxyRequest, type ProxyResponse, type Stage } from './types.ts';

const BUCKETS = 10;
const BUCKET_MS = 100;

/**
 * Retries may add at most `ratio` of the request rate over the last second, plus
 * `minPerSec` (Linkerd/Finagle-style budget) — so retries cannot multiply an outage.
 */
export class RetryBudget {
  ratio: number;
  minPerSec: number;
  #req = new Array<number>(BUCKETS).fill(0);
  #ret = new Array<number>(BUCKETS).fill(0);
  #slot = 0;
  #slotAt = 0;

  constructor(ratio: number, minPerSec: number) {
    this.ratio = ratio;
    this.minPerSec = minPerSec;
  }

  #advance(now: number): void {
    const slotAt = Math.floor(now / BUCKET_MS);
    if (slotAt === this.#slotAt) return;
    const steps = Math.min(BUCKETS, slotAt - this.#slotAt);
    for (let i = 0; i < steps; i++) {
      this.#slot = (this.#slot + 1) % BUCKETS;
      this.#req[this.#slot] = 0;
      this.#ret[this.#slot] = 0;
    }
    this.#slotAt = slotAt;
  }

  recordRequest(now: number): void {
    this.#advance(now);
    this.#req[this.#slot]!++;
  }

  /** Takes one retry from the budget when available. */
  tryRetry(now: number): boolean {
    this.#advance(now);
    let req = 0;
    let ret = 0;
    for (let i = 0; i < BUCKETS; i++) {
      req += this.#req[i]!;
      ret += this.#ret[i]!;
    }
    if (ret + 1 > this.minPerSec + this.ratio * req) return false;
    this.#ret[this.#slot]!++;
    return true;
  }
}

export type RetryReason =
  'connect' | 'reset' | 'timeout' | 'status_5xx' | 'status_route' | 'status_grpc';

/** Whether an idempotent request answered `status` is retried (`route`: its route's statuses). */
export function retriedStatus(status: number, route: readonly number[] | undefined): boolean {
  return (status >= 500 && status !== 501) || (route?.includes(status) ?? false);
}

/** The metrics reason of a retry on an answer's status. */
export function retryStatusReason(status: number): RetryReason {
  return status >= 500 ? 'status_5xx' : 'status_route';
}

export interface RetryStageOptions {
  clock: Clock;
  budget: RetryBudget;
  /** Retries this request may get at most. */
  maxRetries: (req: ProxyRequest) => number;
  maxBufferedBodyBytes: () => number;
  onRetry?: (reason: RetryReason, req: ProxyRequest) => void;
  onBudgetExhausted?: () => void;
}

const CONNECT_CODES = new Set([
  'REMORA_E_PROXY_CONNECT_FAILED',
  'REMORA_E_PROXY_CONNECT_TIMEOUT',
  'REMORA_E_PROXY_UPSTREAM_IDENTITY',
  'REMORA_E_PROXY_TLS_NEGOTIATION',
]);

function errorReason(e: RemoraError): RetryReason | null {
  if (CONNECT_CODES.has(e.code)) return 'connect';
  if (e.code === 'REMORA_E_PROXY_UPSTREAM_RESET') return 'reset';
  if (e.code === 'REMORA_E_PROXY_REQUEST_TIMEOUT') return 'timeout';
  return null;
}

export function createRetryStage(o: RetryStageOptions): Stage {
  return (next) => async (req) => {
    o.budget.recordRequest(o.clock.now());
    const max = o.maxRetries(req);
    if (max === 0) return next(req);
    const body = req.body;
    // buffer a small streaming body up front so it can be replayed
    if (
      body !== null &&
      !Buffer.isBuffer(body) &&
      req.bodyLength >= 0 &&
      req.bodyLength <= o.maxBufferedBodyBytes()
    ) {
      const got = await body.collect(req.bodyLength);
      if (got !== null) req.body = got.data;
    }
    const idempotent = isIdempotent(req.method);
    for (let attempt = 0; ; attempt++) {
      const b = req.body;
      const replayable = b === null || Buffer.isBuffer(b) || !b.attached;
      let res: ProxyResponse;
      try {
        res = await next(req);
      } catch (err) {
        const e = toRemoraError(err);
        const reason = errorReason(e);
        const b2 = req.body;
        const intact = b2 === null || Buffer.isBuffer(b2) || !b2.attached;
        const allowed =
          reason !== null &&
          attempt < max &&
          !req.ctx.aborted &&
          intact &&
          (reason === 'connect' || idempotent);
        if (!allowed) throw e;
        if (!o.budget.tryRetry(o.clock.now())) {
          o.onBudgetExhausted?.();
          throw e;
        }
        req.ctx.retries++;
        o.onRetry?.(reason, req);
        continue;
      }
      if (
        retriedStatus(res.status, req.ctx.route?.retryOn) &&
        idempotent &&
        attempt < max &&
        replayable &&
        !req.ctx.aborted
      ) {
        if (!o.budget.tryRetry(o.clock.now())) {
          o.onBudgetExhausted?.();
          return res;
        }
        if (res.body !== null && !Buffer.isBuffer(res.body))
          res.body.cancel(
            new RemoraError('REMORA_E_PROXY_UPSTREAM_RESET', 'response discarded for a retry'),
          );
        req.ctx.retries++;
        o.onRetry?.(retryStatusReason(res.status), req);
        continue;
      }
      return res;
    }
  };
}
