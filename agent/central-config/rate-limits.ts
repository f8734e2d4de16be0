// A service-defaults entry's `RateLimits.InstanceLevel`: the requests per second (and burst) its
// proxies let in, for the whole instance and per route (by path).
import {
  MAX_RATE_LIMIT_ROUTES,
  RATE_LIMIT_MAX,
  type RateLimit,
  type RateLimitConfig,
} from '../../lib/proxy-api/index.ts';
import { isLayer, type Layer } from './entry.ts';

const RATE_PATHS = ['PathExact', 'PathPrefix', 'PathRegex'] as const;

/**
 * One bucket of `RateLimits.InstanceLevel` (the instance's, or a route's): `RequestsMaxBurst`
 * defaults to `RequestsPerSecond`, as in Consul. Null when unset; a string when it cannot apply.
 */
function rateLimitOf(v: Layer): RateLimit | null | string {
  const rps = v.RequestsPerSecond;
  const burst = v.RequestsMaxBurst;
  const unset = (x: unknown) => x === undefined || x === null || x === 0;
  if (unset(rps)) return unset(burst) ? null : 'sets RequestsMaxBurst without RequestsPerSecond';
  const whole = (x: unknown) =>
    Number.isInteger(x) && (x as number) >= 1 && (x as number) <= RATE_LIMIT_MAX;
  if (!whole(rps))
    return `RequestsPerSecond must be a whole number from 1 to ${RATE_LIMIT_MAX}, got ${JSON.stringify(rps)}`;
  if (!unset(burst) && !whole(burst))
    return `RequestsMaxBurst must be a whole number from 1 to ${RATE_LIMIT_MAX}, got ${JSON.stringify(burst)}`;
  return {
    requestsPerSecond: rps as number,
    burst: unset(burst) ? (rps as number) : (burst as number),
  };
}

/**
 * A service-defaults entry's `RateLimits.InstanceLevel` as the service's proxies apply it; each
 * part that cannot apply is passed to `report` (field, why) and left out. Null when it limits
 * nothing.
 */
export function rateLimitsOf(
  v: unknown,
  report: (what: string, why: string) => void,
): RateLimitConfig | null {
  if (v === undefined || v === null) return null;
  const il = isLayer(v) ? v.InstanceLevel : undefined;
  if (il === undefined || il === null) return null;
  if (!isLayer(il)) {
    report('', 'must be an object');
    return null;
  }
  const out: RateLimitConfig = {};
  const instance = rateLimitOf(il);
  if (typeof instance === 'string') report('', instance);
  else if (instance !== null) out.instance = instance;
  const routes = il.Routes ?? [];
  if (!Array.isArray(routes)) report('.Routes', 'must be a list');
  else
    routes.forEach((r: unknown, i) => {
      const at = `.Routes[${i}]`;
      if (!isLayer(r)) return report(at, 'must be an object');
      const given = RATE_PATHS.filter((k) => typeof r[k] === 'string' && r[k] !== '');
      if (given.length !== 1) return report(at, 'must set one of PathExact, PathPrefix, PathRegex');
      const k = given[0]!;
      const path = r[k] as string;
      if (k !== 'PathRegex' && !path.startsWith('/'))
        return report(`${at}.${k}`, `${JSON.stringify(path)} must start with /`);
      if (k === 'PathRegex') {
        try {
          new RegExp(path);
        } catch {
          return report(`${at}.PathRegex`, `${JSON.stringify(path)} is not a regular expression`);
        }
      }
      const limit = rateLimitOf(r);
      if (limit === null) return report(at, 'sets no RequestsPerSecond');
      if (typeof limit === 'string') return report(at, limit);
      const field =
        k === 'PathExact' ? 'pathExact' : k === 'PathPrefix' ? 'pathPrefix' : 'pathRegex';
      (out.routes ??= []).push({ [field]: path, ...limit });
      if (out.routes.length > MAX_RATE_LIMIT_ROUTES) {
        out.routes.pop();
        report(at, `is past the ${MAX_RATE_LIMIT_ROUTES} routes a proxy keeps`);
      }
    });
  return out.instance === undefined && out.routes === undefined ? null : out;
}

/** A cached `RateLimitConfig` back in service-defaults' `RateLimits` shape. */
export function consulRateLimits(c: RateLimitConfig): Layer {
  const back = (l: RateLimit) => ({
    RequestsPerSecond: l.requestsPerSecond,
    RequestsMaxBurst: l.burst,
  });
  return {
    InstanceLevel: {
      ...(c.instance ? back(c.instance) : {}),
      Routes: (c.routes ?? []).map((r) => ({
        ...(r.pathExact !== undefined ? { PathExact: r.pathExact } : {}),
        ...(r.pathPrefix !== undefined ? { PathPrefix: r.pathPrefix } : {}),
        ...(r.pathRegex !== undefined ? { PathRegex: r.pathRegex } : {}),
        ...back(r),
      })),
    },
  };
}
