// A service-resolver's `LoadBalancer.HashPolicies`: what the ring_hash and maglev policies hash
// each call on (a header, a cookie, a query parameter or the caller's address), and the cookie
// made up for callers that send none.
import {
  hashCookieProblem,
  MAX_HASH_COOKIE_TTL_S,
  type HashCookie,
  type HashPolicy,
} from '../../lib/proxy-api/index.ts';
import { isLayer, resolverDuration } from './entry.ts';

const HASH_FIELDS = ['header', 'cookie', 'query_parameter'] as const;

/**
 * A cookie policy's `CookieConfig` as the proxies take it: with `Session` or a `TTL`, a caller
 * that sends no cookie gets one made up (Envoy's behaviour); without either, none is made, as in
 * Consul. A string when it cannot apply (the policy then hashes only cookies callers send).
 */
function hashCookieOf(v: unknown, name: string): HashCookie | null | string {
  if (!isLayer(v)) return 'must be an object';
  const session = v.Session === true;
  const ttlMs = resolverDuration(v.TTL);
  if (ttlMs === null) return `TTL ${JSON.stringify(v.TTL)} is not a duration`;
  if (session && ttlMs !== undefined) return 'a session cookie cannot have a TTL';
  if (!session && ttlMs === undefined) return null;
  const ttlSeconds = session ? 0 : Math.max(1, Math.round(ttlMs! / 1000));
  if (ttlSeconds > MAX_HASH_COOKIE_TTL_S) return `TTL ${JSON.stringify(v.TTL)} is above ten years`;
  const path = v.Path === undefined || v.Path === '' ? undefined : v.Path;
  if (path !== undefined && typeof path !== 'string') return 'Path must be a string';
  const problem = hashCookieProblem(name, path);
  if (problem !== null) return problem;
  return path === undefined ? { ttlSeconds } : { ttlSeconds, path };
}

/** A cached cookie's settings back in Consul's `CookieConfig` shape (see `hashCookieOf`). */
export function cookieConfigOf(c: Record<string, unknown>): Record<string, unknown> {
  const ttl = c.ttlSeconds;
  return {
    ...(ttl === 0 ? { Session: true } : { TTL: `${String(ttl)}s` }),
    ...(c.path !== undefined ? { Path: c.path } : {}),
  };
}

/**
 * `LoadBalancer.HashPolicies` as the proxies take them: each hashes on a named `Field` or on
 * `SourceIP`; one that cannot apply is reported and left out. A cookie is read when the caller
 * sends it, and with a `CookieConfig` made up when it does not.
 */
export function hashPoliciesOf(
  v: unknown,
  where: string,
  found: Map<string, string>,
  key: string,
): HashPolicy[] {
  if (!Array.isArray(v)) {
    found.set(
      `${key}/HashPolicies`,
      `${where}: LoadBalancer.HashPolicies must be a list; calls are spread at random`,
    );
    return [];
  }
  const out: HashPolicy[] = [];
  v.forEach((raw, i) => {
    const at = `${where}: LoadBalancer.HashPolicies[${i}]`;
    if (!isLayer(raw)) {
      found.set(`${key}/HashPolicies/${i}`, `${at} must be an object; it is ignored`);
      return;
    }
    const field = raw.Field;
    const name = raw.FieldValue;
    const ip = raw.SourceIP === true;
    const terminal = raw.Terminal === true ? { terminal: true } : {};
    if (ip && (field === undefined || field === '')) {
      out.push({ sourceIp: true, ...terminal });
    } else if (
      !ip &&
      (HASH_FIELDS as readonly unknown[]).includes(field) &&
      typeof name === 'string' &&
      name !== ''
    ) {
      const policy: HashPolicy = { field: field as HashPolicy['field'], fieldValue: name };
      const config = raw.CookieConfig;
      if (config !== undefined && config !== null) {
        const cookie =
          field === 'cookie' ? hashCookieOf(config, name) : 'it applies to Field cookie only';
        if (typeof cookie === 'string')
          found.set(
            `${key}/HashPolicies/${i}/CookieConfig`,
            `${at}.CookieConfig: ${cookie}; it is ignored, and no cookie is made up for callers without one`,
          );
        else if (cookie !== null) policy.cookie = cookie;
      }
      out.push({ ...policy, ...terminal });
    } else
      found.set(
        `${key}/HashPolicies/${i}`,
        `${at} must hash on a Field (header, cookie or query_parameter) with its FieldValue, or on SourceIP, one of them; it is ignored`,
      );
  });
  return out;
}
