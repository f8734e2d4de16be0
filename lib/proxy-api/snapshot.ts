// Strict decoder of a ProxySnapshot: every field is checked (types, ranges, unknown keys, PEM
// material parses, the key matches the certificate, the certificate carries the instance's SPIFFE
// ID) so that a proxy can refuse a bad snapshot as a whole and keep serving the last good one.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { isIP } from 'node:net';
import { RemoraError } from '../errors/index.ts';
import { parseSpiffeId, urisFromSubjectAltName } from '../identity/index.ts';
import { headerNameProblem, headerValueProblem } from './header-modifiers.ts';
import { INBOUND_LIMITS } from './defaults.ts';
import { compileAccessFormat } from '../access-log/format.ts';
import { tlsParamsProblem, type MeshTlsConfig, type TlsParams } from './mesh-tls.ts';
import { ingressTlsProblem, type IngressTlsParams } from './ingress-tls.ts';
import { validateIntentionJwt } from '../intentions/index.ts';
import { jwkProblem } from '../jwt/index.ts';
import type { JwtLocation, JwtProvider } from '../jwt/types.ts';
import type { JsonWebKey } from 'node:crypto';
import type {
  HeaderMatch,
  HttpMatch,
  Intention,
  IntentionJwt,
  IntentionPermission,
  IntentionsSnapshot,
} from '../intentions/types.ts';
import { MUTUAL_TLS_MODES } from './types.ts';
import type {
  AccessLogConfig,
  Endpoint,
  ExposePath,
  HashCookie,
  HashPolicy,
  HeaderModifiers,
  HttpRoute,
  InboundConfig,
  IngressConfig,
  IngressListener,
  IngressService,
  InstanceIdentity,
  OriginationTls,
  TerminatingConfig,
  TerminatingService,
  TerminatingSubset,
  LoadBalancerPolicy,
  MetricsListener,
  Protocol,
  ProxySnapshot,
  QueryMatch,
  RateLimit,
  RateLimitConfig,
  RouteRateLimit,
  ResilienceConfig,
  UpstreamTarget,
  TlsMaterial,
  TracingConfig,
  TrafficSplit,
  TransparentConfig,
  UpstreamConfig,
} from './types.ts';

export const PROTOCOLS: readonly Protocol[] = ['tcp', 'http', 'http2', 'grpc'];
export const LOAD_BALANCER_POLICIES: readonly LoadBalancerPolicy[] = [
  'round_robin',
  'least_request',
  'peak_ewma',
  'ring_hash',
  'maglev',
];

type Obj = Record<string, unknown>;

function fail(path: string, message: string, value?: unknown): never {
  const shown = value === undefined ? '' : `, got ${JSON.stringify(value)?.slice(0, 80)}`;
  throw new RemoraError(
    'REMORA_E_PROXY_SNAPSHOT_INVALID',
    `snapshot field \`${path}\` ${message}${shown}; the snapshot was refused and the last good one keeps serving`,
    { field: path },
  );
}

function obj(v: unknown, path: string, allowed: readonly string[]): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(path, 'must be an object', v);
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) fail(`${path}.${k}`, 'is not a known field');
  }
  return v as Obj;
}

function str(o: Obj, key: string, path: string, opts: { empty?: boolean } = {}): string {
  const v = o[key];
  if (typeof v !== 'string') fail(`${path}.${key}`, 'must be a string', v);
  if (!opts.empty && v === '') fail(`${path}.${key}`, 'must not be empty');
  return v;
}

function optStr(o: Obj, key: string, path: string): string | undefined {
  return o[key] === undefined ? undefined : str(o, key, path, { empty: true });
}

function num(
  o: Obj,
  key: string,
  path: string,
  range: { min?: number; max?: number; int?: boolean } = {},
): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${path}.${key}`, 'must be a number', v);
  if (range.int && !Number.isSafeInteger(v)) fail(`${path}.${key}`, 'must be an integer', v);
  if (range.min !== undefined && v < range.min) fail(`${path}.${key}`, `must be ≥ ${range.min}`, v);
  if (range.max !== undefined && v > range.max) fail(`${path}.${key}`, `must be ≤ ${range.max}`, v);
  return v;
}

function bool(o: Obj, key: string, path: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') fail(`${path}.${key}`, 'must be a boolean', v);
  return v;
}

function oneOf<T extends string>(o: Obj, key: string, path: string, values: readonly T[]): T {
  const v = o[key];
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v))
    fail(`${path}.${key}`, `must be one of ${values.join(', ')}`, v);
  return v as T;
}

function arr(o: Obj, key: string, path: string): unknown[] {
  const v = o[key];
  if (!Array.isArray(v)) fail(`${path}.${key}`, 'must be an array', v);
  return v;
}

const port = { min: 0, max: 65535, int: true };
const nat = { min: 0, int: true };

function spiffe(o: Obj, key: string, path: string): string {
  const v = str(o, key, path);
  try {
    parseSpiffeId(v);
  } catch {
    fail(`${path}.${key}`, 'must be a workload SPIFFE ID', v);
  }
  return v;
}

function decodeInstance(v: unknown): InstanceIdentity {
  const p = 'instance';
  const o = obj(v, p, ['id', 'service', 'datacenter', 'node', 'trustDomain', 'spiffeId']);
  const inst: InstanceIdentity = {
    id: str(o, 'id', p),
    service: str(o, 'service', p),
    datacenter: str(o, 'datacenter', p),
    node: str(o, 'node', p),
    trustDomain: str(o, 'trustDomain', p),
    spiffeId: spiffe(o, 'spiffeId', p),
  };
  const id = parseSpiffeId(inst.spiffeId);
  if (id.service !== inst.service || id.trustDomain !== inst.trustDomain)
    fail(
      `${p}.spiffeId`,
      `must name service ${inst.service} in trust domain ${inst.trustDomain}`,
      inst.spiffeId,
    );
  return inst;
}

function decodeInbound(v: unknown): InboundConfig {
  const p = 'inbound';
  const o = obj(v, p, [
    'bindAddress',
    'bindPort',
    'localAppAddress',
    'localAppPort',
    'protocol',
    ...INBOUND_KEYS,
    'rateLimit',
    'mutualTlsMode',
    'sanitizeClientCert',
  ]);
  const ib: InboundConfig = {
    bindAddress: str(o, 'bindAddress', p),
    bindPort: num(o, 'bindPort', p, port),
    localAppAddress: str(o, 'localAppAddress', p),
    localAppPort: num(o, 'localAppPort', p, { ...port, min: 1 }),
    protocol: oneOf(o, 'protocol', p, PROTOCOLS),
  };
  for (const key of INBOUND_KEYS) {
    if (o[key] === undefined) continue;
    const min = key === 'localConnectTimeoutMs' ? 1 : 0;
    ib[key] = num(o, key, p, { min, max: INBOUND_LIMITS[key], int: true });
  }
  if (o.rateLimit !== undefined) ib.rateLimit = decodeRateLimits(o.rateLimit, `${p}.rateLimit`);
  if (o.mutualTlsMode !== undefined)
    ib.mutualTlsMode = oneOf(o, 'mutualTlsMode', p, MUTUAL_TLS_MODES);
  if (o.sanitizeClientCert !== undefined) ib.sanitizeClientCert = bool(o, 'sanitizeClientCert', p);
  return ib;
}

/** Most requests per second a bucket may admit, and most it may hold. */
export const RATE_LIMIT_MAX = 1_000_000;
/** Most routes with a bucket of their own. */
export const MAX_RATE_LIMIT_ROUTES = 64;

function decodeRateLimit<T extends RateLimit>(o: Obj, p: string, into: T): T {
  into.requestsPerSecond = num(o, 'requestsPerSecond', p, { min: 0, max: RATE_LIMIT_MAX });
  if (into.requestsPerSecond === 0) fail(`${p}.requestsPerSecond`, 'must be above 0', 0);
  into.burst = num(o, 'burst', p, { min: 1, max: RATE_LIMIT_MAX, int: true });
  return into;
}

function decodeRateLimits(v: unknown, p: string): RateLimitConfig {
  const o = obj(v, p, ['instance', 'routes']);
  const out: RateLimitConfig = {};
  if (o.instance !== undefined) {
    const at = `${p}.instance`;
    out.instance = decodeRateLimit(obj(o.instance, at, ['requestsPerSecond', 'burst']), at, {
      requestsPerSecond: 0,
      burst: 0,
    });
  }
  if (o.routes !== undefined) {
    const routes = arr(o, 'routes', p);
    if (routes.length > MAX_RATE_LIMIT_ROUTES)
      fail(`${p}.routes`, `must hold at most ${MAX_RATE_LIMIT_ROUTES} routes`, routes.length);
    out.routes = routes.map((r, i) => {
      const at = `${p}.routes[${i}]`;
      const ro = obj(r, at, ['pathExact', 'pathPrefix', 'pathRegex', 'requestsPerSecond', 'burst']);
      const route = decodeRateLimit<RouteRateLimit>(ro, at, { requestsPerSecond: 0, burst: 0 });
      const given = (['pathExact', 'pathPrefix', 'pathRegex'] as const).filter(
        (k) => ro[k] !== undefined,
      );
      if (given.length !== 1) fail(at, 'must match on one of pathExact, pathPrefix, pathRegex', r);
      const k = given[0]!;
      const path = str(ro, k, at);
      if (k === 'pathRegex') checkRegex(path, `${at}.pathRegex`);
      else if (!path.startsWith('/')) fail(`${at}.${k}`, 'must start with /', path);
      route[k] = path;
      return route;
    });
  }
  return out;
}

const INBOUND_KEYS = Object.keys(INBOUND_LIMITS) as Array<keyof typeof INBOUND_LIMITS>;

function decodeResilience(v: unknown, p: string): ResilienceConfig {
  const o = obj(v, p, [
    'connectTimeoutMs',
    'requestTimeoutMs',
    'idleTimeoutMs',
    'maxRetries',
    'retryBudgetRatio',
    'retryBudgetMinPerSec',
    'maxBufferedBodyBytes',
    'outlier',
    'circuitBreaker',
  ]);
  const ol = obj(o.outlier, `${p}.outlier`, [
    'consecutiveFailures',
    'baseEjectionMs',
    'maxEjectionPercent',
  ]);
  const cb = obj(o.circuitBreaker, `${p}.circuitBreaker`, [
    'maxConnections',
    'maxPendingRequests',
    'maxRequests',
  ]);
  return {
    connectTimeoutMs: num(o, 'connectTimeoutMs', p, { min: 1, int: true }),
    requestTimeoutMs: num(o, 'requestTimeoutMs', p, nat),
    idleTimeoutMs: num(o, 'idleTimeoutMs', p, nat),
    maxRetries: num(o, 'maxRetries', p, { min: 0, max: 10, int: true }),
    retryBudgetRatio: num(o, 'retryBudgetRatio', p, { min: 0, max: 1 }),
    retryBudgetMinPerSec: num(o, 'retryBudgetMinPerSec', p, { min: 0 }),
    maxBufferedBodyBytes: num(o, 'maxBufferedBodyBytes', p, nat),
    outlier: {
      consecutiveFailures: num(ol, 'consecutiveFailures', `${p}.outlier`, { min: 1, int: true }),
      baseEjectionMs: num(ol, 'baseEjectionMs', `${p}.outlier`, nat),
      maxEjectionPercent: num(ol, 'maxEjectionPercent', `${p}.outlier`, { min: 0, max: 100 }),
    },
    circuitBreaker: {
      maxConnections: num(cb, 'maxConnections', `${p}.circuitBreaker`, { min: 1, int: true }),
      maxPendingRequests: num(cb, 'maxPendingRequests', `${p}.circuitBreaker`, nat),
      maxRequests: num(cb, 'maxRequests', `${p}.circuitBreaker`, { min: 1, int: true }),
    },
  };
}

function decodeEndpoint(v: unknown, p: string): Endpoint {
  const o = obj(v, p, ['id', 'address', 'port', 'weight', 'node', 'sni']);
  const sni = o.sni === undefined ? undefined : str(o, 'sni', p);
  return {
    id: str(o, 'id', p),
    address: str(o, 'address', p),
    port: num(o, 'port', p, { ...port, min: 1 }),
    weight: num(o, 'weight', p, { min: 1, max: 1_000_000, int: true }),
    node: str(o, 'node', p, { empty: true }),
    ...(sni !== undefined ? { sni } : {}),
  };
}

/** The fields an upstream and a split target share (`failover` is checked with the targets). */
function decodeTarget(o: Obj, p: string): UpstreamTarget {
  const t: UpstreamTarget = {
    destinationName: str(o, 'destinationName', p),
    destinationSpiffeId: spiffe(o, 'destinationSpiffeId', p),
    loadBalancer: oneOf(o, 'loadBalancer', p, LOAD_BALANCER_POLICIES),
    resilience: decodeResilience(o.resilience, `${p}.resilience`),
    endpoints: arr(o, 'endpoints', p).map((e, i) => decodeEndpoint(e, `${p}.endpoints[${i}]`)),
  };
  if (o.hashPolicies !== undefined) {
    if (t.loadBalancer !== 'ring_hash' && t.loadBalancer !== 'maglev')
      fail(`${p}.hashPolicies`, 'are only for ring_hash or maglev', t.loadBalancer);
    t.hashPolicies = arr(o, 'hashPolicies', p).map((h, i) =>
      decodeHashPolicy(h, `${p}.hashPolicies[${i}]`),
    );
  }
  if (o.failover !== undefined)
    t.failover = arr(o, 'failover', p).map((v, i) => {
      if (typeof v !== 'string' || v === '')
        fail(`${p}.failover[${i}]`, 'must be a target name', v);
      return v;
    });
  return t;
}

export const HASH_FIELDS = ['header', 'cookie', 'query_parameter'] as const;

/** A hash policy: a named request field, or the source address, not both. */
/** Longest lifetime of a cookie consistent hashing sets: ten years, in seconds. */
export const MAX_HASH_COOKIE_TTL_S = 315_360_000;

/**
 * Why a cookie name or `Path` cannot go into the `Set-Cookie` line consistent hashing writes
 * (null: it can): either would otherwise let a config entry inject attributes or headers.
 */
export function hashCookieProblem(name: string, path: string | undefined): string | null {
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name))
    return `the cookie name ${JSON.stringify(name)} is not a token (RFC 6265)`;
  if (path !== undefined && !/^\/[\x21-\x3a\x3c-\x7e]*$/.test(path))
    return `the cookie Path ${JSON.stringify(path)} must start with / and hold no ";", space or control character`;
  return null;
}

function decodeHashCookie(v: unknown, p: string, name: string): HashCookie {
  const o = obj(v, p, ['ttlSeconds', 'path']);
  const c: HashCookie = {
    ttlSeconds: num(o, 'ttlSeconds', p, { min: 0, max: MAX_HASH_COOKIE_TTL_S, int: true }),
  };
  const path = optStr(o, 'path', p);
  if (path !== undefined) c.path = path;
  const problem = hashCookieProblem(name, path);
  if (problem !== null) fail(p, problem, v);
  return c;
}

function decodeHashPolicy(v: unknown, p: string): HashPolicy {
  const o = obj(v, p, ['field', 'fieldValue', 'sourceIp', 'terminal', 'cookie']);
  const h: HashPolicy = {};
  if (o.field !== undefined) {
    h.field = oneOf(o, 'field', p, HASH_FIELDS);
    h.fieldValue = str(o, 'fieldValue', p);
  } else if (o.fieldValue !== undefined) fail(`${p}.fieldValue`, 'needs a field', o.fieldValue);
  if (o.sourceIp !== undefined) h.sourceIp = bool(o, 'sourceIp', p);
  if ((h.field !== undefined) === (h.sourceIp === true))
    fail(p, 'must hash on a field or on sourceIp, one of them', v);
  if (o.terminal !== undefined) h.terminal = bool(o, 'terminal', p);
  if (o.cookie !== undefined) {
    if (h.field !== 'cookie') fail(`${p}.cookie`, 'is only for a cookie field', o.cookie);
    h.cookie = decodeHashCookie(o.cookie, `${p}.cookie`, h.fieldValue!);
  }
  return h;
}

const TARGET_FIELDS = [
  'destinationName',
  'destinationSpiffeId',
  'loadBalancer',
  'hashPolicies',
  'resilience',
  'endpoints',
  'failover',
] as const;

/** Failover targets one upstream or target may list, at most. */
const MAX_FAILOVER = 16;

/**
 * Each `failover` list of `u` and its targets names other targets it knows, each once (the
 * upstream's own name stands for the upstream).
 */
function checkFailover(u: UpstreamConfig, p: string): void {
  const names = new Set([u.destinationName, ...(u.targets ?? []).map((t) => t.destinationName)]);
  const lists: Array<[string, UpstreamTarget]> = [
    [p, u],
    ...(u.targets ?? []).map((t, i): [string, UpstreamTarget] => [`${p}.targets[${i}]`, t]),
  ];
  for (const [at, t] of lists) {
    const list = t.failover;
    if (list === undefined) continue;
    if (list.length > MAX_FAILOVER)
      fail(`${at}.failover`, `must hold at most ${MAX_FAILOVER} targets`, list.length);
    list.forEach((n, i) => {
      if (!names.has(n) || n === t.destinationName)
        fail(`${at}.failover[${i}]`, 'must name another target of the upstream', n);
      if (list.indexOf(n) !== i) fail(`${at}.failover[${i}]`, 'names a target twice', n);
    });
  }
}

function decodeUpstream(v: unknown, p: string): UpstreamConfig {
  const o = obj(v, p, [
    ...TARGET_FIELDS,
    'localBindAddress',
    'localBindPort',
    'protocol',
    'routes',
    'splits',
    'targets',
    'listener',
  ]);
  const t = decodeTarget(o, p);
  const u: UpstreamConfig = {
    destinationName: t.destinationName,
    destinationSpiffeId: t.destinationSpiffeId,
    localBindAddress: str(o, 'localBindAddress', p),
    localBindPort: num(o, 'localBindPort', p, port),
    protocol: oneOf(o, 'protocol', p, PROTOCOLS),
    loadBalancer: t.loadBalancer,
    resilience: t.resilience,
    endpoints: t.endpoints,
  };
  if (t.hashPolicies !== undefined) u.hashPolicies = t.hashPolicies;
  if (t.failover !== undefined) u.failover = t.failover;
  if (o.listener !== undefined) {
    if (o.listener !== false) fail(`${p}.listener`, 'must be false when present', o.listener);
    u.listener = false;
  }
  if (o.routes !== undefined || o.splits !== undefined || o.targets !== undefined)
    decodeTraffic(o, p, u);
  checkFailover(u, p);
  return u;
}

/** Weights may be given to two decimals, as Consul's are; their sum may be off by rounding. */
const SPLIT_SUM_TOLERANCE = 0.01;

/** Statuses one route may retry on, at most. */
const MAX_RETRY_STATUSES = 32;

/** Routes one upstream may carry, at most. */
const MAX_ROUTES = 256;

/** A list of shares: services `names` knows, weights from 0 to 100 adding up to 100. */
function decodeShares(v: unknown, p: string, names: ReadonlySet<string>): TrafficSplit[] {
  if (!Array.isArray(v) || v.length === 0) fail(p, 'must be a non-empty array', v);
  const splits = v.map((x, i): TrafficSplit => {
    const sp = `${p}[${i}]`;
    const s = obj(x, sp, ['service', 'weight', 'requestHeaders', 'responseHeaders']);
    const service = str(s, 'service', sp);
    if (!names.has(service))
      fail(`${sp}.service`, 'must be destinationName or a targets service', service);
    const split: TrafficSplit = { service, weight: num(s, 'weight', sp, { min: 0, max: 100 }) };
    for (const k of ['requestHeaders', 'responseHeaders'] as const)
      if (s[k] !== undefined) split[k] = decodeHeaderModifiers(s[k], `${sp}.${k}`);
    return split;
  });
  const sum = splits.reduce((n, x) => n + x.weight, 0);
  if (Math.abs(sum - 100) > SPLIT_SUM_TOLERANCE) fail(p, 'weights must add up to 100', sum);
  return splits;
}

/** An upstream's routes and traffic split (`routes`, `splits`, `targets`), checked together. */
function decodeTraffic(o: Obj, p: string, u: UpstreamConfig): void {
  // a tcp upstream may have targets to fail over to, but no request to route or split
  if (u.protocol === 'tcp' && (o.routes !== undefined || o.splits !== undefined))
    fail(
      `${p}.${o.routes !== undefined ? 'routes' : 'splits'}`,
      'needs protocol http, http2 or grpc, not tcp',
    );
  const targets =
    o.targets === undefined
      ? []
      : arr(o, 'targets', p).map((v, i) => {
          const tp = `${p}.targets[${i}]`;
          return decodeTarget(obj(v, tp, TARGET_FIELDS), tp);
        });
  const names = new Set([u.destinationName]);
  targets.forEach((t, i) => {
    if (names.has(t.destinationName))
      fail(`${p}.targets[${i}].destinationName`, 'names a service twice', t.destinationName);
    names.add(t.destinationName);
  });
  if (o.splits !== undefined) u.splits = decodeShares(o.splits, `${p}.splits`, names);
  if (o.routes !== undefined) {
    const list = arr(o, 'routes', p);
    if (list.length > MAX_ROUTES) fail(`${p}.routes`, `must hold at most ${MAX_ROUTES} routes`);
    u.routes = list.map((v, i): HttpRoute => {
      const rp = `${p}.routes[${i}]`;
      const r = obj(v, rp, [
        'match',
        'query',
        'splits',
        'prefixRewrite',
        'requestTimeoutMs',
        'maxRetries',
        'retryOn',
        'retryOnGrpc',
        'requestHeaders',
        'responseHeaders',
      ]);
      const route: HttpRoute = {
        match: decodeHttpMatch(r.match, `${rp}.match`),
        splits: decodeShares(r.splits, `${rp}.splits`, names),
      };
      if (r.query !== undefined)
        route.query = arr(r, 'query', rp).map((q, j) => decodeQueryMatch(q, `${rp}.query[${j}]`));
      if (r.requestTimeoutMs !== undefined)
        route.requestTimeoutMs = num(r, 'requestTimeoutMs', rp, { min: 1, int: true });
      if (r.maxRetries !== undefined)
        route.maxRetries = num(r, 'maxRetries', rp, { min: 0, max: 10, int: true });
      if (r.retryOn !== undefined) {
        const list = arr(r, 'retryOn', rp);
        if (list.length > MAX_RETRY_STATUSES)
          fail(`${rp}.retryOn`, `must hold at most ${MAX_RETRY_STATUSES} statuses`);
        route.retryOn = list.map((v, j): number => {
          if (!Number.isInteger(v) || (v as number) < 100 || (v as number) > 599)
            fail(`${rp}.retryOn[${j}]`, 'must be an HTTP status (100–599)', v);
          return v as number;
        });
      }
      if (r.retryOnGrpc !== undefined)
        route.retryOnGrpc = arr(r, 'retryOnGrpc', rp).map((v, j): number => {
          if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 16)
            fail(`${rp}.retryOnGrpc[${j}]`, 'must be a gRPC status code other than OK (1–16)', v);
          return v as number;
        });
      for (const k of ['requestHeaders', 'responseHeaders'] as const)
        if (r[k] !== undefined) route[k] = decodeHeaderModifiers(r[k], `${rp}.${k}`);
      const rewrite = optStr(r, 'prefixRewrite', rp);
      if (rewrite !== undefined) {
        if (route.match.pathPrefix === undefined && route.match.pathExact === undefined)
          fail(`${rp}.prefixRewrite`, 'needs match.pathPrefix or match.pathExact');
        route.prefixRewrite = rewrite;
      }
      return route;
    });
  }
  u.targets = targets;
}

function parseCert(pem: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    fail(path, `is not a PEM certificate (${(err as Error).message})`);
  }
}

function decodeTls(v: unknown, instance: InstanceIdentity): TlsMaterial {
  const p = 'tls';
  const o = obj(v, p, ['certPem', 'keyPem', 'rootsPem']);
  const certPem = str(o, 'certPem', p);
  const keyPem = str(o, 'keyPem', p);
  const rootsPem = arr(o, 'rootsPem', p).map((r, i) => {
    if (typeof r !== 'string' || r === '') fail(`${p}.rootsPem[${i}]`, 'must be a PEM string');
    if (!parseCert(r, `${p}.rootsPem[${i}]`).ca)
      fail(`${p}.rootsPem[${i}]`, 'must be a CA certificate');
    return r;
  });
  if (rootsPem.length === 0) fail(`${p}.rootsPem`, 'must hold at least one root');
  const cert = parseCert(certPem, `${p}.certPem`);
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    fail(`${p}.keyPem`, 'is not a PEM private key'); // never echo the key
  }
  if (!cert.checkPrivateKey(key)) fail(`${p}.keyPem`, 'does not match tls.certPem');
  const uris = urisFromSubjectAltName(cert.subjectAltName);
  if (!uris.includes(instance.spiffeId))
    fail(`${p}.certPem`, `must carry the URI SAN ${instance.spiffeId}`, uris);
  return { certPem, keyPem, rootsPem };
}

function decodeHeaderMatch(v: unknown, p: string): HeaderMatch {
  const o = obj(v, p, ['name', 'present', 'exact', 'prefix', 'suffix', 'regex', 'invert']);
  const h: HeaderMatch = { name: str(o, 'name', p) };
  if (o.present !== undefined) h.present = bool(o, 'present', p);
  for (const k of ['exact', 'prefix', 'suffix', 'regex'] as const) {
    const s = optStr(o, k, p);
    if (s !== undefined) h[k] = s;
  }
  if (h.regex !== undefined) checkRegex(h.regex, `${p}.regex`);
  if (o.invert !== undefined) h.invert = bool(o, 'invert', p);
  return h;
}

function checkRegex(source: string, path: string): void {
  try {
    new RegExp(source);
  } catch {
    fail(path, 'is not a valid regular expression', source);
  }
}

function decodeHeaderModifiers(v: unknown, p: string): HeaderModifiers {
  const o = obj(v, p, ['add', 'set', 'remove']);
  const out: HeaderModifiers = {};
  const name = (n: unknown, at: string): string => {
    if (typeof n !== 'string' || n !== n.toLowerCase())
      fail(at, 'must be a lower-case field name', n);
    const problem = headerNameProblem(n);
    if (problem !== null) fail(at, problem, n);
    return n;
  };
  for (const k of ['add', 'set'] as const) {
    if (o[k] === undefined) continue;
    const fields = obj(o[k], `${p}.${k}`, Object.keys(o[k] as object));
    const m: Record<string, string> = {};
    for (const [n, val] of Object.entries(fields)) {
      const at = `${p}.${k}.${n}`;
      name(n, at);
      if (typeof val !== 'string') fail(at, 'must be a string', val);
      const problem = headerValueProblem(val);
      if (problem !== null) fail(at, problem);
      m[n] = val;
    }
    out[k] = m;
  }
  if (o.remove !== undefined)
    out.remove = arr(o, 'remove', p).map((n, i) => name(n, `${p}.remove[${i}]`));
  return out;
}

function decodeQueryMatch(v: unknown, p: string): QueryMatch {
  const o = obj(v, p, ['name', 'present', 'exact', 'regex']);
  const q: QueryMatch = { name: str(o, 'name', p) };
  if (o.present !== undefined) q.present = bool(o, 'present', p);
  const exact = optStr(o, 'exact', p);
  if (exact !== undefined) q.exact = exact;
  const regex = optStr(o, 'regex', p);
  if (regex !== undefined) {
    checkRegex(regex, `${p}.regex`);
    q.regex = regex;
  }
  if ([q.present, q.exact, q.regex].filter((x) => x !== undefined).length > 1)
    fail(p, 'must set only one of present, exact and regex');
  return q;
}

function decodeHttpMatch(v: unknown, p: string): HttpMatch {
  const o = obj(v, p, ['pathExact', 'pathPrefix', 'pathRegex', 'methods', 'header']);
  const m: HttpMatch = {};
  for (const k of ['pathExact', 'pathPrefix', 'pathRegex'] as const) {
    const s = optStr(o, k, p);
    if (s !== undefined) m[k] = s;
  }
  if (m.pathRegex !== undefined) checkRegex(m.pathRegex, `${p}.pathRegex`);
  if (o.methods !== undefined) {
    m.methods = arr(o, 'methods', p).map((x, i) => {
      if (typeof x !== 'string' || !/^[A-Z]+$/.test(x))
        fail(`${p}.methods[${i}]`, 'must be an upper-case HTTP method', x);
      return x;
    });
  }
  if (o.header !== undefined)
    m.header = arr(o, 'header', p).map((h, i) => decodeHeaderMatch(h, `${p}.header[${i}]`));
  return m;
}

function decodeIntention(v: unknown, p: string): Intention {
  const o = obj(v, p, [
    'source',
    'destination',
    'action',
    'permissions',
    'jwt',
    'description',
    'precedence',
    'createdAt',
    'updatedAt',
  ]);
  const it: Intention = { source: str(o, 'source', p), destination: str(o, 'destination', p) };
  if (o.action !== undefined) it.action = oneOf(o, 'action', p, ['allow', 'deny'] as const);
  if (o.permissions !== undefined) {
    it.permissions = arr(o, 'permissions', p).map((x, i): IntentionPermission => {
      const pp = `${p}.permissions[${i}]`;
      const po = obj(x, pp, ['action', 'http', 'jwt']);
      const perm: IntentionPermission = {
        action: oneOf(po, 'action', pp, ['allow', 'deny'] as const),
        http: decodeHttpMatch(po.http, `${pp}.http`),
      };
      if (po.jwt !== undefined) perm.jwt = decodeIntentionJwt(po.jwt, `${pp}.jwt`);
      return perm;
    });
  }
  if (o.jwt !== undefined) it.jwt = decodeIntentionJwt(o.jwt, `${p}.jwt`);
  if ((it.action === undefined) === (it.permissions === undefined))
    fail(p, 'must have exactly one of `action` and `permissions`');
  for (const k of ['description', 'createdAt', 'updatedAt'] as const) {
    const s = optStr(o, k, p);
    if (s !== undefined) it[k] = s;
  }
  if (o.precedence !== undefined) it.precedence = num(o, 'precedence', p, nat);
  return it;
}

function decodeIntentionJwt(v: unknown, p: string): IntentionJwt {
  try {
    return validateIntentionJwt(v, p);
  } catch (err) {
    return fail(p, (err as Error).message.replace(`${p}: `, ''));
  }
}

function decodeJwtLocation(v: unknown, p: string): JwtLocation {
  const o = obj(v, p, ['header', 'queryParam', 'cookie']);
  const set = ['header', 'queryParam', 'cookie'].filter((k) => o[k] !== undefined);
  if (set.length !== 1) fail(p, 'must set exactly one of header, queryParam and cookie');
  if (o.header !== undefined) {
    const hp = `${p}.header`;
    const h = obj(o.header, hp, ['name', 'valuePrefix', 'forward']);
    const name = str(h, 'name', hp);
    const nameProblem = headerNameProblem(name);
    if (nameProblem !== null) fail(`${hp}.name`, nameProblem, name);
    const out: { name: string; valuePrefix?: string; forward?: boolean } = { name };
    const prefix = optStr(h, 'valuePrefix', hp);
    if (prefix !== undefined) out.valuePrefix = prefix;
    if (h.forward !== undefined) out.forward = bool(h, 'forward', hp);
    return { header: out };
  }
  if (o.queryParam !== undefined) {
    const q = obj(o.queryParam, `${p}.queryParam`, ['name']);
    return { queryParam: { name: str(q, 'name', `${p}.queryParam`) } };
  }
  const c = obj(o.cookie, `${p}.cookie`, ['name']);
  return { cookie: { name: str(c, 'name', `${p}.cookie`) } };
}

function decodeJwtProvider(v: unknown, p: string): JwtProvider {
  const o = obj(v, p, [
    'name',
    'issuer',
    'audiences',
    'keys',
    'keysProblem',
    'locations',
    'forwarding',
    'clockSkewSeconds',
    'cacheSize',
  ]);
  const out: JwtProvider = {
    name: str(o, 'name', p),
    keys: arr(o, 'keys', p).map((k, i) => {
      const problem = jwkProblem(k);
      if (problem !== null) fail(`${p}.keys[${i}]`, problem);
      return k as JsonWebKey;
    }),
    locations: arr(o, 'locations', p).map((l, i) => decodeJwtLocation(l, `${p}.locations[${i}]`)),
    clockSkewSeconds: num(o, 'clockSkewSeconds', p, { min: 0, max: 86_400, int: true }),
    cacheSize: num(o, 'cacheSize', p, { min: 0, max: 100_000, int: true }),
  };
  if (out.locations.length === 0) fail(`${p}.locations`, 'must not be empty');
  const issuer = optStr(o, 'issuer', p);
  if (issuer !== undefined) out.issuer = issuer;
  const problem = optStr(o, 'keysProblem', p);
  if (problem !== undefined) out.keysProblem = problem;
  if (o.audiences !== undefined)
    out.audiences = arr(o, 'audiences', p).map((a, i) =>
      typeof a === 'string' ? a : fail(`${p}.audiences[${i}]`, 'must be a string', a),
    );
  if (o.forwarding !== undefined) {
    const fp = `${p}.forwarding`;
    const f = obj(o.forwarding, fp, ['headerName', 'padForwardPayloadHeader']);
    const headerName = str(f, 'headerName', fp);
    const nameProblem = headerNameProblem(headerName);
    if (nameProblem !== null) fail(`${fp}.headerName`, nameProblem, headerName);
    out.forwarding = { headerName };
    if (f.padForwardPayloadHeader !== undefined)
      out.forwarding.padForwardPayloadHeader = bool(f, 'padForwardPayloadHeader', fp);
  }
  return out;
}

function decodeJwtProviders(v: unknown): JwtProvider[] {
  if (!Array.isArray(v)) fail('jwtProviders', 'must be an array', v);
  const seen = new Set<string>();
  return v.map((x, i) => {
    const p = decodeJwtProvider(x, `jwtProviders[${i}]`);
    if (seen.has(p.name)) fail(`jwtProviders[${i}].name`, 'is listed twice', p.name);
    seen.add(p.name);
    return p;
  });
}

function decodeIntentions(v: unknown): IntentionsSnapshot {
  const p = 'intentions';
  const o = obj(v, p, ['revision', 'defaultPolicy', 'auditMode', 'intentions']);
  return {
    revision: num(o, 'revision', p, nat),
    defaultPolicy: oneOf(o, 'defaultPolicy', p, ['allow', 'deny'] as const),
    auditMode: bool(o, 'auditMode', p),
    intentions: arr(o, 'intentions', p).map((x, i) => decodeIntention(x, `${p}.intentions[${i}]`)),
  };
}

function decodeTracing(v: unknown): TracingConfig {
  const p = 'tracing';
  const o = obj(v, p, ['endpoint', 'sampleRatio', 'headers']);
  const h = o.headers;
  if (typeof h !== 'object' || h === null || Array.isArray(h))
    fail(`${p}.headers`, 'must be an object of strings');
  const headers: Record<string, string> = {};
  for (const [k, val] of Object.entries(h)) {
    if (typeof val !== 'string') fail(`${p}.headers.${k}`, 'must be a string');
    headers[k] = val;
  }
  return {
    endpoint: str(o, 'endpoint', p, { empty: true }),
    sampleRatio: num(o, 'sampleRatio', p, { min: 0, max: 1 }),
    headers,
  };
}

/**
 * Validates an untrusted value as a ProxySnapshot, returning a fresh object holding only the
 * known fields. Throws REMORA_E_PROXY_SNAPSHOT_INVALID naming the first bad field.
 */
export function decodeProxySnapshot(value: unknown): ProxySnapshot {
  const o = obj(value, 'snapshot', [
    'version',
    'instance',
    'inbound',
    'upstreams',
    'tls',
    'intentions',
    'tracing',
    'transparent',
    'accessLogs',
    'expose',
    'meshTls',
    'jwtProviders',
    'ingress',
    'metrics',
    'terminating',
  ]);
  const version = num(o, 'version', 'snapshot', nat);
  const instance = decodeInstance(o.instance);
  const inbound = decodeInbound(o.inbound);
  const upstreams = arr(o, 'upstreams', 'snapshot').map((u, i) =>
    decodeUpstream(u, `upstreams[${i}]`),
  );
  const seen = new Map<string, string>();
  for (const [i, u] of upstreams.entries()) {
    if (u.localBindPort === 0 || u.listener === false) continue;
    const key = `${u.localBindAddress}:${u.localBindPort}`;
    const other = seen.get(key);
    if (other !== undefined)
      fail(`upstreams[${i}].localBindPort`, `is already used by ${other}`, key);
    seen.set(key, `upstream ${u.destinationName}`);
  }
  const tls = decodeTls(o.tls, instance);
  const intentions = decodeIntentions(o.intentions);
  const tracing = decodeTracing(o.tracing);
  const logs = {
    ...(o.accessLogs === undefined ? {} : { accessLogs: decodeAccessLogs(o.accessLogs) }),
    ...(o.expose === undefined ? {} : { expose: decodeExpose(o.expose, inbound, seen) }),
    ...(o.meshTls === undefined ? {} : { meshTls: decodeMeshTls(o.meshTls) }),
    ...(o.jwtProviders === undefined ? {} : { jwtProviders: decodeJwtProviders(o.jwtProviders) }),
    ...(o.ingress === undefined ? {} : { ingress: decodeIngress(o.ingress, upstreams, seen) }),
    ...(o.metrics === undefined ? {} : { metrics: decodeMetricsListener(o.metrics) }),
    ...(o.terminating === undefined ? {} : { terminating: decodeTerminating(o.terminating) }),
  };
  if (o.transparent === undefined)
    return { version, instance, inbound, upstreams, tls, intentions, tracing, ...logs };
  const transparent = decodeTransparent(o.transparent);
  const lists = [
    ['http', transparent.http] as const,
    ['forward', transparent.forward ?? []] as const,
  ];
  for (const [kind, list] of lists)
    for (const [i, l] of list.entries()) {
      const key = `${l.bindAddress}:${l.bindPort}`;
      const other = seen.get(key);
      if (l.bindPort !== 0 && other !== undefined)
        fail(`transparent.${kind}[${i}].bindPort`, `is already used by ${other}`, key);
      seen.set(key, `the transparent listener of ${l.upstream}`);
      if (kind === 'forward' && !upstreams.some((u) => u.destinationName === l.upstream))
        fail(
          `transparent.forward[${i}].upstream`,
          'names no upstream of this snapshot',
          l.upstream,
        );
    }
  return { version, instance, inbound, upstreams, tls, intentions, tracing, transparent, ...logs };
}

export const ACCESS_LOG_TYPES = ['stdout', 'stderr', 'file'] as const;
export const EXPOSE_PROTOCOLS = ['http', 'http2'] as const;

function decodeMeshTls(v: unknown): MeshTlsConfig {
  const o = obj(v, 'meshTls', ['incoming', 'outgoing']);
  const out: MeshTlsConfig = {};
  for (const dir of ['incoming', 'outgoing'] as const) {
    if (o[dir] === undefined) continue;
    const p = `meshTls.${dir}`;
    const d = obj(o[dir], p, ['minVersion', 'maxVersion', 'cipherSuites']);
    const params: TlsParams = {};
    const min = optStr(d, 'minVersion', p);
    const max = optStr(d, 'maxVersion', p);
    if (min !== undefined) params.minVersion = min;
    if (max !== undefined) params.maxVersion = max;
    if (d.cipherSuites !== undefined)
      params.cipherSuites = arr(d, 'cipherSuites', p).map((s, i) =>
        typeof s === 'string' ? s : fail(`${p}.cipherSuites[${i}]`, 'must be a string', s),
      );
    const problem = tlsParamsProblem(params);
    if (problem !== null) fail(`${p}.${problem.key}`, problem.reason, params[problem.key]);
    out[dir] = params;
  }
  return out;
}

/** A path exposed: exact, absolute, without query or fragment. */
export function exposePathProblem(path: string): string | null {
  if (!path.startsWith('/')) return 'must start with /';
  if (/[?#\s]/.test(path) || path.length > 1024)
    return 'must be a path alone (no query string, fragment or space; at most 1024 characters)';
  return null;
}

function decodeExpose(v: unknown, inbound: InboundConfig, seen: Map<string, string>): ExposePath[] {
  if (!Array.isArray(v)) fail('expose', 'must be an array', v);
  const ports = new Map<number, number>();
  return v.map((x, i) => {
    const p = `expose[${i}]`;
    const e = obj(x, p, ['path', 'localPathPort', 'listenerPort', 'protocol', 'allowSources']);
    const path = str(e, 'path', p);
    const problem = exposePathProblem(path);
    if (problem !== null) fail(`${p}.path`, problem, path);
    const localPathPort = num(e, 'localPathPort', p, { ...port, min: 1 });
    const listenerPort = num(e, 'listenerPort', p, { ...port, min: 1 });
    const other = ports.get(listenerPort);
    if (other !== undefined)
      fail(`${p}.listenerPort`, `is already used by expose[${other}]`, listenerPort);
    if (listenerPort === inbound.bindPort)
      fail(`${p}.listenerPort`, 'is the sidecar port', listenerPort);
    const used = seen.get(`${inbound.bindAddress}:${listenerPort}`);
    if (used !== undefined) fail(`${p}.listenerPort`, `is already used by ${used}`, listenerPort);
    ports.set(listenerPort, i);
    return {
      path,
      localPathPort,
      listenerPort,
      protocol: oneOf(e, 'protocol', p, EXPOSE_PROTOCOLS),
      ...(e.allowSources !== undefined ? { allowSources: decodeSources(e, p) } : {}),
    };
  });
}

function decodeMetricsListener(v: unknown): MetricsListener {
  const o = obj(v, 'metrics', ['bindAddress', 'bindPort']);
  const bindAddress = str(o, 'bindAddress', 'metrics');
  if (isIP(bindAddress) === 0) fail('metrics.bindAddress', 'must be an IP address', bindAddress);
  return { bindAddress, bindPort: num(o, 'bindPort', 'metrics', port) };
}

function decodeSources(e: Obj, p: string): string[] {
  return arr(e, 'allowSources', p).map((a, j) => {
    if (typeof a !== 'string' || isIP(a) === 0)
      fail(`${p}.allowSources[${j}]`, 'must be an IPv4 or IPv6 address', a);
    return a;
  });
}

function decodeAccessLogs(v: unknown): AccessLogConfig {
  const p = 'accessLogs';
  const o = obj(v, p, ['type', 'path', 'textFormat', 'jsonFormat']);
  const type = oneOf(o, 'type', p, ACCESS_LOG_TYPES);
  const textFormat = optStr(o, 'textFormat', p);
  const jsonFormat = optStr(o, 'jsonFormat', p);
  try {
    compileAccessFormat({ textFormat, jsonFormat });
  } catch (err) {
    const key = jsonFormat === undefined ? 'textFormat' : 'jsonFormat';
    fail(`${p}.${key}`, (err as Error).message, o[key]);
  }
  const format = {
    ...(textFormat === undefined ? {} : { textFormat }),
    ...(jsonFormat === undefined ? {} : { jsonFormat }),
  };
  if (type !== 'file') {
    if (o.path !== undefined) fail(`${p}.path`, `is only for type file, not ${type}`, o.path);
    return { type, ...format };
  }
  const path = str(o, 'path', p);
  if (!path.startsWith('/') || path.includes('\0'))
    fail(`${p}.path`, 'must be an absolute file path', path);
  return { type, path, ...format };
}

function decodeTransparent(v: unknown): TransparentConfig {
  const o = obj(v, 'transparent', ['http', 'forward']);
  const listeners = (kind: 'http' | 'forward') =>
    arr(o, kind, 'transparent').map((l, i) => {
      const path = `transparent.${kind}[${i}]`;
      const x = obj(l, path, ['bindAddress', 'bindPort', 'upstream']);
      return {
        bindAddress: str(x, 'bindAddress', path),
        bindPort: num(x, 'bindPort', path, port),
        upstream: str(x, 'upstream', path),
      };
    });
  const http = listeners('http');
  return o.forward === undefined ? { http } : { http, forward: listeners('forward') };
}

/** Listeners one gateway may hold, at most; and hosts per service. */
const MAX_INGRESS_LISTENERS = 256;
const MAX_INGRESS_HOSTS = 256;

/**
 * A Host pattern of an ingress service, or the reason it is not one: a DNS name (lower case, no
 * port), `*.` then a name, a name then `.*`, or `*`.
 */
export function ingressHostProblem(host: string): string | null {
  if (host === '*') return null;
  let name = host;
  if (name.startsWith('*.')) name = name.slice(2);
  else if (name.endsWith('.*')) name = name.slice(0, -2);
  if (name.includes('*'))
    return 'may hold a wildcard only as its whole first label (*.example.com) or last one (api.ingress.*)';
  if (name.length === 0 || name.length > 253 || name !== name.toLowerCase())
    return 'must be a lower-case DNS name';
  for (const label of name.split('.'))
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label))
      return `must be a DNS name (label ${JSON.stringify(label)} is not one)`;
  return null;
}

function decodeIngress(
  v: unknown,
  upstreams: readonly UpstreamConfig[],
  seen: Map<string, string>,
): IngressConfig {
  const o = obj(v, 'ingress', ['listeners']);
  const list = arr(o, 'listeners', 'ingress');
  if (list.length > MAX_INGRESS_LISTENERS)
    fail('ingress.listeners', `must hold at most ${MAX_INGRESS_LISTENERS} listeners`, list.length);
  const names = new Map(upstreams.map((u) => [u.destinationName, u]));
  const listeners = list.map((x, i): IngressListener => {
    const p = `ingress.listeners[${i}]`;
    const l = obj(x, p, ['bindAddress', 'bindPort', 'protocol', 'services', 'tls']);
    const bindAddress = str(l, 'bindAddress', p);
    const bindPort = num(l, 'bindPort', p, port);
    const protocol = oneOf(l, 'protocol', p, PROTOCOLS);
    const key = `${bindAddress}:${bindPort}`;
    const other = seen.get(key);
    if (bindPort !== 0 && other !== undefined)
      fail(`${p}.bindPort`, `is already used by ${other}`, key);
    seen.set(key, `ingress listener ${i}`);
    const raw = arr(l, 'services', p);
    if (raw.length === 0) fail(`${p}.services`, 'must not be empty');
    if (protocol === 'tcp' && raw.length !== 1)
      fail(`${p}.services`, 'must hold exactly one service on a tcp listener', raw.length);
    const services = raw.map((y, j): IngressService => {
      const sp = `${p}.services[${j}]`;
      const s = obj(y, sp, ['upstream', 'hosts', 'requestHeaders', 'responseHeaders']);
      const upstream = str(s, 'upstream', sp);
      const u = names.get(upstream);
      if (u === undefined) fail(`${sp}.upstream`, 'names no upstream of this snapshot', upstream);
      if (u.protocol !== protocol)
        fail(`${sp}.upstream`, `is ${u.protocol}, the listener ${protocol}`, upstream);
      const hosts = arr(s, 'hosts', sp).map((h, k) => {
        if (typeof h !== 'string') fail(`${sp}.hosts[${k}]`, 'must be a string', h);
        const problem = ingressHostProblem(h);
        if (problem !== null) fail(`${sp}.hosts[${k}]`, problem, h);
        return h;
      });
      if (hosts.length > MAX_INGRESS_HOSTS)
        fail(`${sp}.hosts`, `must hold at most ${MAX_INGRESS_HOSTS} hosts`, hosts.length);
      if (protocol === 'tcp' && hosts.length > 0)
        fail(`${sp}.hosts`, 'must be empty on a tcp listener', hosts);
      const out: IngressService = { upstream, hosts };
      if (s.requestHeaders !== undefined)
        out.requestHeaders = decodeHeaderModifiers(s.requestHeaders, `${sp}.requestHeaders`);
      if (s.responseHeaders !== undefined)
        out.responseHeaders = decodeHeaderModifiers(s.responseHeaders, `${sp}.responseHeaders`);
      return out;
    });
    if (protocol !== 'tcp') {
      const taken = new Map<string, number>();
      services.forEach((s, j) => {
        for (const h of s.hosts) {
          const was = taken.get(h);
          if (was !== undefined && was !== j)
            fail(`${p}.services[${j}].hosts`, `repeats a host of services[${was}]`, h);
          taken.set(h, j);
        }
      });
    }
    const tls = l.tls === undefined ? undefined : decodeIngressTls(l.tls, `${p}.tls`);
    return { bindAddress, bindPort, protocol, services, ...(tls ? { tls } : {}) };
  });
  return { listeners };
}

const SNAPSHOT_TLS_KEYS = {
  TLSMinVersion: 'minVersion',
  TLSMaxVersion: 'maxVersion',
  CipherSuites: 'cipherSuites',
} as const;

/** A TLS listener's parameters: TLSv1_2 or TLSv1_3 only (the agent raised older minimums). */
function decodeIngressTls(v: unknown, p: string): IngressTlsParams {
  const d = obj(v, p, ['minVersion', 'maxVersion', 'cipherSuites']);
  const out: IngressTlsParams = {};
  for (const key of ['minVersion', 'maxVersion'] as const) {
    const x = optStr(d, key, p);
    if (x === undefined) continue;
    if (x !== 'TLSv1_2' && x !== 'TLSv1_3') fail(`${p}.${key}`, 'must be TLSv1_2 or TLSv1_3', x);
    out[key] = x;
  }
  if (d.cipherSuites !== undefined)
    out.cipherSuites = arr(d, 'cipherSuites', p).map((s, i) =>
      typeof s === 'string' ? s : fail(`${p}.cipherSuites[${i}]`, 'must be a string', s),
    );
  const problem = ingressTlsProblem(out);
  if (problem !== null) {
    const key = SNAPSHOT_TLS_KEYS[problem.key];
    fail(`${p}.${key}`, problem.reason, out[key]);
  }
  return out;
}

function decodeTerminating(v: unknown): TerminatingConfig {
  const o = obj(v, 'terminating', ['services']);
  const names = new Set<string>();
  const snis = new Set<string>();
  const services = arr(o, 'services', 'terminating').map((x, i): TerminatingService => {
    const p = `terminating.services[${i}]`;
    const s = obj(x, p, [
      'service',
      'sni',
      'protocol',
      'certPem',
      'keyPem',
      'endpoints',
      'tls',
      'connectTimeoutMs',
      'requestTimeoutMs',
      'loadBalancer',
      'subsets',
      'disableAutoHostRewrite',
    ]);
    const service = str(s, 'service', p);
    if (names.has(service)) fail(`${p}.service`, 'repeats a service', service);
    names.add(service);
    const sni = str(s, 'sni', p).toLowerCase();
    if (snis.has(sni)) fail(`${p}.sni`, 'repeats an SNI', sni);
    snis.add(sni);
    const protocol = oneOf(s, 'protocol', p, PROTOCOLS);
    const certPem = str(s, 'certPem', p);
    const keyPem = str(s, 'keyPem', p);
    const x509 = parseCert(certPem, `${p}.certPem`);
    try {
      if (!x509.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('mismatch');
    } catch {
      fail(`${p}.keyPem`, 'must be the private key of certPem');
    }
    const endpoints = arr(s, 'endpoints', p).map((e, j) =>
      decodeEndpoint(e, `${p}.endpoints[${j}]`),
    );
    const out: TerminatingService = { service, sni, protocol, certPem, keyPem, endpoints };
    if (s.tls !== undefined) {
      const t = obj(s.tls, `${p}.tls`, ['caPem', 'certPem', 'keyPem', 'sni']);
      const tls: OriginationTls = {};
      for (const k of ['caPem', 'certPem', 'keyPem', 'sni'] as const) {
        const val = optStr(t, k, `${p}.tls`);
        if (val !== undefined) tls[k] = val;
      }
      if ((tls.certPem === undefined) !== (tls.keyPem === undefined))
        fail(`${p}.tls`, 'must hold both certPem and keyPem, or neither');
      out.tls = tls;
    }
    for (const k of ['connectTimeoutMs', 'requestTimeoutMs'] as const)
      if (s[k] !== undefined) out[k] = num(s, k, p, { min: 1, int: true });
    if (s.loadBalancer !== undefined)
      out.loadBalancer = oneOf(s, 'loadBalancer', p, LOAD_BALANCER_POLICIES);
    if (s.disableAutoHostRewrite !== undefined) {
      if (s.disableAutoHostRewrite !== true)
        fail(`${p}.disableAutoHostRewrite`, 'must be true when given', s.disableAutoHostRewrite);
      out.disableAutoHostRewrite = true;
    }
    if (s.subsets !== undefined)
      out.subsets = arr(s, 'subsets', p).map((y, j): TerminatingSubset => {
        const q = `${p}.subsets[${j}]`;
        const b = obj(y, q, ['name', 'sni', 'endpoints']);
        const sni = str(b, 'sni', q).toLowerCase();
        if (snis.has(sni)) fail(`${q}.sni`, 'repeats an SNI', sni);
        snis.add(sni);
        return {
          name: str(b, 'name', q),
          sni,
          endpoints: arr(b, 'endpoints', q).map((e, k) =>
            decodeEndpoint(e, `${q}.endpoints[${k}]`),
          ),
        };
      });
    return out;
  });
  return { services };
}
