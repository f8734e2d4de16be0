// Per-instance rate limits on the inbound (Consul's service-defaults `RateLimits.InstanceLevel`,
// docs/proxy.md "Rate limits"): token buckets, one for the instance and one per route, checked
// after the intentions (a denied call takes no token). Over the limit, a request is answered
// 429 REMORA_E_PROXY_RATE_LIMITED with `retry-after`, and never reaches the app.
import { RemoraError } from '../../lib/errors/index.ts';
import type { RateLimit, RateLimitConfig, RouteRateLimit } from '../../lib/proxy-api/index.ts';
import type { Stage } from './types.ts';

interface Bucket {
  readonly limit: RateLimit;
  /** What the limit is on, for messages and metrics: `instance` or the route's path. */
  readonly scope: string;
  tokens: number;
  /** When `tokens` was last brought up to date (ms). */
  at: number;
}

interface Route {
  readonly test: (path: string) => boolean;
  readonly bucket: Bucket;
}

function routeTest(r: RouteRateLimit): { test: (path: string) => boolean; scope: string } {
  if (r.pathExact !== undefined) {
    const p = r.pathExact;
    return { test: (path) => path === p, scope: p };
  }
  if (r.pathPrefix !== undefined) {
    const p = r.pathPrefix;
    return { test: (path) => path.startsWith(p), scope: `${p}*` };
  }
  const re = new RegExp(`^(?:${r.pathRegex!})$`);
  return { test: (path) => re.test(path), scope: `~${r.pathRegex!}` };
}

const bucket = (limit: RateLimit, scope: string, now: number): Bucket => ({
  limit,
  scope,
  tokens: limit.burst,
  at: now,
});

/** Takes a token; returns 0 when there was one, else the ms until there is. */
function take(b: Bucket, now: number): number {
  const { requestsPerSecond: rate, burst } = b.limit;
  b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
  b.at = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return ((1 - b.tokens) / rate) * 1000;
}

export interface RateLimiter {
  /** Null when the request may go on, else the error to answer it with (a token is taken). */
  admit(path: string, now: number): RemoraError | null;
}

/**
 * The limiter of a proxy's inbound, following `config()` (the snapshot's). Buckets are kept
 * while the limits stay the same, so a snapshot that changes something else lets no burst in.
 */
export function createRateLimiter(
  config: () => RateLimitConfig | undefined,
  service: () => string,
): RateLimiter {
  let seen: RateLimitConfig | undefined;
  let key = '';
  let instance: Bucket | null = null;
  let routes: Route[] = [];
  const sync = (now: number): void => {
    const c = config();
    if (c === seen) return;
    seen = c;
    const k = JSON.stringify(c ?? null);
    if (k === key) return;
    key = k;
    instance = c?.instance ? bucket(c.instance, 'instance', now) : null;
    routes = (c?.routes ?? []).map((r) => {
      const { test, scope } = routeTest(r);
      return { test, bucket: bucket(r, scope, now) };
    });
  };
  return {
    admit(target, now) {
      sync(now);
      if (instance === null && routes.length === 0) return null;
      const q = target.indexOf('?');
      const path = q === -1 ? target : target.slice(0, q);
      const b = routes.find((r) => r.test(path))?.bucket ?? instance;
      if (b === null) return null;
      const waitMs = take(b, now);
      if (waitMs === 0) return null;
      const retryAfterS = Math.max(1, Math.ceil(waitMs / 1000));
      const on = b.scope === 'instance' ? '' : ` on ${b.scope}`;
      const rps = b.limit.requestsPerSecond;
      return new RemoraError(
        'REMORA_E_PROXY_RATE_LIMITED',
        `${service()} admits ${rps} request${rps === 1 ? '' : 's'} per second${on} (burst ${b.limit.burst}; its service-defaults RateLimits); retry after ${retryAfterS} s`,
        { scope: b.scope, retryAfterS },
      );
    },
  };
}

/**
 * The HTTP/1.1 stage: a request over the limit is counted by `onLimited` and rejected with the
 * coded error, which the responder above answers (cancelling an unread body as for any error).
 */
export function createRateLimitStage(
  limiter: RateLimiter,
  now: () => number,
  onLimited: (scope: string) => void,
): Stage {
  return (next) => (req) => {
    const err = limiter.admit(req.target, now());
    if (err === null) return next(req);
    onLimited(String(err.details.scope));
    return Promise.reject(err);
  };
}
