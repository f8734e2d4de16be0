// The ingress-gateway config entry in the embedded catalog, checked as Consul checks it on a
// write (docs/consul.md): `checkIngressGateway` on the entry itself, `checkIngressProtocols`
// against the stored service-defaults and proxy-defaults.
import { HttpError } from './http-error.ts';
import { goQuote } from './config-entries.ts';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Fields of an ingress gateway's listeners and services, by their lower-case and snake_case names. */
const INGRESS_KEYS: Record<string, string> = Object.fromEntries(
  [
    'Port',
    'Protocol',
    'Services',
    'Name',
    'Hosts',
    'RequestHeaders',
    'ResponseHeaders',
    'MaxConnections',
    'MaxPendingRequests',
    'MaxConcurrentRequests',
    'PassiveHealthCheck',
    'TLS',
    'Namespace',
    'Partition',
  ].flatMap((k) => [
    [k.toLowerCase(), k],
    [k.replace(/(?<=[a-z])([A-Z])/g, '_$1').toLowerCase(), k],
  ]),
);

/** An object with its keys in Consul's spelling (PascalCase), as Consul stores it. */
function ingressKeys(v: unknown, what: string): Obj {
  if (!isObj(v)) throw new HttpError(400, `Request decoding failed: ${what} must be an object`);
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    const key = INGRESS_KEYS[k.toLowerCase()] ?? k;
    if (Object.hasOwn(out, key))
      throw new HttpError(400, `Request decoding failed: ${what}.${key} is given twice`);
    Object.defineProperty(out, key, {
      value: x,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

const INGRESS_PROTOCOLS = ['tcp', 'http', 'http2', 'grpc'];

/** Keys of a `TLS` block and of its `SDS`, by lower-case and alias names. */
const TLS_KEYS: Record<string, string> = {
  enabled: 'Enabled',
  tlsminversion: 'TLSMinVersion',
  tls_min_version: 'TLSMinVersion',
  tlsmaxversion: 'TLSMaxVersion',
  tls_max_version: 'TLSMaxVersion',
  ciphersuites: 'CipherSuites',
  cipher_suites: 'CipherSuites',
  sds: 'SDS',
  clustername: 'ClusterName',
  cluster_name: 'ClusterName',
  certresource: 'CertResource',
  cert_resource: 'CertResource',
};

/** Consul's TLS version names (types.TLSVersion), in the order it lists them. */
const TLS_VERSIONS = ['TLS_AUTO', 'TLSv1_0', 'TLSv1_1', 'TLSv1_2', 'TLSv1_3'];
const TLS_ORDER: Record<string, number> = { TLSv1_0: 1, TLSv1_1: 2, TLSv1_2: 3, TLSv1_3: 4 };

/** The TLS 1.2 suites Consul accepts for Envoy (types.envoyTLSCipherSuiteStrings). */
const ENVOY_CIPHER_SUITES = new Set(
  ['ECDHE_ECDSA', 'ECDHE_RSA']
    .flatMap((kx) => [
      `TLS_${kx}_WITH_AES_128_GCM_SHA256`,
      `TLS_${kx}_WITH_CHACHA20_POLY1305_SHA256`,
      `TLS_${kx}_WITH_AES_128_CBC_SHA`,
      `TLS_${kx}_WITH_AES_256_GCM_SHA384`,
      `TLS_${kx}_WITH_AES_256_CBC_SHA`,
    ])
    .concat([
      'TLS_RSA_WITH_AES_128_GCM_SHA256',
      'TLS_RSA_WITH_AES_128_CBC_SHA',
      'TLS_RSA_WITH_AES_256_GCM_SHA384',
      'TLS_RSA_WITH_AES_256_CBC_SHA',
    ]),
);

interface GatewayTls {
  Enabled?: boolean;
  TLSMinVersion?: string;
  TLSMaxVersion?: string;
  CipherSuites?: string[];
  SDS?: { ClusterName?: string; CertResource?: string };
}

/** A `TLS` block (gateway, listener or service) decoded as Consul's JSON decoder does. */
function tlsBlock(v: unknown, what: string, service = false): GatewayTls {
  const fail = (m: string): never => {
    throw new HttpError(400, `Request decoding failed: ${what}${m}`);
  };
  if (!isObj(v)) return fail(' must be an object');
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const key = TLS_KEYS[k.toLowerCase()];
    if (key === undefined || key === 'ClusterName' || key === 'CertResource')
      throw new HttpError(400, `invalid config key ${JSON.stringify(`${what}.${k}`)}`);
    if (service && key !== 'SDS')
      throw new HttpError(400, `invalid config key ${JSON.stringify(`${what}.${k}`)}`);
    if (x === null) continue;
    if (key === 'Enabled' && typeof x !== 'boolean') fail('.Enabled must be a bool');
    if ((key === 'TLSMinVersion' || key === 'TLSMaxVersion') && typeof x !== 'string')
      fail(`.${key} must be a string`);
    if (key === 'CipherSuites' && (!Array.isArray(x) || x.some((c) => typeof c !== 'string')))
      fail('.CipherSuites must be a list of strings');
    if (key === 'SDS') {
      if (!isObj(x)) fail('.SDS must be an object');
      const sds: Record<string, string> = {};
      for (const [sk, sx] of Object.entries(x as Obj)) {
        const skey = TLS_KEYS[sk.toLowerCase()];
        if (skey !== 'ClusterName' && skey !== 'CertResource')
          throw new HttpError(400, `invalid config key ${JSON.stringify(`${what}.SDS.${sk}`)}`);
        if (sx === null) continue;
        if (typeof sx !== 'string') fail(`.SDS.${skey} must be a string`);
        sds[skey] = sx as string;
      }
      out.SDS = sds;
      continue;
    }
    out[key] = x;
  }
  return out;
}

/** Consul's validateTLSConfig for a gateway or listener `TLS`. */
function checkTlsParams(tls: GatewayTls): void {
  const fail = (m: string): never => {
    throw new HttpError(400, m);
  };
  const min = tls.TLSMinVersion ?? '';
  const max = tls.TLSMaxVersion ?? '';
  for (const v of [min, max])
    if (v !== '' && !TLS_VERSIONS.includes(v))
      fail(
        `no matching TLS version found for ${v}, please specify one of [${TLS_VERSIONS.join(', ')}]`,
      );
  if (
    min !== '' &&
    max !== '' &&
    TLS_ORDER[min] &&
    TLS_ORDER[max] &&
    TLS_ORDER[max] < TLS_ORDER[min]
  )
    fail(`configuring max version ${max} less than the configured min version ${min} is invalid`);
  const suites = tls.CipherSuites ?? [];
  if (suites.length === 0) return;
  if (min === 'TLSv1_3')
    fail(
      `configuring CipherSuites is only applicable to connections negotiated with TLS 1.2 or earlier, TLSMinVersion is set to ${min}`,
    );
  const unknown = suites.filter((c) => !ENVOY_CIPHER_SUITES.has(c));
  if (unknown.length > 0) fail(`no matching Envoy TLS cipher suite found for ${unknown.join(',')}`);
}

/** Consul's validateServiceSDS: the SDS settings a service inherits must be complete. */
function checkServiceSds(
  gw: GatewayTls,
  listener: GatewayTls | undefined,
  svc: { name: string; hosts: string[]; tls: GatewayTls | undefined },
  port: number,
): void {
  const fail = (m: string): never => {
    throw new HttpError(400, m);
  };
  const gwCluster = (gw.SDS?.ClusterName ?? '') !== '';
  const gwCert = (gw.SDS?.CertResource ?? '') !== '';
  if (gw.SDS !== undefined && !gwCluster && gwCert)
    fail('TLS.SDS.ClusterName is required if CertResource is set');
  const lisCert = (listener?.SDS?.CertResource ?? '') !== '';
  const lisCluster = (listener?.SDS?.ClusterName ?? '') !== '';
  if (gwCluster && !gwCert && !lisCert)
    fail(
      `TLS.SDS.CertResource is required if ClusterName is set for gateway (listener on port ${port})`,
    );
  if (lisCluster && !lisCert)
    fail(
      `TLS.SDS.CertResource is required if ClusterName is set for listener (listener on port ${port})`,
    );
  if (lisCert && !lisCluster && !gwCluster)
    fail(`TLS.SDS.ClusterName is required if CertResource is set (listener on port ${port})`);
  const svcCert = (svc.tls?.SDS?.CertResource ?? '') !== '';
  if (svcCert && svc.hosts.length < 1)
    fail(
      `A service specifying TLS.SDS.CertResource must have at least one item in Hosts (service ${goQuote(svc.name)} on listener on port ${port})`,
    );
  if (svcCert && (svc.tls?.SDS?.ClusterName ?? '') === '' && !lisCluster && !gwCluster)
    fail(
      `TLS.SDS.ClusterName is required if CertResource is set (service ${goQuote(svc.name)} on listener on port ${port})`,
    );
}

/** A host of an ingress service as Consul's check sees it: a DNS name, `*` only as the leftmost label. */
function ingressHostOk(host: string): boolean {
  if (host === '*') return true;
  const name = host.startsWith('*.') ? host.slice(2) : host;
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((l) => /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(l));
}

/**
 * Consul's checks of an ingress-gateway entry: the gateway's and each listener's `TLS` (known
 * TLS versions, the maximum not below the minimum, Envoy's TLS 1.2 suites and only when TLS 1.2
 * can be spoken, complete `SDS` settings), listeners with distinct ports and a known protocol,
 * at least one service each; a tcp listener holds exactly one service, not `*`; hosts only on
 * HTTP-like listeners, never for `*`, DNS names with a wildcard only as the leftmost label (`*`
 * alone unless the gateway's TLS is enabled), unique within a listener. Keys are stored in Consul's spelling and protocols
 * lower-cased. (Whether each service speaks its listener's protocol is checked at the write,
 * against the stored service-defaults: `checkIngressProtocols`.)
 */
export function checkIngressGateway(e: Obj): void {
  const fail = (m: string): never => {
    throw new HttpError(400, m);
  };
  const gwTls: GatewayTls = e.TLS === undefined || e.TLS === null ? {} : tlsBlock(e.TLS, 'TLS');
  if (e.TLS !== undefined && e.TLS !== null) e.TLS = gwTls;
  checkTlsParams(gwTls);
  if (e.Listeners === undefined || e.Listeners === null) e.Listeners = [];
  if (!Array.isArray(e.Listeners)) fail('Request decoding failed: Listeners must be a list');
  const ports = new Set<number>();
  e.Listeners = (e.Listeners as unknown[]).map((raw, i) => {
    const l = ingressKeys(raw, `Listeners[${i}]`);
    const port = l.Port;
    if (typeof port !== 'number' || !Number.isInteger(port))
      fail(`Request decoding failed: Listeners[${i}].Port must be an integer`);
    if (ports.has(port as number)) fail(`port ${String(port)} declared on two listeners`);
    ports.add(port as number);
    const p = l.Protocol ?? 'tcp';
    if (typeof p !== 'string')
      fail(`Request decoding failed: Listeners[${i}].Protocol must be a string`);
    const protocol = (p as string) === '' ? 'tcp' : (p as string).toLowerCase();
    if (!INGRESS_PROTOCOLS.includes(protocol))
      fail(
        `protocol must be 'tcp', 'http', 'http2', or 'grpc'. '${p as string}' is an unsupported protocol`,
      );
    l.Protocol = protocol;
    const svcs = l.Services ?? [];
    if (!Array.isArray(svcs))
      fail(`Request decoding failed: Listeners[${i}].Services must be a list`);
    const list = svcs as unknown[];
    if (list.length === 0) fail(`No service declared for listener with port ${String(port)}`);
    if (protocol === 'tcp' && list.length > 1)
      fail(
        `Multiple services per listener are only supported for L7 protocols, 'http', 'grpc' and 'http2' (listener on port ${String(port)})`,
      );
    let lisTls: GatewayTls | undefined;
    if (l.TLS !== undefined && l.TLS !== null) {
      lisTls = tlsBlock(l.TLS, `Listeners[${i}].TLS`);
      l.TLS = lisTls;
      checkTlsParams(lisTls);
    }
    const hostsSeen = new Set<string>();
    l.Services = list.map((rs, j) => {
      const s = ingressKeys(rs, `Listeners[${i}].Services[${j}]`);
      if (typeof s.Name !== 'string' || s.Name === '')
        fail(`Service name cannot be blank (listener on port ${String(port)})`);
      if (s.Name === '*' && protocol === 'tcp')
        fail(
          `Wildcard service name is only valid for L7 protocols, 'http', 'grpc' and 'http2' (listener on port ${String(port)})`,
        );
      const hosts = s.Hosts ?? [];
      if (!Array.isArray(hosts) || hosts.some((h) => typeof h !== 'string'))
        fail(
          `Request decoding failed: Listeners[${i}].Services[${j}].Hosts must be a list of strings`,
        );
      const hs = hosts as string[];
      let svcTls: GatewayTls | undefined;
      if (s.TLS !== undefined && s.TLS !== null) {
        svcTls = tlsBlock(s.TLS, `Listeners[${i}].Services[${j}].TLS`, true);
        s.TLS = svcTls;
      }
      if (hs.length > 0 && protocol === 'tcp')
        fail(
          `Associating hosts to a service is not supported for the tcp protocol (listener on port ${String(port)})`,
        );
      if (hs.length > 0 && s.Name === '*')
        fail(
          `Associating hosts to a wildcard service is not supported (listener on port ${String(port)})`,
        );
      checkServiceSds(
        gwTls,
        lisTls,
        { name: s.Name as string, hosts: hs, tls: svcTls },
        port as number,
      );
      for (const h of hs) {
        if (hostsSeen.has(h))
          fail(
            `Hosts must be unique within a specific listener (listener on port ${String(port)})`,
          );
        hostsSeen.add(h);
        if (h === '*' && gwTls.Enabled === true)
          fail(
            "Host '*' is not allowed when TLS is enabled, all hosts must be valid DNS records to add as a DNSSAN",
          );
        if (!ingressHostOk(h))
          fail(
            h.includes('*')
              ? `Host ${goQuote(h)} is not valid, a wildcard specifier is only allowed as the leftmost label`
              : `Host ${goQuote(h)} must be a valid DNS hostname`,
          );
      }
      return s;
    });
    return l;
  });
}

/**
 * Consul's check of an ingress-gateway write against the stored entries: every named service
 * speaks its listener's protocol (`protocolOf`: service-defaults, else proxy-defaults, else
 * tcp); `*` is not checked (it reaches the services of the listener's protocol).
 */
export function checkIngressProtocols(
  entry: Record<string, unknown>,
  protocolOf: (service: string) => string,
): void {
  for (const l of (entry.Listeners ?? []) as Obj[]) {
    for (const s of (l.Services ?? []) as Obj[]) {
      const name = s.Name as string;
      if (name === '*') continue;
      const protocol = protocolOf(name);
      if (protocol !== l.Protocol)
        throw new HttpError(
          400,
          `service ${goQuote(name)} has protocol ${goQuote(protocol)}, which does not match defined listener protocol ${goQuote(l.Protocol)}`,
        );
    }
  }
}
