// The central config as the agent keeps it (every kind's entries, checked) and as it reads it back
// from the data directory's cache: a cache file is trusted no more than Consul, so each value is
// checked again as Consul's answer would be.
import { isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import type {
  AccessLogConfig,
  ExposePath,
  InboundSettings,
  MeshTlsConfig,
  MetricsListener,
  MutualTlsMode,
  Protocol,
} from '../../lib/proxy-api/index.ts';
import { checkUpstreamLayer, metricsBindOf } from '../definitions.ts';
import { asProtocol } from '../transparent/derive.ts';
import { consulExposeOf, exposeLayerOf, type ExposeLayer } from '../central-expose.ts';
import { isLayer, type Layer } from './entry.ts';
import { checkedResolver, type ResolverSettings } from './resolver.ts';
import { checkedSplits, type SplitShare } from './splitter.ts';
import { checkedRoutes, type RouteEntry } from './router.ts';
import { checkedMeshTls } from './mesh.ts';
import { mutualTlsOf } from './mutual-tls.ts';
import { cachedInboundFields, inboundOf, type UpstreamLayers } from './service-defaults.ts';
import { checkedAccessLogs } from './access-logs.ts';

/**
 * What the entries of every kind give, checked: what the watches keep, and what the data
 * directory caches for the next run.
 */
export interface Protocols {
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

export function readCache(path: string): Protocols | null {
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
