// Consul's `ingress-gateway` config entry, read for a gateway the agent runs (docs/gateways.md):
// its listeners, each with the services it reaches and the Host values that pick them. Nothing
// here throws: what cannot be applied is left out and reported (REMORA_E_AGENT_INGRESS_NOT_APPLIED),
// the rest of the gateway keeps serving.
import {
  ingressHostProblem,
  ingressTlsProblem,
  type HeaderModifiers,
  type IngressTlsParams,
  type Protocol,
} from '../lib/proxy-api/index.ts';
import type { ErrorCode } from '../lib/errors/index.ts';
import { isValidName } from '../lib/identity/index.ts';
import { headerModifiers } from './central-config.ts';

export const INGRESS_GATEWAY = 'ingress-gateway' as const;

/** Limits on the calls of one service (Consul's `MaxConnections`, … of a service or `Defaults`). */
export interface IngressLimits {
  maxConnections?: number;
  maxPendingRequests?: number;
  maxConcurrentRequests?: number;
}

/** A service of a listener as the entry names it (`name` may be `*`). */
export interface IngressServiceEntry {
  name: string;
  /** As written; empty means the default `<name>.ingress.*` (HTTP listeners). */
  hosts: string[];
  requestHeaders?: HeaderModifiers;
  responseHeaders?: HeaderModifiers;
  limits: IngressLimits;
}

export interface IngressListenerEntry {
  port: number;
  protocol: Protocol;
  services: IngressServiceEntry[];
  /** The listener's TLS (gateway's, then the listener's own keys over it); null: plain. */
  tls: IngressTlsParams | null;
}

export interface IngressEntry {
  name: string;
  listeners: IngressListenerEntry[];
  defaults: IngressLimits;
}

/** A problem of the entry's TLS, with its own code (the others are NOT_APPLIED sentences). */
export interface IngressProblem {
  code: ErrorCode;
  message: string;
  field: string;
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A field in Consul's PascalCase or in snake_case (`consul config write` takes both). */
function field(o: Obj, pascal: string): unknown {
  if (o[pascal] !== undefined) return o[pascal];
  const snake = pascal.replace(/(?<!^)([A-Z])/g, '_$1').toLowerCase();
  return o[snake];
}

const LISTENER_PROTOCOLS: readonly Protocol[] = ['tcp', 'http', 'http2', 'grpc'];

/** A key of a `TLS` block by Consul's name or its alias (`tls_min_version`, `cipher_suites`). */
function tlsField(o: Obj, pascal: string, alias: string): unknown {
  return o[pascal] ?? o[alias] ?? o[pascal.toLowerCase()];
}

interface TlsBlock {
  enabled: boolean;
  minVersion?: string;
  maxVersion?: string;
  cipherSuites?: string[];
  sds: boolean;
}

/** A `TLS` block as written (absent or not an object: nothing set). */
function tlsBlock(v: unknown): TlsBlock {
  if (!isObj(v)) return { enabled: false, sds: false };
  const out: TlsBlock = { enabled: tlsField(v, 'Enabled', 'enabled') === true, sds: false };
  const min = tlsField(v, 'TLSMinVersion', 'tls_min_version');
  const max = tlsField(v, 'TLSMaxVersion', 'tls_max_version');
  const suites = tlsField(v, 'CipherSuites', 'cipher_suites');
  if (typeof min === 'string' && min !== '') out.minVersion = min;
  if (typeof max === 'string' && max !== '') out.maxVersion = max;
  if (Array.isArray(suites) && suites.length > 0) out.cipherSuites = suites.map(String);
  const sds = tlsField(v, 'SDS', 'sds');
  out.sds = isObj(sds) && Object.values(sds).some((x) => x !== undefined && x !== null && x !== '');
  return out;
}

const TLS_KEYS = {
  TLSMinVersion: 'minVersion',
  TLSMaxVersion: 'maxVersion',
  CipherSuites: 'cipherSuites',
} as const;

/**
 * A listener's TLS as Consul resolves it: on when the gateway's or the listener's `Enabled` is
 * (a listener cannot turn the gateway's off: false is also what "unset" reads as, in Consul
 * too), the listener's versions and suites over the gateway's. A minimum below TLS 1.2 is raised
 * to TLSv1_2; what cannot be served leaves the listener out (never served in plain instead).
 */
function listenerTls(
  gateway: TlsBlock,
  listener: TlsBlock,
  at: string,
  where: string,
  port: number,
  coded: IngressProblem[],
): IngressTlsParams | null | 'refused' {
  if (!gateway.enabled && !listener.enabled) return null;
  const merged: IngressTlsParams = {};
  const from: Record<string, string> = {};
  for (const key of ['TLSMinVersion', 'TLSMaxVersion', 'CipherSuites'] as const) {
    const k = TLS_KEYS[key];
    const own = listener[k];
    const v = own ?? gateway[k];
    if (v === undefined) continue;
    (merged as Record<string, unknown>)[k] = v;
    from[key] = own !== undefined ? `${where}.TLS.${key}` : `${at} TLS.${key}`;
  }
  const problem = ingressTlsProblem(merged);
  if (problem !== null) {
    coded.push({
      code: 'REMORA_E_AGENT_INGRESS_TLS_INVALID',
      field: from[problem.key]!,
      message: `${from[problem.key]!} ${problem.reason}; the TLS listener on port ${port} is left out (it is not served in plain instead)`,
    });
    return 'refused';
  }
  const min = merged.minVersion;
  if (min === 'TLSv1_0' || min === 'TLSv1_1') {
    coded.push({
      code: 'REMORA_E_AGENT_INGRESS_NOT_APPLIED',
      field: from.TLSMinVersion!,
      message: `${from.TLSMinVersion!} ${min} is below TLS 1.2, the oldest version the gateway serves; port ${port} takes TLSv1_2 and later — set TLSv1_2 to say so`,
    });
    merged.minVersion = 'TLSv1_2';
  } else if (min === 'TLS_AUTO') delete merged.minVersion;
  if (merged.maxVersion === 'TLS_AUTO') delete merged.maxVersion;
  return merged;
}

function limitsOf(o: Obj, where: string, problems: string[]): IngressLimits {
  const out: IngressLimits = {};
  for (const [key, to] of [
    ['MaxConnections', 'maxConnections'],
    ['MaxPendingRequests', 'maxPendingRequests'],
    ['MaxConcurrentRequests', 'maxConcurrentRequests'],
  ] as const) {
    const v = field(o, key);
    if (v === undefined || v === null || v === 0) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 1_000_000) {
      problems.push(
        `${where}.${key} must be a whole number from 1 to 1000000, got ${JSON.stringify(v)}; it is ignored`,
      );
      continue;
    }
    out[to] = v;
  }
  return out;
}

/**
 * An entry's listeners and services, each one that cannot apply left out with a problem (a
 * sentence naming the entry, the field and the reason).
 */
export function decodeIngressEntry(raw: Obj): {
  entry: IngressEntry;
  problems: string[];
  /** TLS problems, each with its code and the entry's field. */
  coded: IngressProblem[];
} {
  const name = typeof raw.Name === 'string' ? raw.Name : '';
  const at = `ingress-gateway ${name}`;
  const problems: string[] = [];
  const coded: IngressProblem[] = [];
  const gatewayTls = tlsBlock(raw.TLS ?? raw.tls);
  const sds = (fieldName: string, what: string): void => {
    coded.push({
      code: 'REMORA_E_AGENT_INGRESS_SDS_UNSUPPORTED',
      field: fieldName,
      message: `${fieldName} asks for certificates from an external SDS server, which Remora does not support; ${what}`,
    });
  };
  if (gatewayTls.sds)
    sds(
      `${at} TLS.SDS`,
      "TLS listeners serve the gateway's certificate from the mesh CA instead (TLS.Enabled turns them on)",
    );
  const defaultsRaw = field(raw, 'Defaults');
  const defaults = isObj(defaultsRaw) ? limitsOf(defaultsRaw, `${at} Defaults`, problems) : {};
  const list = field(raw, 'Listeners');
  const listeners: IngressListenerEntry[] = [];
  if (list !== undefined && list !== null && !Array.isArray(list))
    problems.push(`${at}: Listeners must be a list; the gateway has no listener`);
  const ports = new Set<number>();
  (Array.isArray(list) ? list : []).forEach((l: unknown, i) => {
    const where = `${at} Listeners[${i}]`;
    if (!isObj(l)) return problems.push(`${where} must be an object; it is left out`);
    const port = field(l, 'Port');
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
      return problems.push(
        `${where}.Port must be a port from 1 to 65535, got ${JSON.stringify(port)}; the listener is left out`,
      );
    if (ports.has(port))
      return problems.push(`${where}.Port ${port} is already a listener's; this one is left out`);
    const p = field(l, 'Protocol') ?? 'tcp';
    const protocol = typeof p === 'string' ? p.toLowerCase() : p;
    if (!LISTENER_PROTOCOLS.includes(protocol as Protocol))
      return problems.push(
        `${where}.Protocol ${JSON.stringify(p)} is not one of tcp, http, http2, grpc; the listener on port ${port} is left out`,
      );
    const ownTls = tlsBlock(l.TLS ?? l.tls);
    if (ownTls.sds)
      sds(
        `${where}.TLS.SDS`,
        `port ${port} serves the gateway's certificate from the mesh CA instead when TLS is enabled`,
      );
    const tls = listenerTls(gatewayTls, ownTls, at, where, port, coded);
    if (tls === 'refused') return;
    const svcs = field(l, 'Services');
    const services: IngressServiceEntry[] = [];
    (Array.isArray(svcs) ? svcs : []).forEach((s: unknown, j) => {
      const sw = `${where}.Services[${j}]`;
      if (!isObj(s)) return problems.push(`${sw} must be an object; it is left out`);
      const sn = field(s, 'Name');
      if (typeof sn !== 'string' || (sn !== '*' && !isValidName(sn)))
        return problems.push(
          `${sw}.Name must be a service name or "*", got ${JSON.stringify(sn)}; it is left out`,
        );
      const hostsRaw = field(s, 'Hosts') ?? [];
      if (!Array.isArray(hostsRaw) || hostsRaw.some((h) => typeof h !== 'string'))
        return problems.push(`${sw}.Hosts must be a list of host names; ${sn} is left out`);
      const hosts = (hostsRaw as string[]).map((h) => h.toLowerCase());
      if (hosts.length > 0 && protocol === 'tcp')
        return problems.push(
          `${sw}.Hosts cannot be set on a tcp listener (port ${port}); ${sn} is left out`,
        );
      if (hosts.length > 0 && sn === '*')
        return problems.push(
          `${sw}.Hosts cannot be set for the wildcard service "*"; it is left out`,
        );
      const bad = hosts.find((h) => ingressHostProblem(h) !== null);
      if (bad !== undefined)
        return problems.push(
          `${sw}.Hosts: ${JSON.stringify(bad)} ${ingressHostProblem(bad)!}; ${sn} is left out`,
        );
      const st = s.TLS ?? s.tls;
      if (isObj(st) && tlsBlock(st).sds)
        sds(
          `${sw}.TLS.SDS`,
          `${sn} is served with its listener's certificate (the gateway's, from the mesh CA)`,
        );
      const out: IngressServiceEntry = { name: sn, hosts, limits: limitsOf(s, sw, problems) };
      for (const [key, to] of [
        ['RequestHeaders', 'requestHeaders'],
        ['ResponseHeaders', 'responseHeaders'],
      ] as const) {
        const v = field(s, key);
        if (v === undefined || v === null) continue;
        try {
          const m = headerModifiers(v, `${sw}.${key}`);
          if (m !== null) out[to] = m;
        } catch (err) {
          problems.push(`${(err as Error).message}; the header changes are left out`);
        }
      }
      services.push(out);
    });
    if (services.length === 0)
      return problems.push(`${where} (port ${port}) has no service to reach; it is left out`);
    if (protocol === 'tcp' && services.length > 1)
      return problems.push(
        `${where} is tcp and has ${services.length} services; a tcp listener has exactly one, so port ${port} is left out`,
      );
    if (protocol === 'tcp' && services[0]!.name === '*')
      return problems.push(
        `${where} is tcp and names the wildcard service "*", which only HTTP, HTTP/2 and gRPC listeners can route; port ${port} is left out`,
      );
    ports.add(port);
    listeners.push({ port, protocol: protocol as Protocol, services, tls });
  });
  return { entry: { name, listeners, defaults }, problems, coded };
}

/** A service a planned listener reaches, its hosts filled in. */
export interface PlannedService {
  name: string;
  hosts: string[];
  requestHeaders?: HeaderModifiers;
  responseHeaders?: HeaderModifiers;
  limits: IngressLimits;
}

export interface PlannedListener {
  port: number;
  protocol: Protocol;
  services: PlannedService[];
  /** Null: plain. */
  tls: IngressTlsParams | null;
}

/**
 * The listeners a gateway serves: `*` services expanded to every service of `catalog` whose
 * protocol is the listener's, default hosts filled in (`<name>.ingress.*`), and services left
 * out (with a problem) whose protocol is not their listener's, that another listener already
 * reaches with another protocol, or whose hosts another service of the listener took.
 */
export function planIngress(
  entry: IngressEntry,
  o: {
    gateway: string;
    protocolOf(service: string): Protocol;
    /**
     * The protocol `*` picks services by: Consul's service-defaults and proxy-defaults (as
     * Consul's wildcard does); `protocolOf` when absent.
     */
    wildcardProtocolOf?(service: string): Protocol;
    /** The catalog's service names (`*` services), null while unknown. */
    catalog: readonly string[] | null;
  },
): { listeners: PlannedListener[]; problems: string[] } {
  const problems: string[] = [];
  const byService = new Map<string, { protocol: Protocol; port: number }>();
  const listeners: PlannedListener[] = [];
  for (const l of entry.listeners) {
    const taken = new Map<string, string>();
    const services: PlannedService[] = [];
    const add = (s: IngressServiceEntry, name: string, wildcard: boolean): void => {
      const where = `ingress-gateway ${entry.name} listener ${l.port}`;
      const protocol =
        wildcard && o.wildcardProtocolOf ? o.wildcardProtocolOf(name) : o.protocolOf(name);
      if (protocol !== l.protocol) {
        // a wildcard reaches the services of the listener's protocol only, as in Consul
        if (!wildcard)
          problems.push(
            `${where}: service ${name} is ${protocol} (its service-defaults or proxy-defaults), the listener ${l.protocol}; ${name} is left out — set its protocol to ${l.protocol} or move it to a ${protocol} listener`,
          );
        return;
      }
      const other = byService.get(name);
      if (other !== undefined && other.protocol !== protocol) {
        problems.push(
          `${where}: service ${name} is already reached as ${other.protocol} on port ${other.port}; it is left out here`,
        );
        return;
      }
      if (services.some((x) => x.name === name)) return;
      const hosts =
        l.protocol === 'tcp'
          ? []
          : s.hosts.length > 0 && !wildcard
            ? s.hosts
            : [`${name}.ingress.*`];
      const clash = hosts.find((h) => taken.has(h));
      if (clash !== undefined) {
        problems.push(
          `${where}: host ${clash} of ${name} is already ${taken.get(clash)!}'s; ${name} is left out`,
        );
        return;
      }
      for (const h of hosts) taken.set(h, name);
      byService.set(name, { protocol, port: l.port });
      services.push({
        name,
        hosts,
        limits: { ...entry.defaults, ...s.limits },
        ...(s.requestHeaders ? { requestHeaders: s.requestHeaders } : {}),
        ...(s.responseHeaders ? { responseHeaders: s.responseHeaders } : {}),
      });
    };
    // named services first: their hosts win over a wildcard's defaults
    for (const s of l.services) if (s.name !== '*') add(s, s.name, false);
    for (const s of l.services) {
      if (s.name !== '*') continue;
      for (const name of o.catalog ?? []) {
        if (name === o.gateway || name === 'consul' || name.endsWith('-sidecar-proxy')) continue;
        if (services.some((x) => x.name === name)) continue;
        add(s, name, true);
      }
    }
    if (services.length > 0)
      listeners.push({ port: l.port, protocol: l.protocol, services, tls: l.tls });
  }
  return { listeners, problems };
}
