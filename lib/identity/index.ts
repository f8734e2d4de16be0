import { randomUUID } from 'node:crypto';
import { RemoraError } from '../errors/index.ts';

/** A workload identity, Consul Connect's shape. */
export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  datacenter: string;
  service: string;
}

const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})$/;
const TRUST_DOMAIN = /^[a-z0-9][a-z0-9.-]{0,252}$/;

/** Service and datacenter names Remora accepts (Consul's DNS-safe subset). */
export function isValidName(name: string): boolean {
  return NAME.test(name);
}

/** A new trust domain `<cluster-uuid>.remora`, created once with the CA. */
export function createTrustDomain(uuid: string = randomUUID()): string {
  return `${uuid}.remora`;
}

/** `spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>` */
export function formatSpiffeId(id: Omit<SpiffeId, 'namespace'> & { namespace?: string }): string {
  const ns = id.namespace ?? 'default';
  for (const [field, value] of [
    ['service', id.service],
    ['datacenter', id.datacenter],
    ['namespace', ns],
  ] as const) {
    if (!isValidName(value)) {
      throw new RemoraError(
        'REMORA_E_IDENTITY_INVALID',
        `invalid ${field} name ${JSON.stringify(value)} for a SPIFFE ID`,
        {
          field,
          value,
        },
      );
    }
  }
  if (!TRUST_DOMAIN.test(id.trustDomain)) {
    throw new RemoraError(
      'REMORA_E_IDENTITY_INVALID',
      `invalid trust domain ${JSON.stringify(id.trustDomain)}`,
      {
        field: 'trustDomain',
        value: id.trustDomain,
      },
    );
  }
  return `spiffe://${id.trustDomain}/ns/${ns}/dc/${id.datacenter}/svc/${id.service}`;
}

/** Parses a workload SPIFFE ID; throws REMORA_E_IDENTITY_INVALID for anything else. */
export function parseSpiffeId(uri: string): SpiffeId {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/dc\/([^/]+)\/svc\/([^/]+)$/.exec(uri);
  if (
    !m ||
    !TRUST_DOMAIN.test(m[1] ?? '') ||
    ![m[2], m[3], m[4]].every((p) => isValidName(p ?? ''))
  ) {
    throw new RemoraError(
      'REMORA_E_IDENTITY_INVALID',
      `not a Remora workload SPIFFE ID: ${JSON.stringify(uri)}`,
      {
        value: uri,
      },
    );
  }
  return { trustDomain: m[1]!, namespace: m[2]!, datacenter: m[3]!, service: m[4]! };
}

/**
 * The TLS SNI a mesh caller sends for a workload identity, Consul's shape:
 * `<service>.default.<dc>.internal.<trust-domain>` (lower case). A sidecar ignores it; a
 * terminating gateway picks the service (and the certificate it presents) by it.
 */
export function meshSni(spiffeId: string): string {
  const id = parseSpiffeId(spiffeId);
  return `${id.service}.${id.namespace}.${id.datacenter}.internal.${id.trustDomain}`.toLowerCase();
}

/** The trust domain's own SPIFFE ID, carried by root certificates. */
export function trustDomainUri(trustDomain: string): string {
  return `spiffe://${trustDomain}`;
}

/**
 * URI SANs of a peer certificate as Node reports them (`subjectaltname` of
 * `tls.TLSSocket#getPeerCertificate()` or `X509Certificate#subjectAltName`).
 */
export function urisFromSubjectAltName(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(', ')
    .filter((part) => part.startsWith('URI:'))
    .map((part) => part.slice(4));
}

/** The single SPIFFE ID a workload certificate carries, or undefined when it has none or several. */
export function spiffeIdFromSubjectAltName(subjectAltName: string | undefined): string | undefined {
  const uris = urisFromSubjectAltName(subjectAltName).filter((u) => u.startsWith('spiffe://'));
  return uris.length === 1 ? uris[0] : undefined;
}
