// mTLS material and peer identity. Inbound verifies the client chain against the trust bundle
// and reads the caller's SPIFFE ID; outbound accepts only the destination's SPIFFE ID (Node
// ignores URI SANs in its default hostname check, so the check is ours).
import tls, { type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { RemoraError } from '../../lib/errors/index.ts';
import { parseSpiffeId, urisFromSubjectAltName } from '../../lib/identity/index.ts';
import { tlsOptions, type MeshTlsConfig, type TlsMaterial } from '../../lib/proxy-api/index.ts';

/** Why an inbound handshake was refused; bounded label values for metrics. */
export type HandshakeFailure =
  | 'no_client_cert'
  | 'expired'
  | 'not_yet_valid'
  | 'unknown_ca'
  | 'bad_identity'
  | 'protocol'
  | 'other';

export interface TlsContexts {
  /** Options for `tls.createServer` / `server.setSecureContext`. */
  serverOptions: tls.SecureContextOptions;
  /** Shared by every outbound connection (one SecureContext, session resumption by endpoint). */
  clientContext: SecureContext;
  certNotAfter: Date;
  rootsNotAfter: Date[];
  fingerprint: string;
}

/**
 * The server options and the client context of the material, each with its direction's TLS
 * versions and TLS 1.2 suites (Consul's `mesh` entry; TLS 1.2 to 1.3 when it sets none).
 */
export function buildTlsContexts(m: TlsMaterial, mesh?: MeshTlsConfig): TlsContexts {
  const material = { key: m.keyPem, cert: m.certPem, ca: m.rootsPem };
  const x = new X509Certificate(m.certPem);
  return {
    serverOptions: { ...material, ...tlsOptions(mesh?.incoming) },
    clientContext: tls.createSecureContext({ ...material, ...tlsOptions(mesh?.outgoing) }),
    certNotAfter: new Date(x.validTo),
    rootsNotAfter: m.rootsPem.map((r) => new Date(new X509Certificate(r).validTo)),
    fingerprint: x.fingerprint256,
  };
}

export function sameTlsMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  return (
    a.certPem === b.certPem &&
    a.keyPem === b.keyPem &&
    a.rootsPem.length === b.rootsPem.length &&
    a.rootsPem.every((r, i) => r === b.rootsPem[i])
  );
}

export type PeerResult =
  | { ok: true; spiffeId: string; service: string }
  | { ok: false; reason: HandshakeFailure; message: string };

/** Classifies an inbound TLS socket (server runs with rejectUnauthorized: false and checks here). */
export function verifyPeer(socket: TLSSocket, trustDomain: string): PeerResult {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0)
    return { ok: false, reason: 'no_client_cert', message: 'the client presented no certificate' };
  if (!socket.authorized) {
    const e = String(socket.authorizationError ?? '');
    let reason: HandshakeFailure = 'other';
    if (e === 'CERT_HAS_EXPIRED') reason = 'expired';
    else if (e === 'CERT_NOT_YET_VALID') reason = 'not_yet_valid';
    else if (
      e === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
      e === 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' ||
      e === 'UNABLE_TO_GET_ISSUER_CERT' ||
      e === 'SELF_SIGNED_CERT_IN_CHAIN' ||
      e === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
      e === 'CERT_SIGNATURE_FAILURE'
    )
      reason = 'unknown_ca';
    return { ok: false, reason, message: `client certificate refused: ${e}` };
  }
  const uris = urisFromSubjectAltName(cert.subjectaltname);
  for (const u of uris) {
    try {
      const id = parseSpiffeId(u);
      if (id.trustDomain !== trustDomain) continue;
      return { ok: true, spiffeId: u, service: id.service };
    } catch {
      // not a workload ID; look at the next SAN
    }
  }
  return {
    ok: false,
    reason: 'bad_identity',
    message: `client certificate carries no workload SPIFFE ID of trust domain ${trustDomain} (SANs: ${uris.join(', ') || 'none'})`,
  };
}

/** A `checkServerIdentity` accepting exactly `expected` as the server's URI SAN. */
export function expectSpiffeId(
  expected: string,
): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const uris = urisFromSubjectAltName(cert.subjectaltname);
    if (uris.includes(expected)) return undefined;
    return new RemoraError(
      'REMORA_E_PROXY_UPSTREAM_IDENTITY',
      `upstream presented ${uris.join(', ') || 'no SPIFFE ID'}, expected ${expected}`,
      { expected, presented: uris },
    );
  };
}

/** Maps a client-side TLS/connect error to a coded error. */
export function classifyDialError(err: unknown, target: string): RemoraError {
  if (err instanceof RemoraError) return err;
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const code = e.code ?? '';
  // no version or suite in common: the mesh's TLS parameters of the two sides disagree
  if (
    /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_SHARED_CIPHER|NO_CIPHERS_AVAILABLE|WRONG_VERSION/.test(
      code,
    )
  )
    return new RemoraError(
      'REMORA_E_PROXY_TLS_NEGOTIATION',
      `TLS with ${target} failed: ${e.message}; the two sides share no TLS version or suite (mesh TLS.Outgoing here, TLS.Incoming there)`,
      { target, cause: code },
      { cause: err },
    );
  if (
    code.startsWith('ERR_TLS_') ||
    code.startsWith('ERR_SSL_') ||
    /certificate|CERT_/.test(`${code} ${e.message}`)
  )
    return new RemoraError(
      'REMORA_E_PROXY_UPSTREAM_IDENTITY',
      `TLS with ${target} failed: ${e.message}`,
      { target, cause: code },
      { cause: err },
    );
  return new RemoraError(
    'REMORA_E_PROXY_CONNECT_FAILED',
    `cannot connect to ${target}: ${e.message}`,
    { target, cause: code },
    { cause: err },
  );
}
