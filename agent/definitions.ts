// Service definitions in Consul's JSON format (DESIGN §5): `{"service": {...}}` or
// `{"services": [...]}`, keys in snake_case or PascalCase. The decoder never throws: each bad
// service becomes a coded error naming the file, the field and the reason, and the good
// services of the same file are kept.
import { isValidName } from '../lib/identity/index.ts';
import { uidOfUser } from './transparent/users.ts';
import { checkExposures, type CheckExposure } from './expose-checks.ts';
import { RemoraError } from '../lib/errors/index.ts';
import {
  DEFAULT_PROTOCOL,
  DEFAULT_RESILIENCE,
  defaultLoadBalancer,
  EXPOSE_PROTOCOLS,
  exposePathProblem,
  INBOUND_LIMITS,
  MUTUAL_TLS_MODES,
  type MutualTlsMode,
  type ExposePath,
  type HashPolicy,
  type InboundSettings,
  type LoadBalancerPolicy,
  type MetricsListener,
  type Protocol,
  type ResilienceConfig,
} from '../lib/proxy-api/index.ts';
import { isIP } from 'node:net';

export interface UpstreamDefinition {
  destinationName: string;
  localBindAddress: string;
  /** 0 when a transparent instance leaves it out: the agent allocates one (docs/transparent.md). */
  localBindPort: number;
  /** `config.protocol`, or `tcp` until the agent resolves it (see protocolGiven). */
  protocol: Protocol;
  /**
   * False when the definition leaves the protocol out: the agent then takes the destination's
   * (its sidecars' registration, then Consul's config entries; docs/agent.md "Protocols").
   */
  protocolGiven: boolean;
  loadBalancer: LoadBalancerPolicy;
  /** False when `config.load_balancer` is left out: the default follows the protocol. */
  loadBalancerGiven: boolean;
  /** From the destination's service-resolver, with ring_hash or maglev. */
  hashPolicies?: HashPolicy[];
  resilience: ResilienceConfig;
  /**
   * The upstream's `config` as written (null when absent): it wins over Consul's
   * `service-defaults` UpstreamConfig, which the agent layers under it (docs/agent.md).
   */
  config: Record<string, unknown> | null;
}

export interface SidecarDefinition {
  /** Public mTLS port of the proxy, as registered in Consul; null lets the agent pick one. */
  port: number | null;
  /** Address registered for the sidecar; null means Consul's node address. */
  address: string | null;
  localServiceAddress: string;
  localServicePort: number;
  /** `proxy.config.protocol`, or `tcp` until the agent resolves it (see protocolGiven). */
  protocol: Protocol;
  /** False when left out: Consul's service-defaults or proxy-defaults decide (docs/agent.md). */
  protocolGiven: boolean;
  upstreams: UpstreamDefinition[];
  /** Transparent interception (`transparent: true` or Consul's `proxy.mode = "transparent"`). */
  transparent: boolean;
  /**
   * Consul's `proxy.mutual_tls_mode` of the sidecar registration (`MutualTLSMode`); null when
   * absent or `""`: service-defaults, then proxy-defaults decide (docs/agent.md).
   */
  mutualTlsMode: MutualTlsMode | null;
  /** Ports whose inbound traffic is not redirected (`proxy.config.exclude_inbound_ports`). */
  excludeInboundPorts: number[];
  /**
   * A transparent instance also calls, through its proxy, every mesh service its intentions may
   * allow (`proxy.config.derive_upstreams`, default true; docs/transparent.md).
   */
  deriveUpstreams: boolean;
  /**
   * The uid the app runs as (`proxy.config.app_user`, a user name or a number): a transparent
   * instance then redirects only that user's calls (docs/transparent.md).
   */
  appUid: number | null;
  /**
   * The proxy's settings for the app (`proxy.config.local_connect_timeout_ms`,
   * `local_request_timeout_ms`, `max_inbound_connections`); they win over the service's
   * service-defaults entry, key by key.
   */
  inbound: InboundSettings;
  /** Paths of the app served in plain HTTP outside the mesh (`proxy.expose.paths`). */
  expose: ExposePath[];
  /**
   * With `proxy.expose.checks = true`, the service's HTTP and gRPC check paths the sidecar
   * serves on ports the agent allocates, and the checks registered against them.
   */
  exposeChecks: CheckExposure[];
  /**
   * The definition's own `proxy.expose.checks = true` (service-defaults and proxy-defaults may
   * also set it: agent/central-expose.ts).
   */
  exposeChecksGiven: boolean;
  /**
   * Where the proxy also serves `/metrics` for scrapers on other hosts
   * (`proxy.config.envoy_prometheus_bind_addr`); null: proxy-defaults decide, else none.
   */
  metrics: MetricsListener | null;
}

/**
 * The inbound settings: snapshot key, the sidecar's `proxy.config` key, the service-defaults
 * field, and the smallest value (0 means no bound for the last two, as in Consul).
 */
export const INBOUND_FIELDS = [
  ['localConnectTimeoutMs', 'local_connect_timeout_ms', 'LocalConnectTimeoutMs', 1],
  ['localRequestTimeoutMs', 'local_request_timeout_ms', 'LocalRequestTimeoutMs', 0],
  ['maxInboundConnections', 'max_inbound_connections', 'MaxInboundConnections', 0],
] as const satisfies ReadonlyArray<readonly [keyof InboundSettings, string, string, number]>;

/** The gateway kinds the agent runs (docs/gateways.md). */
export type GatewayKind = 'ingress-gateway' | 'terminating-gateway';

export interface ServiceDefinition {
  /** Consul service ID of the instance (defaults to the name). */
  id: string;
  name: string;
  address: string | null;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  /** Consul check definitions for the application, passed through unchanged. */
  checks: Record<string, unknown>[];
  /**
   * null when the service has no `connect.sidecar_service`: registered, but no proxy. For an
   * ingress gateway, the proxy's settings (no app, no upstreams of its own: its
   * `ingress-gateway` entry gives them).
   */
  sidecar: SidecarDefinition | null;
  /**
   * `ingress-gateway` or `terminating-gateway` for a gateway (`"kind"`, docs/gateways.md);
   * absent for a service.
   */
  kind?: GatewayKind;
  /** Where it came from, for messages. */
  source: { file: string; index: number };
}

export interface DecodeResult {
  services: ServiceDefinition[];
  problems: RemoraError[];
}

export const PROTOCOLS = ['tcp', 'http', 'http2', 'grpc'] as const satisfies readonly Protocol[];
export const LOAD_BALANCERS = [
  'round_robin',
  'least_request',
  'peak_ewma',
] as const satisfies readonly LoadBalancerPolicy[];

/** Meta key every registration carries (DESIGN §5). */
export const NODE_META_KEY = 'remora-node';

type Json = unknown;
type Obj = Record<string, Json>;

/** Thrown inside the decoder only; turned into a RemoraError for the service. */
class FieldError extends Error {
  readonly field: string;
  constructor(field: string, reason: string) {
    super(reason);
    this.field = field;
  }
}

function isObj(v: Json): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Consul's two spellings meet here: `destination_name` and `DestinationName` → `destinationname`. */
function norm(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

/** A view of an object whose keys are matched in either spelling; remembers the user's spelling for messages. */
class Fields {
  readonly path: string;
  readonly #byNorm = new Map<string, { key: string; value: Json }>();

  constructor(obj: Obj, path: string) {
    this.path = path;
    for (const [key, value] of Object.entries(obj)) {
      const n = norm(key);
      if (this.#byNorm.has(n)) {
        throw new FieldError(
          this.at(key),
          `is given twice (as ${JSON.stringify(this.#byNorm.get(n)!.key)} and ${JSON.stringify(key)})`,
        );
      }
      this.#byNorm.set(n, { key, value });
    }
  }

  at(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  /** The field path as the user wrote it, or the snake_case name when absent. */
  fieldPath(name: string): string {
    return this.at(this.#byNorm.get(norm(name))?.key ?? name);
  }

  raw(name: string): Json {
    return this.#byNorm.get(norm(name))?.value;
  }

  has(name: string): boolean {
    const v = this.raw(name);
    return v !== undefined && v !== null;
  }

  string(name: string, required: true): string;
  string(name: string, required?: false): string | undefined;
  string(name: string, required = false): string | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) {
      if (required) throw new FieldError(this.fieldPath(name), 'is required');
      return undefined;
    }
    if (typeof v !== 'string') {
      throw new FieldError(this.fieldPath(name), `must be a string, got ${describe(v)}`);
    }
    return v;
  }

  int(name: string, min: number, max: number, required: true): number;
  int(name: string, min: number, max: number, required?: false): number | undefined;
  int(name: string, min: number, max: number, required = false): number | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) {
      if (required) throw new FieldError(this.fieldPath(name), 'is required');
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new FieldError(
        this.fieldPath(name),
        `must be an integer from ${min} to ${max}, got ${describe(v)}`,
      );
    }
    return v;
  }

  number(name: string, min: number, max: number): number | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      throw new FieldError(
        this.fieldPath(name),
        `must be a number from ${min} to ${max}, got ${describe(v)}`,
      );
    }
    return v;
  }

  object(name: string): Fields | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    if (!isObj(v))
      throw new FieldError(this.fieldPath(name), `must be an object, got ${describe(v)}`);
    return new Fields(v, this.fieldPath(name));
  }

  array(name: string): Json[] | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v))
      throw new FieldError(this.fieldPath(name), `must be an array, got ${describe(v)}`);
    return v as Json[];
  }

  oneOf<T extends string>(name: string, allowed: readonly T[]): T | undefined {
    const v = this.string(name);
    if (v === undefined) return undefined;
    const lower = v.toLowerCase();
    const found = allowed.find((a) => a === lower);
    if (!found) {
      throw new FieldError(
        this.fieldPath(name),
        `must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`,
      );
    }
    return found;
  }
}

function describe(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  const s = JSON.stringify(v);
  return `${typeof v} ${s && s.length > 40 ? `${s.slice(0, 40)}…` : s}`;
}

function name(f: Fields, key: string, required: true): string;
function name(f: Fields, key: string, required: false): string | undefined;
function name(f: Fields, key: string, required: boolean): string | undefined {
  const v = required ? f.string(key, true) : f.string(key);
  if (v !== undefined && !isValidName(v)) {
    throw new FieldError(
      f.fieldPath(key),
      `must be 1–63 letters, digits, "-" or "_" starting with a letter or digit, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function address(f: Fields, key: string): string | undefined {
  const v = f.string(key);
  if (v !== undefined && (v.length === 0 || v.length > 253 || /\s/.test(v))) {
    throw new FieldError(
      f.fieldPath(key),
      `must be a host name or IP address, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function stringMap(f: Fields, key: string): Record<string, string> {
  const obj = f.raw(key);
  if (obj === undefined || obj === null) return {};
  if (!isObj(obj))
    throw new FieldError(f.fieldPath(key), `must be an object of strings, got ${describe(obj)}`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (typeof v !== 'string') {
      throw new FieldError(`${f.fieldPath(key)}.${k}`, `must be a string, got ${describe(v)}`);
    }
    out[k] = v;
  }
  return out;
}

function resilience(cfg: Fields | undefined): ResilienceConfig {
  const d = DEFAULT_RESILIENCE;
  if (!cfg) return structuredClone(d);
  const limits = cfg.object('limits');
  const phc = cfg.object('passive_health_check');
  const budget = cfg.object('retry_budget');
  return {
    connectTimeoutMs: cfg.int('connect_timeout_ms', 1, 600_000) ?? d.connectTimeoutMs,
    requestTimeoutMs: cfg.int('request_timeout_ms', 1, 3_600_000) ?? d.requestTimeoutMs,
    idleTimeoutMs: cfg.int('idle_timeout_ms', 1, 86_400_000) ?? d.idleTimeoutMs,
    maxRetries: cfg.int('max_retries', 0, 10) ?? d.maxRetries,
    retryBudgetRatio: budget?.number('ratio', 0, 1) ?? d.retryBudgetRatio,
    retryBudgetMinPerSec: budget?.int('min_per_sec', 0, 1_000_000) ?? d.retryBudgetMinPerSec,
    maxBufferedBodyBytes:
      cfg.int('max_buffered_body_bytes', 0, 64 * 1024 * 1024) ?? d.maxBufferedBodyBytes,
    outlier: {
      consecutiveFailures: phc?.int('max_failures', 1, 1_000_000) ?? d.outlier.consecutiveFailures,
      baseEjectionMs: phc?.int('base_ejection_time_ms', 1, 3_600_000) ?? d.outlier.baseEjectionMs,
      maxEjectionPercent: phc?.int('max_ejection_percent', 0, 100) ?? d.outlier.maxEjectionPercent,
    },
    circuitBreaker: {
      maxConnections:
        limits?.int('max_connections', 1, 1_000_000) ?? d.circuitBreaker.maxConnections,
      maxPendingRequests:
        limits?.int('max_pending_requests', 1, 1_000_000) ?? d.circuitBreaker.maxPendingRequests,
      maxRequests:
        limits?.int('max_concurrent_requests', 1, 1_000_000) ?? d.circuitBreaker.maxRequests,
    },
  };
}

/**
 * Consul's duration fields (`BaseEjectionTime: "30s"`) as Remora's millisecond keys
 * (`BaseEjectionTimeMs: 30000`), keeping the spelling of every other key; a duration that is not
 * one is refused with its path.
 */
function withDurations(v: Json, path: string): Json {
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    const at = path ? `${path}.${k}` : k;
    if (norm(k) === 'baseejectiontime') {
      const ms = typeof x === 'string' ? durationMs(x) : null;
      if (ms === null)
        throw new FieldError(at, `must be a duration such as "30s", got ${describe(x)}`);
      out[`${k}${k.includes('_') ? '_ms' : 'Ms'}`] = ms;
    } else out[k] = withDurations(x, at);
  }
  return out;
}

/** Keys in one spelling (see norm), all the way down, so layers written either way merge. */
function normalized(v: Json): Json {
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) out[norm(k)] = normalized(x);
  return out;
}

/** A Go-style duration of whole milliseconds or more ("500ms", "30s", "1m30s"); null if not one. */
export function durationMs(s: string): number | null {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * unit[m[2]!]!;
    end = re.lastIndex;
  }
  return s.length > 0 && end === s.length ? Math.round(total) : null;
}

function deepMerge(low: Obj, high: Obj): Obj {
  const out: Obj = { ...low };
  for (const [k, v] of Object.entries(high)) {
    const prev = out[k];
    out[k] = isObj(prev) && isObj(v) ? deepMerge(prev, v) : v;
  }
  return out;
}

/**
 * Checks one layer of upstream settings from outside the definition (Consul's `service-defaults`
 * UpstreamConfig `Defaults` or an `Overrides` item): the field and reason of the first bad value,
 * or null when it is usable.
 */
export function checkUpstreamLayer(layer: unknown, path: string): string | null {
  if (!isObj(layer)) return `${path} must be an object`;
  try {
    resilience(new Fields(withDurations(layer, path) as Obj, path));
    return null;
  } catch (err) {
    if (err instanceof FieldError) return `${err.field} ${err.message}`;
    throw err;
  }
}

/**
 * Resilience settings from layers, lowest first (Consul's UpstreamConfig `Defaults`, then the
 * destination's `Overrides` item, then the definition's own `config`): each key takes the
 * highest layer that sets it. Every layer must have passed checkUpstreamLayer (the definition's
 * passed decoding).
 */
export function layeredResilience(layers: readonly Record<string, unknown>[]): ResilienceConfig {
  let merged: Obj = {};
  for (const l of layers) merged = deepMerge(merged, normalized(withDurations(l, '')) as Obj);
  return resilience(new Fields(merged, 'config'));
}

function decodeUpstream(raw: Json, path: string, transparent: boolean): UpstreamDefinition {
  if (!isObj(raw)) throw new FieldError(path, `must be an object, got ${describe(raw)}`);
  const u = new Fields(raw, path);
  const type = u.string('destination_type');
  if (type !== undefined && type !== 'service') {
    throw new FieldError(
      u.fieldPath('destination_type'),
      `only "service" is supported, got ${JSON.stringify(type)}`,
    );
  }
  const cfg = u.object('config');
  const givenProtocol = cfg?.oneOf('protocol', PROTOCOLS);
  const protocol = givenProtocol ?? DEFAULT_PROTOCOL;
  const givenBalancer = cfg?.oneOf('load_balancer', LOAD_BALANCERS);
  return {
    destinationName: name(u, 'destination_name', true),
    localBindAddress: address(u, 'local_bind_address') ?? '127.0.0.1',
    localBindPort: transparent
      ? (u.int('local_bind_port', 1, 65535) ?? 0)
      : u.int('local_bind_port', 1, 65535, true),
    protocol,
    protocolGiven: givenProtocol !== undefined,
    loadBalancer: givenBalancer ?? defaultLoadBalancer(protocol),
    loadBalancerGiven: givenBalancer !== undefined,
    resilience: resilience(cfg),
    config: isObj(u.raw('config')) ? (u.raw('config') as Record<string, unknown>) : null,
  };
}

/** `proxy.config.app_user`: a user name of this host or a numeric uid; null when absent. */
/** Consul's proxy config key for the proxy's public `/metrics` listener. */
export const METRICS_BIND_KEY = 'envoy_prometheus_bind_addr';

/**
 * An `envoy_prometheus_bind_addr` value: `<IP>:<port>` (`[<IPv6>]:<port>` for IPv6), as Envoy
 * takes it; a string saying what is wrong otherwise.
 */
export function metricsBindOf(v: unknown): MetricsListener | string {
  const want = 'must be "<IP address>:<port>" (e.g. "0.0.0.0:20200", "[::]:20200")';
  if (typeof v !== 'string') return `${want}, got ${describe(v)}`;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || !host || isIP(host) !== (m[1] ? 6 : 4) || port < 1 || port > 65535)
    return `${want}, got ${JSON.stringify(v)}`;
  return { bindAddress: host, bindPort: port };
}

function decodeAppUser(cfg: Fields | undefined): number | null {
  const raw = cfg?.raw('app_user');
  if (raw === undefined) return null;
  const field = cfg!.fieldPath('app_user');
  if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 0 && raw < 4294967295) return raw;
  if (typeof raw === 'string' && /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(raw)) {
    const uid = uidOfUser(raw);
    if (uid === null)
      throw new FieldError(
        field,
        `names no user of this host (${JSON.stringify(raw)} is not in /etc/passwd); give the numeric uid`,
      );
    return uid;
  }
  throw new FieldError(field, `must be a user name or a numeric uid, got ${describe(raw)}`);
}

/** Consul's `proxy.mode` values; "" and "direct" mean no interception. */
const PROXY_MODES = ['', 'direct', 'transparent'] as const;

function decodeSidecar(
  sc: Fields,
  servicePort: number | undefined,
  servicePath: string,
  serviceTransparent: { value: boolean; field: string } | undefined,
  checks: readonly Record<string, unknown>[],
  notes?: RemoraError[],
): SidecarDefinition {
  const proxy = sc.object('proxy');
  const cfg = proxy?.object('config');
  const mode = proxy?.oneOf('mode', PROXY_MODES);
  if (serviceTransparent && mode !== undefined && mode !== '') {
    if (serviceTransparent.value !== (mode === 'transparent')) {
      throw new FieldError(
        serviceTransparent.field,
        `is ${serviceTransparent.value} but ${proxy!.fieldPath('mode')} is ${JSON.stringify(mode)}; give one of them`,
      );
    }
  }
  const transparent = serviceTransparent?.value ?? mode === 'transparent';
  // Consul's "" is unset, like an absent field
  const mtls =
    proxy?.raw('mutual_tls_mode') === ''
      ? undefined
      : proxy?.oneOf('mutual_tls_mode', MUTUAL_TLS_MODES);
  const excludeInboundPorts = (cfg?.array('exclude_inbound_ports') ?? []).map((p, i) => {
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535)
      throw new FieldError(
        `${cfg!.fieldPath('exclude_inbound_ports')}[${i}]`,
        `must be a port from 1 to 65535, got ${describe(p)}`,
      );
    return p;
  });
  const derive = cfg?.raw('derive_upstreams');
  if (derive !== undefined && typeof derive !== 'boolean') {
    throw new FieldError(
      cfg!.fieldPath('derive_upstreams'),
      `must be true or false, got ${describe(derive)}`,
    );
  }
  const appUid = decodeAppUser(cfg);
  const metricsBind = cfg?.raw(METRICS_BIND_KEY);
  const metrics =
    metricsBind === undefined || metricsBind === null || metricsBind === ''
      ? null
      : metricsBindOf(metricsBind);
  if (typeof metrics === 'string') throw new FieldError(cfg!.fieldPath(METRICS_BIND_KEY), metrics);
  const inbound: InboundSettings = {};
  for (const [key, name, , min] of INBOUND_FIELDS) {
    const v = cfg?.int(name, min, INBOUND_LIMITS[key]);
    if (v !== undefined) inbound[key] = v;
  }
  const givenProtocol = cfg?.oneOf('protocol', PROTOCOLS);
  const localServicePort = proxy?.int('local_service_port', 1, 65535) ?? servicePort;
  if (localServicePort === undefined) {
    throw new FieldError(
      `${servicePath}.port`,
      'is required for a service with connect.sidecar_service (the proxy forwards to it)',
    );
  }
  const upstreams = (proxy?.array('upstreams') ?? []).map((u, i) =>
    decodeUpstream(u, `${proxy!.fieldPath('upstreams')}[${i}]`, transparent),
  );
  const sidecarPort = sc.int('port', 1, 65535) ?? null;
  const {
    paths: expose,
    checks: exposeChecks,
    checksGiven: exposeChecksGiven,
  } = decodeExpose(proxy?.object('expose'), sidecarPort, upstreams, checks, notes);
  const seen = new Map<number, number>();
  upstreams.forEach((u, i) => {
    if (u.localBindPort === 0) return;
    const prev = seen.get(u.localBindPort);
    if (prev !== undefined) {
      throw new FieldError(
        `${proxy!.fieldPath('upstreams')}[${i}].local_bind_port`,
        `${u.localBindPort} is already used by upstreams[${prev}]`,
      );
    }
    seen.set(u.localBindPort, i);
  });
  return {
    port: sidecarPort,
    address: address(sc, 'address') ?? null,
    localServiceAddress: address(proxy ?? sc, 'local_service_address') ?? '127.0.0.1',
    localServicePort,
    protocol: givenProtocol ?? DEFAULT_PROTOCOL,
    protocolGiven: givenProtocol !== undefined,
    upstreams,
    transparent,
    mutualTlsMode: mtls ?? null,
    excludeInboundPorts,
    deriveUpstreams: transparent && derive !== false,
    appUid,
    inbound,
    expose,
    exposeChecks,
    exposeChecksGiven,
    metrics,
  };
}

/**
 * `proxy.expose`: each path of the app served in plain HTTP on its own listener port of the
 * sidecar's address, and with `checks = true` the paths of the service's HTTP and gRPC checks
 * (their ports are the agent's to allocate).
 */
function decodeExpose(
  e: Fields | undefined,
  sidecarPort: number | null,
  upstreams: readonly UpstreamDefinition[],
  serviceChecks: readonly Record<string, unknown>[],
  notes: RemoraError[] | undefined,
): { paths: ExposePath[]; checks: CheckExposure[]; checksGiven: boolean } {
  if (e === undefined) return { paths: [], checks: [], checksGiven: false };
  const checks = e.raw('checks');
  if (checks !== undefined && checks !== null && typeof checks !== 'boolean')
    throw new FieldError(e.fieldPath('checks'), `must be true or false, got ${describe(checks)}`);
  const where = e.fieldPath('paths');
  const used = new Map<number, string>();
  if (sidecarPort !== null) used.set(sidecarPort, 'the sidecar port');
  for (const u of upstreams)
    if (u.localBindPort !== 0) used.set(u.localBindPort, `the upstream ${u.destinationName}`);
  const paths = (e.array('paths') ?? []).map((raw, i): ExposePath => {
    const path = `${where}[${i}]`;
    if (!isObj(raw)) throw new FieldError(path, `must be an object, got ${describe(raw)}`);
    const p = new Fields(raw, path);
    const value = p.string('path', true);
    const problem = exposePathProblem(value);
    if (problem !== null)
      throw new FieldError(p.fieldPath('path'), `${problem}, got ${JSON.stringify(value)}`);
    const listenerPort = p.int('listener_port', 1, 65535, true);
    const other = used.get(listenerPort);
    if (other !== undefined)
      throw new FieldError(
        p.fieldPath('listener_port'),
        `${listenerPort} is already used by ${other}`,
      );
    used.set(listenerPort, `${where}[${i}]`);
    return {
      path: value,
      localPathPort: p.int('local_path_port', 1, 65535, true),
      listenerPort,
      protocol: p.oneOf('protocol', EXPOSE_PROTOCOLS) ?? 'http',
    };
  });
  return {
    paths,
    checks: checks === true ? checkExposures(serviceChecks, e.fieldPath('checks'), notes) : [],
    checksGiven: checks === true,
  };
}

function decodeChecks(f: Fields): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const one = f.raw('check');
  if (one !== undefined && one !== null) {
    if (!isObj(one))
      throw new FieldError(f.fieldPath('check'), `must be an object, got ${describe(one)}`);
    out.push(one);
  }
  (f.array('checks') ?? []).forEach((c, i) => {
    if (!isObj(c))
      throw new FieldError(
        `${f.fieldPath('checks')}[${i}]`,
        `must be an object, got ${describe(c)}`,
      );
    out.push(c);
  });
  return out;
}

function decodeService(
  raw: Json,
  path: string,
  file: string,
  index: number,
  notes?: RemoraError[],
): ServiceDefinition {
  if (!isObj(raw)) throw new FieldError(path, `must be an object, got ${describe(raw)}`);
  const f = new Fields(raw, path);
  const serviceName = name(f, 'name', true);
  const id = f.string('id') ?? serviceName;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) {
    throw new FieldError(
      f.fieldPath('id'),
      `must be 1–128 letters, digits, ".", "-" or "_" starting with a letter or digit, got ${JSON.stringify(id)}`,
    );
  }
  const port = f.int('port', 1, 65535);
  const kind = f.string('kind');
  if (kind !== undefined && kind !== '' && kind !== 'typical') {
    if (kind !== 'ingress-gateway' && kind !== 'terminating-gateway')
      throw new FieldError(
        f.fieldPath('kind'),
        `${JSON.stringify(kind)} is not supported; Remora runs services, their sidecars, ingress gateways ("ingress-gateway") and terminating gateways ("terminating-gateway"); mesh and API gateways are not built`,
      );
    for (const key of ['connect', 'transparent'])
      if (f.has(key))
        throw new FieldError(
          f.fieldPath(key),
          kind === 'ingress-gateway'
            ? 'cannot be set on an ingress gateway: its listeners and services come from its ingress-gateway config entry'
            : 'cannot be set on a terminating gateway: the services it links come from its terminating-gateway config entry',
        );
    if (kind === 'terminating-gateway' && port === undefined)
      throw new FieldError(
        f.fieldPath('port'),
        'is required on a terminating gateway: mesh callers reach it there (its mTLS listener); set "port"',
      );
  }
  const tags = f.array('tags') ?? [];
  tags.forEach((t, i) => {
    if (typeof t !== 'string')
      throw new FieldError(`${f.fieldPath('tags')}[${i}]`, `must be a string, got ${describe(t)}`);
  });
  const connect = f.object('connect');
  if (connect?.has('native') && connect.raw('native') === true) {
    throw new FieldError(
      connect.fieldPath('native'),
      'Connect-native services are not supported; use sidecar_service',
    );
  }
  const sc = connect?.object('sidecar_service');
  const meta = stringMap(f, 'meta');
  const transparentRaw = f.raw('transparent');
  if (transparentRaw !== undefined && transparentRaw !== null) {
    if (typeof transparentRaw !== 'boolean')
      throw new FieldError(
        f.fieldPath('transparent'),
        `must be true or false, got ${describe(transparentRaw)}`,
      );
    if (transparentRaw && !sc)
      throw new FieldError(
        f.fieldPath('transparent'),
        'needs connect.sidecar_service (the proxy is what the traffic is steered to)',
      );
  }
  const checks = decodeChecks(f);
  const common = {
    id,
    name: serviceName,
    address: address(f, 'address') ?? null,
    port: port ?? 0,
    tags: tags as string[],
    meta,
    checks,
    source: { file, index },
  };
  if (kind === 'ingress-gateway' || kind === 'terminating-gateway')
    return { ...common, sidecar: gatewayProxy(port ?? 0), kind };
  const serviceTransparent =
    typeof transparentRaw === 'boolean'
      ? { value: transparentRaw, field: f.fieldPath('transparent') }
      : undefined;
  return {
    ...common,
    sidecar: sc ? decodeSidecar(sc, port, path, serviceTransparent, checks, notes) : null,
  };
}

/** An ingress gateway's proxy settings: no app, no upstreams of its own, no interception. */
function gatewayProxy(port: number): SidecarDefinition {
  return {
    port,
    address: null,
    localServiceAddress: '127.0.0.1',
    localServicePort: port,
    protocol: DEFAULT_PROTOCOL,
    protocolGiven: true,
    upstreams: [],
    transparent: false,
    excludeInboundPorts: [],
    deriveUpstreams: false,
    appUid: null,
    inbound: {},
    expose: [],
    exposeChecks: [],
    exposeChecksGiven: false,
    metrics: null,
    mutualTlsMode: null,
  };
}

function problem(
  file: string,
  field: string,
  reason: string,
  extra: Record<string, unknown> = {},
): RemoraError {
  return new RemoraError(
    'REMORA_E_AGENT_DEFINITION_INVALID',
    `service definition ${file}: field ${field} ${reason}; the service is skipped, the others are not affected`,
    { file, field, reason, ...extra },
  );
}

/** Decodes one file's text. Never throws. */
export function decodeDefinitionFile(text: string, file: string): DecodeResult {
  let doc: Json;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return {
      services: [],
      problems: [
        new RemoraError(
          'REMORA_E_AGENT_DEFINITION_UNREADABLE',
          `service definition ${file} is not valid JSON (${(err as Error).message}); its services are skipped`,
          { file, field: '', reason: (err as Error).message },
        ),
      ],
    };
  }
  if (!isObj(doc)) {
    return {
      services: [],
      problems: [
        problem(
          file,
          '(top level)',
          `must be an object with "service" or "services", got ${describe(doc)}`,
        ),
      ],
    };
  }
  let top: Fields;
  try {
    top = new Fields(doc, '');
  } catch (err) {
    const e = err as FieldError;
    return { services: [], problems: [problem(file, e.field, e.message)] };
  }
  const entries: { raw: Json; path: string }[] = [];
  if (top.has('service')) entries.push({ raw: top.raw('service'), path: top.fieldPath('service') });
  const many = top.raw('services');
  if (many !== undefined && many !== null) {
    if (!Array.isArray(many)) {
      return {
        services: [],
        problems: [
          problem(file, top.fieldPath('services'), `must be an array, got ${describe(many)}`),
        ],
      };
    }
    many.forEach((raw, i) => entries.push({ raw, path: `${top.fieldPath('services')}[${i}]` }));
  }
  if (entries.length === 0) {
    return {
      services: [],
      problems: [problem(file, '(top level)', 'has neither "service" nor "services"')],
    };
  }
  const services: ServiceDefinition[] = [];
  const problems: RemoraError[] = [];
  entries.forEach(({ raw, path }, index) => {
    try {
      // what the service asks for that Remora does not apply: reported, the service still runs
      const notes: RemoraError[] = [];
      services.push(decodeService(raw, path, file, index, notes));
      problems.push(
        ...notes.map(
          (n) =>
            new RemoraError(n.code, `service definition ${file}: field ${n.message}`, {
              file,
              index,
              ...n.details,
            }),
        ),
      );
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      problems.push(problem(file, err.field, err.message, { index }));
    }
  });
  return { services, problems };
}

/**
 * The ports a definition's proxy listens on at the host's proxy address: its sidecar port when
 * given and its exposed paths' listener ports, each with what it is.
 */
function hostListeners(s: ServiceDefinition): [number, string][] {
  const sc = s.sidecar;
  if (!sc) return [];
  return [
    ...(sc.port !== null && sc.port !== 0
      ? [[sc.port, 'its sidecar port'] as [number, string]]
      : []),
    ...sc.expose.map((p): [number, string] => [p.listenerPort, `its exposed path ${p.path}`]),
  ];
}

/**
 * Merges the services of several files (in file-name order): an instance ID, an upstream local
 * address and port, or a port the proxies listen on at the proxy address (sidecar port, exposed
 * path) used twice on the host keeps its first definition and reports the later one.
 */
export function mergeDefinitions(results: readonly DecodeResult[]): DecodeResult {
  const services: ServiceDefinition[] = [];
  const problems: RemoraError[] = [];
  const ids = new Map<string, ServiceDefinition>();
  const ports = new Map<string, ServiceDefinition>();
  /** Ports the proxies listen on at the proxy address (sidecar ports, exposed paths). */
  const listening = new Map<number, { id: string; what: string }>();
  for (const r of results) {
    problems.push(...r.problems);
    for (const s of r.services) {
      const prev = ids.get(s.id);
      if (prev) {
        problems.push(
          new RemoraError(
            'REMORA_E_AGENT_DEFINITION_DUPLICATE',
            `service definition ${s.source.file}: instance ID ${JSON.stringify(s.id)} is already defined in ${prev.source.file}; this one is skipped`,
            {
              file: s.source.file,
              field: 'id',
              reason: 'duplicate',
              value: s.id,
              other: prev.source.file,
            },
          ),
        );
        continue;
      }
      const upstreamPorts = (s.sidecar?.upstreams ?? []).filter((u) => u.localBindPort !== 0);
      const clash = upstreamPorts
        .map((u) => `${u.localBindAddress}:${u.localBindPort}`)
        .find((k) => ports.has(k));
      // every proxy of the host listens on the same proxy address: one port, one listener
      const taken = hostListeners(s).find(([port]) => listening.has(port));
      if (clash === undefined && taken !== undefined) {
        const [port, what] = taken;
        const other = listening.get(port)!;
        problems.push(
          new RemoraError(
            'REMORA_E_AGENT_DEFINITION_DUPLICATE',
            `service definition ${s.source.file}: port ${port}, ${what} of ${s.id}, is already ${other.what} of ${other.id}; this one is skipped (give each listener of the host its own port)`,
            {
              file: s.source.file,
              field: 'port',
              reason: 'duplicate',
              value: port,
              other: other.id,
            },
          ),
        );
        continue;
      }
      if (clash) {
        problems.push(
          new RemoraError(
            'REMORA_E_AGENT_DEFINITION_DUPLICATE',
            `service definition ${s.source.file}: upstream listener ${clash} of ${s.id} is already used by ${ports.get(clash)!.id}; this one is skipped`,
            { file: s.source.file, field: 'local_bind_port', reason: 'duplicate', value: clash },
          ),
        );
        continue;
      }
      ids.set(s.id, s);
      for (const u of upstreamPorts) ports.set(`${u.localBindAddress}:${u.localBindPort}`, s);
      for (const [port, what] of hostListeners(s))
        listening.set(port, { id: s.id, what: what.replace(/^its /, 'the ') });
      services.push(s);
    }
  }
  return { services, problems };
}

/** True when two definitions would register and configure the same thing (source aside). */
export function sameDefinition(a: ServiceDefinition, b: ServiceDefinition): boolean {
  return JSON.stringify({ ...a, source: null }) === JSON.stringify({ ...b, source: null });
}
