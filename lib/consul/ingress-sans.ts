// The DNS names an ingress gateway's certificate covers (docs/gateways.md, "TLS"), derived from
// Consul's `ingress-gateway` entry exactly as Consul's proxycfg derives them for Envoy: when the
// entry enables TLS for the gateway or any listener, `*.ingress.<domain>` and
// `*.ingress.<dc>.<domain>` for each of Consul's DNS domains (its `domain` and `alt_domain`),
// then every `Hosts` value of the entry's services. The agent asks for these names; control
// grants a CSR's DNS SANs only when they are among them, computed here from the entry it reads
// itself, so the two cannot disagree on what an entry allows.

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A field in Consul's PascalCase or in snake_case (`consul config write` takes both). */
function field(o: Obj, pascal: string): unknown {
  if (o[pascal] !== undefined) return o[pascal];
  const snake = pascal.replace(/(?<=[a-z])([A-Z])/g, '_$1').toLowerCase();
  return o[snake];
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * True for a DNS name a certificate can carry: lower-case labels, a `*` only as the whole first
 * label of a name with more (`*.example.com`; `*` alone is no name).
 */
export function isSanDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  return labels.every((l, i) => (i === 0 && l === '*' ? labels.length > 1 : LABEL.test(l)));
}

function enabled(tls: unknown): boolean {
  return isObj(tls) && field(tls, 'Enabled') === true;
}

/** True when the entry turns TLS on for the gateway or for one of its listeners. */
export function ingressTlsEnabled(entry: Obj): boolean {
  if (enabled(field(entry, 'TLS'))) return true;
  const listeners = field(entry, 'Listeners');
  return Array.isArray(listeners) && listeners.some((l) => isObj(l) && enabled(field(l, 'TLS')));
}

/**
 * The DNS SANs of an ingress gateway's certificate for its entry, in a stable order; empty when
 * the entry enables no TLS. Hosts that cannot be a certificate's names (`*`, `api.ingress.*`)
 * are left out; they still route plain requests.
 */
export function ingressDnsSans(
  entry: Obj,
  o: { datacenter: string; domains: readonly string[] },
): string[] {
  if (!ingressTlsEnabled(entry)) return [];
  const out: string[] = [];
  const add = (name: string): void => {
    const n = name.toLowerCase().replace(/\.$/, '');
    if (isSanDnsName(n) && !out.includes(n)) out.push(n);
  };
  for (const d of o.domains) {
    const domain = d.replace(/^\.+|\.+$/g, '');
    if (domain === '') continue;
    add(`*.ingress.${domain}`);
    add(`*.ingress.${o.datacenter}.${domain}`);
  }
  const listeners = field(entry, 'Listeners');
  for (const l of Array.isArray(listeners) ? listeners : []) {
    if (!isObj(l)) continue;
    const services = field(l, 'Services');
    for (const s of Array.isArray(services) ? services : []) {
      if (!isObj(s)) continue;
      const hosts = field(s, 'Hosts');
      for (const h of Array.isArray(hosts) ? hosts : []) if (typeof h === 'string') add(h);
    }
  }
  return out;
}
