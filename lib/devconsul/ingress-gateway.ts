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

/** A host of an ingress service as Consul's check sees it: a DNS name, `*` only as the leftmost label. */
function ingressHostOk(host: string): boolean {
  if (host === '*') return true;
  const name = host.startsWith('*.') ? host.slice(2) : host;
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((l) => /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(l));
}

/**
 * Consul's checks of an ingress-gateway entry: listeners with distinct ports and a known
 * protocol, at least one service each; a tcp listener holds exactly one service, not `*`;
 * hosts only on HTTP-like listeners, never for `*`, DNS names with a wildcard only as the
 * leftmost label, unique within a listener. Keys are stored in Consul's spelling and protocols
 * lower-cased. (Whether each service speaks its listener's protocol is checked at the write,
 * against the stored service-defaults: `checkIngressProtocols`.)
 */
export function checkIngressGateway(e: Obj): void {
  const fail = (m: string): never => {
    throw new HttpError(400, m);
  };
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
      if (hs.length > 0 && protocol === 'tcp')
        fail(
          `Associating hosts to a service is not supported for the tcp protocol (listener on port ${String(port)})`,
        );
      if (hs.length > 0 && s.Name === '*')
        fail(
          `Associating hosts to a wildcard service is not supported (listener on port ${String(port)})`,
        );
      for (const h of hs) {
        if (!ingressHostOk(h))
          fail(
            h.includes('*')
              ? `Host ${goQuote(h)} is not valid, a wildcard specifier is only allowed as the leftmost label`
              : `Host ${goQuote(h)} must be a valid DNS hostname`,
          );
        if (hostsSeen.has(h))
          fail(
            `Hosts must be unique within a specific listener (listener on port ${String(port)})`,
          );
        hostsSeen.add(h);
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
