// A destination's `service-router` entry: which of its requests (by path, method, header or query
// parameter) go to which service or subset, with the route's own path rewrite, timeout, retries
// and header changes. A route Remora cannot apply is reported and left out.
import { compileFullMatch, validateHttpMatch, type HttpMatch } from '../../lib/intentions/index.ts';
import type { HeaderModifiers, QueryMatch } from '../../lib/proxy-api/index.ts';
import type { ConfigEntry } from '../ports.ts';
import { isLayer, resolverDuration, type Layer } from './entry.ts';
import { headerModifiers } from './headers.ts';
import { TIMEOUT_LIMITS_MS } from './resolver.ts';
import { checkedSubsetName, subsetField } from './subsets.ts';

/** One route of a service-router: requests that meet `match` go to `service`. */
export interface RouteEntry {
  match: HttpMatch;
  /** Query parameter tests (Consul's `QueryParam`). */
  query?: QueryMatch[];
  service: string;
  /** The subset of `service` the requests go to (`ServiceSubset`), past its splitter. */
  subset?: string;
  /** Replaces the matched path prefix (or exact path) before the request is forwarded. */
  prefixRewrite?: string;
  /** The route's request timeout (`RequestTimeout`), over its service's own. */
  requestTimeoutMs?: number;
  /** The route's retries at most (`NumRetries`), over its service's own. */
  maxRetries?: number;
  /**
   * Answer statuses the route's idempotent requests are also retried on (`RetryOnStatusCodes`,
   * `RetryOn` "retriable-4xx"), besides Remora's own rules.
   */
  retryOn?: number[];
  /**
   * gRPC status codes its gRPC streams are retried on, whatever their method, when the answer is
   * trailers-only (`RetryOn` "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
   * "unavailable").
   */
  retryOnGrpc?: number[];
  /** Changes to its requests' headers (`RequestHeaders`). */
  requestHeaders?: HeaderModifiers;
  /** Changes to its answers' headers (`ResponseHeaders`). */
  responseHeaders?: HeaderModifiers;
}

/** The most retries a route may ask for (a proxy's `maxRetries` limit). */
const MAX_ROUTE_RETRIES = 10;

/** Route destination fields Remora does not implement: the route applies without them. */
const UNSUPPORTED_ROUTE_FIELDS = ['Namespace', 'Partition', 'IdleTimeout'] as const;

/**
 * Envoy's retry conditions a route's `RetryOn` may name, by what Remora does for them: the
 * statuses they add, or none when Remora's own rules already retry them (connect failures for
 * any method; 5xx answers, resets, refused streams and timeouts for idempotent ones).
 */
const RETRY_ON: Record<string, number[]> = {
  '5xx': [],
  'gateway-error': [],
  reset: [],
  'connect-failure': [],
  'refused-stream': [],
  'retriable-status-codes': [],
  'retriable-4xx': [409],
};

/** Envoy's gRPC retry conditions, by the gRPC status code each retries on. */
const GRPC_RETRY_ON: Record<string, number> = {
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  internal: 13,
  unavailable: 14,
};

/** The most statuses a route may retry on. */
const MAX_RETRY_STATUSES = 32;

/** The longest `RequestTimeout` a route may set: a resolver's bound. */
const MAX_REQUEST_TIMEOUT_MS = TIMEOUT_LIMITS_MS.requestTimeoutMs;

/**
 * A service-router entry's routes, each route Remora cannot apply left out and reported in
 * `found`: a match that does not validate, a `PrefixRewrite` without a path match. Destination
 * fields Remora does not implement are reported and the route applies without them.
 */
export function routerRoutes(e: ConfigEntry, found: Map<string, string>): RouteEntry[] | null {
  const where = `service-router of ${e.Name}`;
  const list = e.Routes;
  if (list === undefined || list === null) return null;
  if (!Array.isArray(list)) {
    found.set(`o/${e.Name}`, `${where}: Routes must be a list; the router is ignored`);
    return null;
  }
  const out: RouteEntry[] = [];
  for (const [i, item] of list.entries()) {
    const at = `${where}: Routes[${i}]`;
    const skip = (why: string) =>
      found.set(`o/${e.Name}/${i}`, `${at} ${why}; the route is ignored`);
    const m: unknown = isLayer(item) ? item.Match : undefined;
    const http: unknown = isLayer(m) ? m.HTTP : undefined;
    if (!isLayer(item) || (m != null && !isLayer(m)) || (http != null && !isLayer(http))) {
      skip('must be an object with Match.HTTP and Destination objects');
      continue;
    }
    const rawQuery = isLayer(http) ? http.QueryParam : undefined;
    const raw = isLayer(http) ? routeMatch(http) : {};
    let match: HttpMatch;
    let query: QueryMatch[] = [];
    try {
      if (rawQuery !== undefined && rawQuery !== null) query = queryMatches(rawQuery, 'Match.HTTP');
      match =
        Object.keys(raw).length === 0 ? { pathPrefix: '/' } : validateHttpMatch(raw, 'Match.HTTP');
    } catch (err) {
      skip(`has a bad match (${(err as Error).message})`);
      continue;
    }
    const d = item.Destination;
    const dest = isLayer(d) ? d : {};
    const service = typeof dest.Service === 'string' && dest.Service !== '' ? dest.Service : e.Name;
    const subset = subsetField(dest, `o/${e.Name}/${i}`, `${at}.Destination`, found);
    const route: RouteEntry = {
      match,
      ...(query.length > 0 ? { query } : {}),
      service,
      ...(subset ? { subset } : {}),
    };
    const rewrite = dest.PrefixRewrite;
    if (typeof rewrite === 'string' && rewrite !== '') {
      if (match.pathPrefix === undefined && match.pathExact === undefined) {
        skip('sets PrefixRewrite without a PathPrefix or PathExact match');
        continue;
      }
      route.prefixRewrite = rewrite;
    }
    const timeout = resolverDuration(dest.RequestTimeout);
    if (timeout === null || (timeout !== undefined && timeout > MAX_REQUEST_TIMEOUT_MS))
      found.set(
        `o/${e.Name}/${i}/RequestTimeout`,
        `${at}.Destination.RequestTimeout ${JSON.stringify(dest.RequestTimeout)} is not a duration from 1ms to ${MAX_REQUEST_TIMEOUT_MS / 1000}s; the route keeps ${service}'s own`,
      );
    else if (timeout !== undefined) route.requestTimeoutMs = timeout;
    const retries = dest.NumRetries;
    if (retries !== undefined && retries !== null && retries !== 0) {
      if (
        Number.isInteger(retries) &&
        (retries as number) > 0 &&
        (retries as number) <= MAX_ROUTE_RETRIES
      )
        route.maxRetries = retries as number;
      else
        found.set(
          `o/${e.Name}/${i}/NumRetries`,
          `${at}.Destination.NumRetries ${JSON.stringify(retries)} is not a whole number from 0 to ${MAX_ROUTE_RETRIES}; the route keeps ${service}'s own`,
        );
    }
    const retryOn = routeRetryOn(dest, `o/${e.Name}/${i}`, `${at}.Destination`, found);
    if (retryOn.statuses.length > 0) route.retryOn = retryOn.statuses;
    if (retryOn.grpc.length > 0) route.retryOnGrpc = retryOn.grpc;
    for (const field of ['RequestHeaders', 'ResponseHeaders'] as const) {
      if (dest[field] === undefined || dest[field] === null) continue;
      try {
        const m = headerModifiers(dest[field], `${at}.Destination.${field}`);
        if (m) route[field === 'RequestHeaders' ? 'requestHeaders' : 'responseHeaders'] = m;
      } catch (err) {
        found.set(
          `o/${e.Name}/${i}/${field}`,
          `${(err as Error).message}; the route applies without these header changes`,
        );
      }
    }
    for (const field of UNSUPPORTED_ROUTE_FIELDS) {
      const v = dest[field];
      if (v === undefined || v === null || v === '' || v === 0 || v === false || v === 'default')
        continue;
      if ((Array.isArray(v) && v.length === 0) || (isLayer(v) && Object.keys(v).length === 0))
        continue;
      found.set(
        `o/${e.Name}/${i}/${field}`,
        `${at}.Destination.${field} is not implemented by Remora's agents; it is ignored, and the route sends its requests to every healthy instance of ${service}`,
      );
    }
    out.push(route);
  }
  return out.length > 0 ? out : null;
}

/** An HTTP status a route may retry on. */
function isStatus(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 100 && (v as number) <= 599;
}

/**
 * The statuses a route destination's `RetryOnStatusCodes` and `RetryOn` add to Remora's own retry
 * rules, sorted; what Remora cannot apply is reported (`RetryOnConnectFailure` is Remora's rule
 * already).
 */
function routeRetryOn(
  dest: Layer,
  key: string,
  where: string,
  found: Map<string, string>,
): { statuses: number[]; grpc: number[] } {
  const out = new Set<number>();
  const grpc = new Set<number>();
  const codes = dest.RetryOnStatusCodes;
  if (codes !== undefined && codes !== null) {
    if (Array.isArray(codes) && codes.every(isStatus) && codes.length <= MAX_RETRY_STATUSES)
      for (const c of codes) out.add(c);
    else
      found.set(
        `${key}/RetryOnStatusCodes`,
        `${where}.RetryOnStatusCodes ${JSON.stringify(codes)} is not a list of at most ${MAX_RETRY_STATUSES} HTTP statuses (100–599); the route retries by Remora's own rules`,
      );
  }
  const on = dest.RetryOn;
  if (on !== undefined && on !== null) {
    const list: unknown[] = Array.isArray(on) ? on : [on];
    const known = (c: unknown): c is string => typeof c === 'string' && Object.hasOwn(RETRY_ON, c);
    const isGrpc = (c: unknown): c is string =>
      typeof c === 'string' && Object.hasOwn(GRPC_RETRY_ON, c);
    for (const c of list.filter(known)) for (const st of RETRY_ON[c]!) out.add(st);
    for (const c of list.filter(isGrpc)) grpc.add(GRPC_RETRY_ON[c]!);
    const unknown = list.filter((c) => !known(c) && !isGrpc(c));
    if (unknown.length > 0)
      found.set(
        `${key}/RetryOn`,
        `${where}.RetryOn ${unknown.map((c) => JSON.stringify(c)).join(', ')} is not a condition Remora's proxies implement (${[...Object.keys(RETRY_ON), ...Object.keys(GRPC_RETRY_ON)].join(', ')}); it is ignored`,
      );
  }
  const sorted = (x: Set<number>) => [...x].sort((a, b) => a - b);
  return { statuses: sorted(out), grpc: sorted(grpc) };
}

/** Consul's header match fields, by the name the intentions' match language gives them. */
const HEADER_FIELDS = [
  ['Name', 'name'],
  ['Present', 'present'],
  ['Exact', 'exact'],
  ['Prefix', 'prefix'],
  ['Suffix', 'suffix'],
  ['Regex', 'regex'],
  ['Invert', 'invert'],
] as const;

/** A route's `Match.HTTP` in the intentions' match language (unchecked); absent keys left out. */
function routeMatch(http: Layer): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  for (const [from, to] of [
    ['PathExact', 'pathExact'],
    ['PathPrefix', 'pathPrefix'],
    ['PathRegex', 'pathRegex'],
  ] as const)
    if (http[from] !== undefined && http[from] !== null && http[from] !== '') m[to] = http[from];
  const methods = http.Methods;
  if (Array.isArray(methods) && methods.length > 0)
    m.methods = methods.map((x: unknown) => (typeof x === 'string' ? x.toUpperCase() : x));
  const header = http.Header;
  if (Array.isArray(header) && header.length > 0)
    m.header = header.map((h: unknown) => {
      if (!isLayer(h)) return h;
      const out: Record<string, unknown> = {};
      for (const [from, to] of HEADER_FIELDS)
        if (h[from] !== undefined && h[from] !== null && h[from] !== '' && h[from] !== false)
          out[to] = h[from];
      return out;
    });
  return m;
}

/**
 * Checked query parameter tests, from Consul's spelling (`Name`, `Present`, `Exact`, `Regex`)
 * or from the cache's; throws naming `where` and the problem.
 */
function queryMatches(v: unknown, where: string): QueryMatch[] {
  if (!Array.isArray(v)) throw new Error(`${where}: QueryParam must be a list`);
  return v.map((x: unknown, i) => {
    const at = `${where}.QueryParam[${i}]`;
    if (!isLayer(x)) throw new Error(`${at} must be an object`);
    const get = (k: string) => x[k] ?? x[k.toLowerCase()];
    const name = get('Name');
    if (typeof name !== 'string' || name === '') throw new Error(`${at} needs a Name`);
    const q: QueryMatch = { name };
    const present = get('Present');
    const exact = get('Exact');
    const regex = get('Regex');
    // Consul's Present is "matches when present"; false only means it is not set
    if (present === true) q.present = true;
    if (typeof exact === 'string' && exact !== '') q.exact = exact;
    if (typeof regex === 'string' && regex !== '') {
      compileFullMatch(regex, at);
      q.regex = regex;
    }
    if (Object.keys(q).length > 2)
      throw new Error(`${at} should only contain one of Present, Exact, or Regex`);
    return q;
  });
}

/** Keeps only well-formed routes (a cache file is trusted no more than Consul). */
export function checkedRoutes(v: unknown): RouteEntry[] | null {
  if (!Array.isArray(v) || v.length === 0) return null;
  try {
    return v.map((r: unknown, i): RouteEntry => {
      if (!isLayer(r) || typeof r.service !== 'string' || r.service === '') throw new Error('bad');
      const out: RouteEntry = {
        match: validateHttpMatch(r.match, `route ${i}`),
        service: r.service,
      };
      if (r.query !== undefined) out.query = queryMatches(r.query, `route ${i}`);
      if (r.subset !== undefined) out.subset = checkedSubsetName(r.subset);
      const ms = r.requestTimeoutMs;
      if (Number.isInteger(ms) && (ms as number) >= 1 && (ms as number) <= MAX_REQUEST_TIMEOUT_MS)
        out.requestTimeoutMs = ms as number;
      const n = r.maxRetries;
      if (Number.isInteger(n) && (n as number) >= 0 && (n as number) <= MAX_ROUTE_RETRIES)
        out.maxRetries = n as number;
      if (
        Array.isArray(r.retryOn) &&
        r.retryOn.length <= MAX_RETRY_STATUSES &&
        r.retryOn.every(isStatus)
      )
        out.retryOn = r.retryOn;
      if (
        Array.isArray(r.retryOnGrpc) &&
        r.retryOnGrpc.every((c) => Object.values(GRPC_RETRY_ON).includes(c as number))
      )
        out.retryOnGrpc = r.retryOnGrpc as number[];
      if (typeof r.prefixRewrite === 'string') out.prefixRewrite = r.prefixRewrite;
      for (const k of ['requestHeaders', 'responseHeaders'] as const) {
        const m = r[k] === undefined ? null : headerModifiers(r[k], `route ${i}`);
        if (m) out[k] = m;
      }
      return out;
    });
  } catch {
    return null;
  }
}
