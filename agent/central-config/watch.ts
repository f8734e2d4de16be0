// The live central config: one blocking watch per config entry kind, serving every instance on
// the host, each answer checked (what cannot apply is reported) and the last cached in the data
// directory, so a restarted agent builds the same snapshots before Consul answers.
import { RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import { logError, type Logger } from '../../lib/log/index.ts';
import type {
  AccessLogConfig,
  InboundSettings,
  MeshTlsConfig,
  MetricsListener,
  MutualTlsMode,
  Protocol,
} from '../../lib/proxy-api/index.ts';
import { METRICS_BIND_KEY, metricsBindOf } from '../definitions.ts';
import { writeFileAtomic, type DataPaths } from '../files.ts';
import type { ConfigEntry, ConsulPort } from '../ports.ts';
import { knownProtocol } from '../../lib/consul/protocol.ts';
import { JWT_PROVIDER, jwtProviderSettings, type JwtProviderSettings } from '../jwt-providers.ts';
import { exposeLayerOf, type ExposeLayer } from '../central-expose.ts';
import { aliased, own, type Layer } from './entry.ts';
import { resolverSettings, type ResolverSettings } from './resolver.ts';
import { splitterShares, type SplitShare } from './splitter.ts';
import { routerRoutes, type RouteEntry } from './router.ts';
import { danglingSubsets, redirectLoop } from './chain.ts';
import {
  allowPermissiveOf,
  meshDestinationsOnlyOf,
  meshTlsOf,
  sanitizeClientCertOf,
} from './mesh.ts';
import { mutualTlsOf, type MutualTlsSource } from './mutual-tls.ts';
import { inboundOf, upstreamConfig } from './service-defaults.ts';
import { accessLogsOf } from './access-logs.ts';
import { readCache, type Protocols } from './cache.ts';

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
