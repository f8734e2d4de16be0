// A service's protocol from Consul's configuration entries, as Consul's own proxies read it:
// `service-defaults` of the service (`Protocol`), else `proxy-defaults` (`Config.protocol` of the
// entry named `global`). A definition's own `proxy.config.protocol` wins over both (the agent
// decides that, docs/agent.md "Protocols"). Also the caller's upstream settings from its
// service-defaults `UpstreamConfig` (`Defaults`, `Overrides` by destination name), which the
// agent layers under each upstream's own `config`. And a destination's `service-resolver`:
// `ConnectTimeout`, `RequestTimeout` and `LoadBalancer.Policy`, which win over what callers set (as
// Consul's resolver does), and its `Subsets` (instances picked by a filter) and `DefaultSubset`.
// And a destination's `service-router` (which requests go to which service or subset) and
// `service-splitter` (the share of its calls that goes to each, with header changes). Five
// blocking watches, one per kind, serve every instance on the host (and the `jwt-provider`
// entries, agent/jwt-providers.ts); the last answer is cached in
// the data directory so a restarted agent builds the same snapshots before Consul answers.
import { isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import {
  type AccessLogConfig,
  type ExposePath,
  type InboundSettings,
  type MeshTlsConfig,
  type MetricsListener,
  type MutualTlsMode,
  type Protocol,
} from '../lib/proxy-api/index.ts';
import { checkUpstreamLayer, METRICS_BIND_KEY, metricsBindOf } from './definitions.ts';
import { writeFileAtomic, type DataPaths } from './files.ts';
import type { ConfigEntry, ConsulPort } from './ports.ts';
import { asProtocol } from './transparent/derive.ts';
import { knownProtocol } from '../lib/consul/protocol.ts';
import { JWT_PROVIDER, jwtProviderSettings, type JwtProviderSettings } from './jwt-providers.ts';
import { consulExposeOf, exposeLayerOf, type ExposeLayer } from './central-expose.ts';
import { aliased, isLayer, own, type Layer } from './central-config/entry.ts';
import {
  checkedResolver,
  resolverSettings,
  type ResolverSettings,
} from './central-config/resolver.ts';
import { checkedSplits, splitterShares, type SplitShare } from './central-config/splitter.ts';
import { checkedRoutes, routerRoutes, type RouteEntry } from './central-config/router.ts';
import { danglingSubsets, redirectLoop } from './central-config/chain.ts';
import {
  allowPermissiveOf,
  checkedMeshTls,
  meshDestinationsOnlyOf,
  meshTlsOf,
  sanitizeClientCertOf,
} from './central-config/mesh.ts';
import { mutualTlsOf, type MutualTlsSource } from './central-config/mutual-tls.ts';
import {
  cachedInboundFields,
  inboundOf,
  upstreamConfig,
  type UpstreamLayers,
} from './central-config/service-defaults.ts';
import { accessLogsOf, checkedAccessLogs } from './central-config/access-logs.ts';

export { subsetFilter } from './central-config/subsets.ts';
export { headerModifiers } from './central-config/headers.ts';
export { resolverSettings, subsetExpr } from './central-config/resolver.ts';
export type { ResolverSettings, ResolverTarget } from './central-config/resolver.ts';
export { splitterShares } from './central-config/splitter.ts';
export type { SplitShare } from './central-config/splitter.ts';
export { routerRoutes } from './central-config/router.ts';
export type { RouteEntry } from './central-config/router.ts';
export {
  danglingSubsets,
  failoverTargets,
  flattenSplits,
  followRedirects,
  isWhole,
  parseTargetName,
  redirectLoop,
  resolveShares,
  resolveTarget,
  targetName,
} from './central-config/chain.ts';
export type { Share } from './central-config/chain.ts';
export { resolveMutualTlsMode } from './central-config/mutual-tls.ts';
export type { MutualTlsResolution, MutualTlsSource } from './central-config/mutual-tls.ts';

export const SERVICE_DEFAULTS = 'service-defaults';
export const PROXY_DEFAULTS = 'proxy-defaults';
export const SERVICE_RESOLVER = 'service-resolver';
export const SERVICE_SPLITTER = 'service-splitter';
export const SERVICE_ROUTER = 'service-router';
export const MESH = 'mesh';
const KINDS = [
  SERVICE_DEFAULTS,
  PROXY_DEFAULTS,
  SERVICE_RESOLVER,
  SERVICE_SPLITTER,
  SERVICE_ROUTER,
  MESH,
  JWT_PROVIDER,
];
const CACHE_NAME = 'central-config';

export interface CentralConfig {
  /** The protocol Consul's entries give `service`, or null when they give none (or none is known yet). */
  protocol(service: string): Protocol | null;
  /**
   * True once the protocols are known: from the cache of an earlier run, from Consul's answers
   * to every watch, or after a failed query (the agent then proceeds with what it knows).
   */
  settled(): boolean;
  /**
   * The upstream settings `source`'s service-defaults give for calls to `destination`, lowest
   * first: UpstreamConfig `Defaults`, then the `Overrides` item naming it. Bad layers are left
   * out (and reported).
   */
  upstreamLayers(source: string, destination: string): Record<string, unknown>[];
  /**
   * What `service`'s service-defaults set for its own proxy's inbound (`LocalConnectTimeoutMs`,
   * `LocalRequestTimeoutMs`, `MaxInboundConnections`); null when they set none.
   */
  inbound(service: string): InboundSettings | null;
  /** Where every proxy writes access logs (proxy-defaults `AccessLogs`); null when off. */
  accessLogs(): AccessLogConfig | null;
  /** The TLS versions and suites of every sidecar (the `mesh` entry's `TLS`); null when unset. */
  meshTls(): MeshTlsConfig | null;
  /**
   * The `mesh` entry's `TransparentProxy.MeshDestinationsOnly`: apps in transparent mode reach
   * only mesh destinations (docs/transparent.md). False when unset or not a boolean.
   */
  meshDestinationsOnly(): boolean;
  /**
   * The `MutualTLSMode` Consul's entries give `service`'s sidecars: its service-defaults', else
   * proxy-defaults' (with where it comes from); null when neither sets one. Whether permissive
   * may apply is `resolveMutualTlsMode`'s to say.
   */
  mutualTlsMode(service: string): { mode: MutualTlsMode; source: MutualTlsSource } | null;
  /** The `mesh` entry's `AllowEnablingPermissiveMutualTLS`; false when unset. */
  allowPermissiveMutualTls(): boolean;
  /** proxy-defaults `Config.envoy_prometheus_bind_addr`: every proxy's public /metrics; null when unset. */
  metricsBind(): MetricsListener | null;
  /**
   * The `Expose` blocks of `service`'s service-defaults and of proxy-defaults, checked (each
   * null when unset); the agent merges them under the definition's (agent/central-expose.ts).
   */
  expose(service: string): {
    serviceDefaults: ExposeLayer | null;
    proxyDefaults: ExposeLayer | null;
  };
  /**
   * The `mesh` entry's `HTTP.SanitizeXForwardedClientCert`: sidecars hand their apps no
   * `x-forwarded-client-cert`. False when unset or not a boolean.
   */
  sanitizeClientCert(): boolean;
  /** What `destination`'s service-resolver sets for its callers; null when it has none. */
  resolver(destination: string): ResolverSettings | null;
  /** `destination`'s service-splitter shares (weights add up to 100); null when it has none. */
  splitter(destination: string): SplitShare[] | null;
  /** `destination`'s service-router routes, first match wins; null when it has none. */
  router(destination: string): RouteEntry[] | null;
  /** The `jwt-provider` entries Remora can apply, checked (bad ones are left out and reported). */
  jwtProviders(): JwtProviderSettings[];
  /** True once Consul answered every watch in this run. */
  synced(): boolean;
  /** Invalid protocol values seen in the entries (for `remora status`). */
  problems(): RemoraError[];
  start(): void;
  stop(): void;
}

interface Protocols {
  services: Record<string, Protocol>;
  global: Protocol | null;
  /** By source service: its UpstreamConfig, checked. */
  upstreams: Record<string, UpstreamLayers>;
  /** By service: the inbound settings of its service-defaults, checked. */
  inbound: Record<string, InboundSettings>;
  /** proxy-defaults `AccessLogs`, checked; null when off. */
  accessLogs: AccessLogConfig | null;
  /** The `mesh` entry's `TLS`, checked; null when it sets nothing Remora applies. */
  meshTls: MeshTlsConfig | null;
  /** The `mesh` entry's `TransparentProxy.MeshDestinationsOnly`, checked. */
  meshDestinationsOnly: boolean;
  /** By service: the `MutualTLSMode` of its service-defaults, checked. */
  mutualTls: Record<string, MutualTlsMode>;
  /** proxy-defaults `MutualTLSMode`, checked; null when unset. */
  globalMutualTls: MutualTlsMode | null;
  /** The `mesh` entry's `AllowEnablingPermissiveMutualTLS`. */
  allowPermissive: boolean;
  /** The `mesh` entry's `HTTP.SanitizeXForwardedClientCert`. */
  sanitizeClientCert: boolean;
  /** proxy-defaults `Config.envoy_prometheus_bind_addr`, checked. */
  metricsBind: MetricsListener | null;
  /** By service: the `Expose` of its service-defaults, checked. */
  expose: Record<string, ExposeLayer>;
  /** proxy-defaults `Expose`, checked; null when unset. */
  globalExpose: ExposeLayer | null;
  /** By destination service: its service-resolver's settings, checked. */
  resolvers: Record<string, ResolverSettings>;
  /** By destination service: its service-splitter's shares, checked. */
  splitters: Record<string, SplitShare[]>;
  /** By destination service: its service-router's routes, checked. */
  routers: Record<string, RouteEntry[]>;
  /** The `jwt-provider` entries as Consul gives them (without indexes), checked when used. */
  jwtEntries: Layer[];
}

/** A cached `envoy_prometheus_bind_addr`, checked again. */
function checkedMetricsBind(v: unknown): MetricsListener | null {
  if (!isLayer(v)) return null;
  const address = String(v.bindAddress);
  const m = metricsBindOf(
    `${isIP(address) === 6 ? `[${address}]` : address}:${String(v.bindPort)}`,
  );
  return typeof m === 'string' ? null : m;
}

/** A cached `Expose` layer, checked again as Consul's answer would be. */
function checkedExpose(v: unknown): ExposeLayer | null {
  if (!isLayer(v)) return null;
  const paths = Array.isArray(v.paths) ? (v.paths.filter(isLayer) as unknown as ExposePath[]) : [];
  return exposeLayerOf(consulExposeOf({ checks: v.checks === true, paths }), '', '', new Map());
}

/** The entries of a cached map that `check` keeps (checked copies), by the same names. */
function keepChecked<T>(v: unknown, check: (x: unknown) => T | null): Record<string, T> {
  const out: Record<string, T> = {};
  if (!isLayer(v)) return out;
  for (const [name, x] of Object.entries(v)) {
    const ok = check(x);
    if (ok) out[name] = ok;
  }
  return out;
}

function readCache(path: string): Protocols | null {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as Partial<Protocols>;
    const services: Record<string, Protocol> = {};
    for (const [name, raw] of Object.entries(v.services ?? {})) {
      const p = asProtocol(raw);
      if (p) services[name] = p;
    }
    const upstreams: Protocols['upstreams'] = {};
    for (const [name, u] of Object.entries(v.upstreams ?? {})) {
      const defaults =
        u?.defaults && checkUpstreamLayer(u.defaults, '') === null ? u.defaults : null;
      const overrides: Record<string, Layer> = {};
      for (const [dest, l] of Object.entries(u?.overrides ?? {}))
        if (checkUpstreamLayer(l, '') === null) overrides[dest] = l;
      upstreams[name] = { defaults, overrides };
    }
    const inbound = keepChecked(v.inbound, (x) => {
      const settings = isLayer(x) ? inboundOf(cachedInboundFields(x)) : {};
      return Object.keys(settings).length > 0 ? settings : null;
    });
    const resolvers = keepChecked(v.resolvers, checkedResolver);
    const splitters = keepChecked(v.splitters, checkedSplits);
    const routers = keepChecked(v.routers, checkedRoutes);
    return {
      services,
      global: asProtocol(v.global),
      upstreams,
      inbound,
      accessLogs: checkedAccessLogs(v.accessLogs),
      meshTls: checkedMeshTls(v.meshTls),
      meshDestinationsOnly: v.meshDestinationsOnly === true,
      mutualTls: keepChecked(v.mutualTls, (x) => mutualTlsOf(x, '', new Map(), '')),
      globalMutualTls: mutualTlsOf(v.globalMutualTls, '', new Map(), ''),
      allowPermissive: v.allowPermissive === true,
      sanitizeClientCert: v.sanitizeClientCert === true,
      metricsBind: checkedMetricsBind(v.metricsBind),
      expose: keepChecked(v.expose, checkedExpose),
      globalExpose: checkedExpose(v.globalExpose),
      resolvers,
      splitters,
      routers,
      jwtEntries: Array.isArray(v.jwtEntries) ? v.jwtEntries.filter(isLayer) : [],
    };
  } catch {
    return null;
  }
}

/** `danglingSubsets` of every service with a splitter or a router, and redirect loops. */
function allDanglingSubsets(k: Protocols): Map<string, string> {
  const resolver = (n: string) => own(k.resolvers, n);
  const found = new Map<string, string>();
  for (const name of Object.keys(k.resolvers))
    for (const [key, problem] of redirectLoop(name, resolver)) found.set(key, problem);
  for (const name of new Set([...Object.keys(k.splitters), ...Object.keys(k.routers)]))
    for (const [key, problem] of danglingSubsets(
      name,
      own(k.splitters, name),
      own(k.routers, name),
      resolver,
    ))
      found.set(key, problem);
  return found;
}

export function createCentralConfig(o: {
  consul: ConsulPort;
  paths: DataPaths;
  logger: Logger;
  /** The agent's datacenter: a redirect or failover target naming it stays local. */
  datacenter?: string;
  /** Called after the protocols changed (not for an answer equal to what is known). */
  onChange(): void;
}): CentralConfig {
  const cached = readCache(o.paths.cache(CACHE_NAME));
  let known: Protocols = cached ?? {
    services: {},
    global: null,
    upstreams: {},
    inbound: {},
    accessLogs: null,
    meshTls: null,
    meshDestinationsOnly: false,
    mutualTls: {},
    globalMutualTls: null,
    allowPermissive: false,
    sanitizeClientCert: false,
    metricsBind: null,
    expose: {},
    globalExpose: null,
    resolvers: {},
    splitters: {},
    routers: {},
    jwtEntries: [],
  };
  let settled = cached !== null;
  let jwtChecked: { from: Layer[]; settings: JwtProviderSettings[] } | null = null;
  /** `known` changed before every kind was heard from, and the agent was not told yet. */
  let unannounced = false;
  const answered = new Set<string>();
  /** Kinds Consul answered or failed to answer: once all are heard from, answers are acted on. */
  const heard = new Set<string>();
  const invalid = new Map<string, RemoraError>();
  const handles: { stop(): void }[] = [];
  const errors = new Map<string, number>();
  let stopped = false;

  /**
   * Replaces the problems of one kind (keys starting with one of `prefixes`) with `found`; a problem is
   * logged when it first appears, not on every answer that still carries it.
   */
  function report(prefixes: string[], found: Map<string, string>): void {
    for (const key of [...invalid.keys()])
      if (prefixes.some((p) => key.startsWith(p)) && !found.has(key)) invalid.delete(key);
    for (const [key, message] of found) {
      if (invalid.get(key)?.message === message) continue;
      const e = new RemoraError('REMORA_E_AGENT_CENTRAL_CONFIG_INVALID', message, { entry: key });
      invalid.set(key, e);
      logError(o.logger, e, undefined, 'warn');
    }
  }

  function invalidMessage(what: string, raw: unknown): string {
    return `${what} sets protocol ${JSON.stringify(raw)}, which is not one of tcp, http, http2, grpc; the value is ignored`;
  }

  /** Marks the protocols known; true when that is news (the agent then builds snapshots). */
  function settle(): boolean {
    if (settled) return false;
    settled = true;
    return true;
  }

  function set(next: Protocols): void {
    const settling = answered.size === KINDS.length && settle();
    // a change seen while only one kind had answered is acted on with the other kind's answer
    const changed = unannounced || JSON.stringify(next) !== JSON.stringify(known);
    known = next;
    // half an answer is neither cached nor acted on: the other kind may change the picture
    if (heard.size < KINDS.length) {
      unannounced = changed;
      return;
    }
    unannounced = false;
    report(['x/'], allDanglingSubsets(next));
    if (changed) {
      o.logger.info(
        { services: Object.keys(next.services).length, global: next.global },
        'protocols from Consul config entries changed',
      );
    }
    if (changed || settling)
      writeFileAtomic(o.paths.cache(CACHE_NAME), JSON.stringify(next), 0o600).catch(
        (err: unknown) => logError(o.logger, err, 'cannot cache the config entries', 'warn'),
      );
    if (changed || settling) o.onChange();
  }

  function onServiceDefaults(entries: ConfigEntry[]): void {
    const services: Record<string, Protocol> = {};
    const upstreams: Protocols['upstreams'] = {};
    const inbound: Protocols['inbound'] = {};
    const mutualTls: Protocols['mutualTls'] = {};
    const expose: Protocols['expose'] = {};
    const found = new Map<string, string>();
    for (const e of entries) {
      const ex = exposeLayerOf(
        aliased(e as unknown as Layer, 'Expose', 'expose'),
        `service-defaults of ${e.Name}`,
        `e/${e.Name}`,
        found,
      );
      if (ex) expose[e.Name] = ex;
      const u = upstreamConfig(e, found);
      if (u) upstreams[e.Name] = u;
      const ib = inboundOf(e, { map: found, name: e.Name });
      if (Object.keys(ib).length > 0) inbound[e.Name] = ib;
      const mtls = mutualTlsOf(
        aliased(e as unknown as Layer, 'MutualTLSMode', 'mutual_tls_mode'),
        `service-defaults of ${e.Name}`,
        found,
        `t/${e.Name}`,
      );
      if (mtls) mutualTls[e.Name] = mtls;
      if (e.Protocol === undefined || e.Protocol === '') continue;
      const p = knownProtocol(e.Protocol);
      if (p) services[e.Name] = p;
      else found.set(`s/${e.Name}`, invalidMessage(`service-defaults of ${e.Name}`, e.Protocol));
    }
    report(['s/', 'u/', 'i/', 't/', 'e/'], found);
    set({ ...known, services, upstreams, inbound, mutualTls, expose });
  }

  function onProxyDefaults(entries: ConfigEntry[]): void {
    const entry = entries.find((e) => e.Name === 'global');
    const raw = entry?.Config?.protocol;
    let global: Protocol | null = null;
    const found = new Map<string, string>();
    if (raw !== undefined && raw !== '') {
      global = knownProtocol(raw);
      if (!global) found.set('global', invalidMessage('proxy-defaults global', raw));
    }
    const accessLogs = accessLogsOf(entry?.AccessLogs, found);
    const globalMutualTls = entry
      ? mutualTlsOf(
          aliased(entry as unknown as Layer, 'MutualTLSMode', 'mutual_tls_mode'),
          'proxy-defaults global',
          found,
          'global/mtls',
        )
      : null;
    const metricsRaw = entry?.Config?.[METRICS_BIND_KEY];
    let metricsBind: MetricsListener | null = null;
    if (metricsRaw !== undefined && metricsRaw !== null && metricsRaw !== '') {
      const m = metricsBindOf(metricsRaw);
      if (typeof m === 'string')
        found.set(
          'global/metrics',
          `proxy-defaults global: Config.${METRICS_BIND_KEY} ${m}; no proxy serves /metrics beyond its loopback admin API unless its definition sets it`,
        );
      else metricsBind = m;
    }
    const globalExpose = entry
      ? exposeLayerOf(
          aliased(entry as unknown as Layer, 'Expose', 'expose'),
          'proxy-defaults global',
          'global/expose',
          found,
        )
      : null;
    report(['global', 'logs'], found);
    set({ ...known, global, accessLogs, globalMutualTls, metricsBind, globalExpose });
  }

  function onMesh(entries: ConfigEntry[]): void {
    const entry = entries.find((e) => e.Name === 'mesh') ?? entries[0];
    const found = new Map<string, string>();
    const meshTls = meshTlsOf(entry?.TLS, found);
    const meshDestinationsOnly = meshDestinationsOnlyOf(entry, found);
    const allowPermissive = allowPermissiveOf(entry, found);
    const sanitizeClientCert = sanitizeClientCertOf(entry, found);
    report(['mesh'], found);
    set({ ...known, meshTls, meshDestinationsOnly, allowPermissive, sanitizeClientCert });
  }

  function onJwtProviders(entries: ConfigEntry[]): void {
    const found = new Map<string, string>();
    const jwtEntries: Layer[] = [];
    for (const e of [...entries].sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0))) {
      const { CreateIndex: _c, ModifyIndex: _m, ...rest } = e as unknown as Layer;
      jwtProviderSettings(rest, found);
      jwtEntries.push(rest);
    }
    report(['j/'], found);
    set({ ...known, jwtEntries });
  }

  /**
   * The watch handler of a kind read per destination service: each entry through `read` (which
   * reports what it cannot apply in `found`), the problems under `prefix`, the result as `key`.
   */
  function perService<K extends 'resolvers' | 'splitters' | 'routers'>(
    key: K,
    prefix: string,
    read: (e: ConfigEntry, found: Map<string, string>) => Protocols[K][string] | null,
  ): (entries: ConfigEntry[]) => void {
    return (entries) => {
      const byName: Protocols[K] = {};
      const found = new Map<string, string>();
      for (const e of entries) {
        const v = read(e, found);
        if (v) byName[e.Name] = v;
      }
      report([prefix], found);
      set({ ...known, [key]: byName });
    };
  }

  /** Kinds a Consul refused as unknown (older than the kind), read as having no entries. */
  const unknownKinds = new Set<string>();

  /**
   * `optional`: a kind older Consul versions do not know (`jwt-provider` came with 1.16); their
   * 400 for it reads as no entries instead of an outage.
   */
  function watch(kind: string, onChange: (entries: ConfigEntry[]) => void, optional = false): void {
    handles.push(
      o.consul.watchConfigEntries(kind, {
        onChange(entries) {
          if (stopped) return;
          unknownKinds.delete(kind);
          if ((errors.get(kind) ?? 0) > 0)
            o.logger.info({ kind }, `Consul answers again for ${kind}`);
          errors.set(kind, 0);
          answered.add(kind);
          heard.add(kind);
          onChange(entries);
        },
        onError(err) {
          if (stopped) return;
          if (optional && toRemoraError(err).details.status === 400) {
            if (!unknownKinds.has(kind))
              o.logger.info(
                { kind },
                `Consul does not know ${kind} config entries (a version before the kind); read as none`,
              );
            unknownKinds.add(kind);
            answered.add(kind);
            heard.add(kind);
            onChange([]);
            return;
          }
          const n = errors.get(kind) ?? 0;
          errors.set(kind, n + 1);
          heard.add(kind);
          // Consul cannot be asked: proceed with what is known (Remora's default, tcp)
          if (settle()) o.onChange();
          if (n % 20 !== 0) return;
          logError(
            o.logger,
            new RemoraError(
              'REMORA_E_AGENT_CONSUL_UNAVAILABLE',
              `cannot watch Consul's ${kind} config entries: ${toRemoraError(err).message}; keeping the protocols last known`,
              { kind },
              { cause: err },
            ),
            undefined,
            'warn',
          );
        },
      }),
    );
  }

  return {
    protocol: (service) => own(known.services, service) ?? known.global,
    upstreamLayers(source, destination) {
      const u = own(known.upstreams, source);
      if (!u) return [];
      const o = own(u.overrides, destination);
      return u.defaults ? (o ? [u.defaults, o] : [u.defaults]) : o ? [o] : [];
    },
    inbound: (service) => own(known.inbound, service),
    accessLogs: () => known.accessLogs,
    meshTls: () => known.meshTls,
    meshDestinationsOnly: () => known.meshDestinationsOnly,
    mutualTlsMode(service) {
      const own_ = own(known.mutualTls, service);
      if (own_) return { mode: own_, source: 'service-defaults' };
      return known.globalMutualTls
        ? { mode: known.globalMutualTls, source: 'proxy-defaults' }
        : null;
    },
    allowPermissiveMutualTls: () => known.allowPermissive,
    sanitizeClientCert: () => known.sanitizeClientCert,
    metricsBind: () => known.metricsBind,
    expose: (service) => ({
      serviceDefaults: own(known.expose, service),
      proxyDefaults: known.globalExpose,
    }),
    resolver: (destination) => own(known.resolvers, destination),
    splitter: (destination) => own(known.splitters, destination),
    router: (destination) => own(known.routers, destination),
    jwtProviders() {
      if (jwtChecked?.from !== known.jwtEntries) {
        const settings: JwtProviderSettings[] = [];
        for (const e of known.jwtEntries) {
          const x = jwtProviderSettings(e);
          if (x) settings.push(x);
        }
        jwtChecked = { from: known.jwtEntries, settings };
      }
      return jwtChecked.settings;
    },
    settled: () => settled,
    synced: () => answered.size === KINDS.length,
    problems: () => [...invalid.values()],
    start() {
      if (handles.length > 0 || stopped) return;
      watch(SERVICE_DEFAULTS, onServiceDefaults);
      watch(PROXY_DEFAULTS, onProxyDefaults);
      watch(
        SERVICE_RESOLVER,
        perService('resolvers', 'r/', (e, found) => resolverSettings(e, found, o.datacenter)),
      );
      watch(SERVICE_SPLITTER, perService('splitters', 'p/', splitterShares));
      watch(SERVICE_ROUTER, perService('routers', 'o/', routerRoutes));
      watch(MESH, onMesh);
      watch(JWT_PROVIDER, onJwtProviders, true);
    },
    stop() {
      stopped = true;
      for (const h of handles.splice(0)) h.stop();
    },
  };
}
