// The only module that imports node-forge. Keys are made with node:crypto (RSA 2048); forge
// builds CSRs and certificates; signatures are computed natively (node:crypto) for speed.
import {
  X509Certificate,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import forge from 'node-forge';
import { RemoraError } from '../errors/index.ts';
import { trustDomainUri, urisFromSubjectAltName } from '../identity/index.ts';

export const WORKLOAD_KEY_BITS = 2048;
/** Leaf `notBefore` is backdated this much to absorb clock skew between hosts. */
export const LEAF_BACKDATE_MS = 60_000;
export const DEFAULT_LEAF_TTL_MS = 72 * 3600_000;

export interface KeyPair {
  /** PKCS#8 PEM. Never leaves the host that generated it. */
  keyPem: string;
  /** SPKI PEM. */
  publicKeyPem: string;
}

export interface RootCa {
  /** Stable ID of the root: SHA-256 fingerprint of its DER, lowercase hex. */
  id: string;
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface IssuedLeaf {
  certPem: string;
  /** Serial number as lowercase hex. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

export interface CsrInfo {
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  otherSanCount: number;
  keyType: 'rsa' | 'unknown';
  keyBits: number;
  publicKeyPem: string;
}

export interface CertInfo {
  serial: string;
  subject: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  uris: string[];
  /** DNS SANs (an ingress gateway's certificate carries the names it is reached by). */
  dnsNames: string[];
  isCa: boolean;
  /** SHA-256 of the DER, lowercase hex (the root ID for CA certificates). */
  fingerprint: string;
}

/** A fresh RSA 2048 key pair from node:crypto. */
export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: WORKLOAD_KEY_BITS,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { keyPem: privateKey, publicKeyPem: publicKey };
}

function positiveSerial(): string {
  // 16 random bytes with the top bit cleared: positive and unique
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

function forgePublicKey(publicKeyPem: string): forge.pki.PublicKey {
  try {
    return forge.pki.publicKeyFromPem(publicKeyPem);
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_PKI_CERT_INVALID',
      `unsupported public key: ${(err as Error).message}`,
      {},
      { cause: err },
    );
  }
}

/** Signs a forge certificate's TBS with a PEM private key using node:crypto. */
function signNatively(cert: forge.pki.Certificate, signerKey: string | KeyObject): void {
  const oid = forge.pki.oids.sha256WithRSAEncryption!;
  cert.siginfo.algorithmOid = oid;
  cert.signatureOid = oid;
  // getTBSCertificate exists at runtime but is missing from @types/node-forge
  const tbs = (
    forge.pki as unknown as { getTBSCertificate(c: forge.pki.Certificate): forge.asn1.Asn1 }
  ).getTBSCertificate(cert);
  const der = Buffer.from(forge.asn1.toDer(tbs).getBytes(), 'binary');
  const signature = sign(
    'sha256',
    der,
    typeof signerKey === 'string' ? createPrivateKey(signerKey) : signerKey,
  );
  (cert as unknown as { tbsCertificate: forge.asn1.Asn1 }).tbsCertificate = tbs;
  cert.signature = signature.toString('binary');
}

function sha256Hex(der: Buffer): string {
  return createHash('sha256').update(der).digest('hex');
}

/** A new self-signed root for a trust domain; the key is generated here and stays with the caller. */
export function createRootCa(options: {
  trustDomain: string;
  ttlMs: number;
  now: number;
  commonName?: string;
}): RootCa {
  const keys = generateKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forgePublicKey(keys.publicKeyPem);
  cert.serialNumber = positiveSerial();
  const notBefore = new Date(options.now - LEAF_BACKDATE_MS);
  const notAfter = new Date(options.now + options.ttlMs);
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  const attrs = [
    {
      name: 'commonName',
      value: options.commonName ?? `Remora CA ${cert.serialNumber.slice(0, 8)}`,
    },
    { name: 'organizationName', value: 'Remora' },
  ];
  cert.setSubject(attrs);
  cert.setIssuer(attrs);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectAltName', altNames: [{ type: 6, value: trustDomainUri(options.trustDomain) }] },
    { name: 'subjectKeyIdentifier' },
  ]);
  signNatively(cert, keys.keyPem);
  const certPem = forge.pki.certificateToPem(cert);
  return {
    id: inspectCert(certPem).fingerprint,
    certPem,
    keyPem: keys.keyPem,
    notBefore,
    notAfter,
  };
}

/**
 * A CSR carrying one URI SAN (the SPIFFE ID), signed with the workload key; an ingress gateway's
 * also carries the DNS names its listeners are reached by (`dnsNames`, docs/gateways.md).
 */
export function createCsr(options: {
  keyPem: string;
  publicKeyPem: string;
  spiffeId: string;
  dnsNames?: readonly string[];
}): string {
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forgePublicKey(options.publicKeyPem);
  csr.setSubject([]);
  const altNames = [
    { type: 6, value: options.spiffeId },
    ...(options.dnsNames ?? []).map((value) => ({ type: 2, value })),
  ];
  csr.setAttributes([
    { name: 'extensionRequest', extensions: [{ name: 'subjectAltName', altNames }] },
  ]);
  // CSR self-signature: forge needs its own key object; the key never leaves this process
  const pk = forge.pki.privateKeyFromPem(
    createPrivateKey(options.keyPem).export({ type: 'pkcs1', format: 'pem' }).toString(),
  );
  csr.sign(pk, forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

/**
 * A CSR with arbitrary SANs (URIs and DNS names). Workloads use `createCsr`; this exists for
 * tools and for tests that check the signer refuses anything but exactly one SPIFFE ID.
 */
export function createCsrWithSans(options: {
  keyPem: string;
  publicKeyPem: string;
  uris?: readonly string[];
  dnsNames?: readonly string[];
  commonName?: string;
}): string {
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forgePublicKey(options.publicKeyPem);
  csr.setSubject(options.commonName ? [{ name: 'commonName', value: options.commonName }] : []);
  const altNames = [
    ...(options.uris ?? []).map((value) => ({ type: 6, value })),
    ...(options.dnsNames ?? []).map((value) => ({ type: 2, value })),
  ];
  if (altNames.length > 0)
    csr.setAttributes([
      { name: 'extensionRequest', extensions: [{ name: 'subjectAltName', altNames }] },
    ]);
  const pk = forge.pki.privateKeyFromPem(
    createPrivateKey(options.keyPem).export({ type: 'pkcs1', format: 'pem' }).toString(),
  );
  csr.sign(pk, forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

interface ForgeAltName {
  type: number;
  value?: string;
  ip?: string;
}

/** A CSR parsed and verified once, reusable for `issueLeaf` (see `parseCsr`). */
export interface ParsedCsr {
  info: CsrInfo;
  /** Opaque handle for issueLeaf; do not rely on its shape. */
  readonly publicKey: unknown;
  /** SHA-1 of the RSAPublicKey DER (the leaf's subjectKeyIdentifier), binary string. */
  readonly keyId?: string;
}

const SIGNATURE_HASHES: Record<string, string> = {
  sha256WithRSAEncryption: 'sha256',
  sha384WithRSAEncryption: 'sha384',
  sha512WithRSAEncryption: 'sha512',
  sha1WithRSAEncryption: 'sha1',
};

function csrInvalid(message: string, cause?: unknown): RemoraError {
  return new RemoraError(
    'REMORA_E_PKI_CSR_INVALID',
    message,
    {},
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Parses a CSR and verifies its self-signature natively (node:crypto); throws
 * REMORA_E_PKI_CSR_INVALID otherwise. The result can be passed to `issueLeaf` as `csr` so the
 * signer parses each CSR once.
 */
export function parseCsr(csrPem: string): ParsedCsr {
  let csr: forge.pki.CertificateSigningRequest;
  try {
    csr = forge.pki.certificationRequestFromPem(csrPem);
  } catch (err) {
    throw csrInvalid(`CSR cannot be parsed: ${(err as Error).message}`, err);
  }
  const pub = csr.publicKey as forge.pki.rsa.PublicKey | null;
  const raw = csr as unknown as {
    certificationRequestInfo?: forge.asn1.Asn1;
    signature?: string;
    signatureOid?: string;
  };
  const hash = SIGNATURE_HASHES[forge.pki.oids[raw.signatureOid ?? ''] ?? ''];
  const cri = raw.certificationRequestInfo;
  if (!pub || !hash || !cri || typeof raw.signature !== 'string')
    throw csrInvalid('CSR signature does not verify (unsupported algorithm or missing parts)');
  let spki: KeyObject;
  let verified: boolean;
  try {
    const criDer = Buffer.from(forge.asn1.toDer(cri).getBytes(), 'binary');
    const spkiAsn1 = (cri.value as forge.asn1.Asn1[])[2]!;
    spki = createPublicKey({
      key: Buffer.from(forge.asn1.toDer(spkiAsn1).getBytes(), 'binary'),
      format: 'der',
      type: 'spki',
    });
    verified = verify(hash, criDer, spki, Buffer.from(raw.signature, 'binary'));
  } catch (err) {
    throw csrInvalid(`CSR signature does not verify: ${(err as Error).message}`, err);
  }
  if (!verified) throw csrInvalid('CSR signature does not verify');
  const ext = (
    csr.getAttribute({ name: 'extensionRequest' }) as {
      extensions?: Array<{ name?: string; altNames?: ForgeAltName[] }>;
    } | null
  )?.extensions;
  const altNames = ext?.find((e) => e.name === 'subjectAltName')?.altNames ?? [];
  const isRsa = spki.asymmetricKeyType === 'rsa';
  return {
    info: {
      uris: altNames.filter((a) => a.type === 6).map((a) => a.value ?? ''),
      dnsNames: altNames.filter((a) => a.type === 2).map((a) => a.value ?? ''),
      ipAddresses: altNames.filter((a) => a.type === 7).map((a) => a.ip ?? a.value ?? ''),
      otherSanCount: altNames.filter((a) => ![2, 6, 7].includes(a.type)).length,
      keyType: isRsa ? 'rsa' : 'unknown',
      keyBits: isRsa ? (spki.asymmetricKeyDetails?.modulusLength ?? 0) : 0,
      publicKeyPem: spki.export({ type: 'spki', format: 'pem' }).toString(),
    },
    publicKey: pub,
    keyId: isRsa
      ? createHash('sha1')
          .update(spki.export({ type: 'pkcs1', format: 'der' }))
          .digest()
          .toString('binary')
      : undefined,
  };
}

/** Parses a CSR and verifies its self-signature; throws REMORA_E_PKI_CSR_INVALID otherwise. */
export function inspectCsr(csrPem: string): CsrInfo {
  return parseCsr(csrPem).info;
}

interface CaMaterial {
  keyPem: string;
  /** The leaf extensions that are the same for every leaf of this CA, already encoded. */
  fixedExtensions: unknown[];
  subject: forge.pki.CertificateField[];
  keyIdentifier: string;
  notAfter: number;
  key: KeyObject;
}

/** Parsed CA certificates and keys, by certificate PEM (a handful at most: active + retired). */
const caMaterials = new Map<string, CaMaterial>();
const CA_CACHE_LIMIT = 16;

function caMaterial(ca: Pick<RootCa, 'certPem' | 'keyPem'>): CaMaterial {
  const hit = caMaterials.get(ca.certPem);
  if (hit && hit.keyPem === ca.keyPem) return hit;
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const keyIdentifier = caCert.generateSubjectKeyIdentifier().getBytes();
  const probe = forge.pki.createCertificate();
  probe.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'authorityKeyIdentifier', keyIdentifier },
  ]);
  const m: CaMaterial = {
    fixedExtensions: probe.extensions as unknown[],
    keyPem: ca.keyPem,
    subject: caCert.subject.attributes,
    keyIdentifier,
    notAfter: caCert.validity.notAfter.getTime(),
    key: createPrivateKey(ca.keyPem),
  };
  if (caMaterials.size >= CA_CACHE_LIMIT) caMaterials.clear();
  caMaterials.set(ca.certPem, m);
  return m;
}

/**
 * Issues a workload leaf for a CSR whose SANs have already been authorized: one URI SAN (the
 * SPIFFE ID) and `dnsNames` (an ingress gateway's), serverAuth + clientAuth, notBefore = now −
 * 1 min. Give `csr` (from `parseCsr`) to skip parsing the CSR again; otherwise `csrPem` is
 * parsed and verified here.
 */
export function issueLeaf(options: {
  ca: Pick<RootCa, 'certPem' | 'keyPem'>;
  csrPem?: string;
  csr?: ParsedCsr;
  spiffeId: string;
  dnsNames?: readonly string[];
  ttlMs: number;
  now: number;
}): IssuedLeaf {
  const parsed =
    options.csr ?? (options.csrPem !== undefined ? parseCsr(options.csrPem) : undefined);
  if (!parsed) throw csrInvalid('issueLeaf needs csrPem or csr');
  const ca = caMaterial(options.ca);
  const cert = forge.pki.createCertificate();
  cert.publicKey = parsed.publicKey as forge.pki.PublicKey;
  cert.serialNumber = positiveSerial();
  const notBefore = new Date(options.now - LEAF_BACKDATE_MS);
  const notAfter = new Date(Math.min(options.now + options.ttlMs, ca.notAfter));
  cert.validity.notBefore = notBefore;
  cert.validity.notAfter = notAfter;
  cert.setSubject([]);
  cert.setIssuer(ca.subject);
  const [basic, usage, extUsage, aki] = ca.fixedExtensions;
  cert.setExtensions([
    basic,
    usage,
    extUsage,
    {
      name: 'subjectAltName',
      critical: true,
      altNames: [
        { type: 6, value: options.spiffeId },
        ...(options.dnsNames ?? []).map((value) => ({ type: 2, value })),
      ],
    },
    parsed.keyId === undefined
      ? { name: 'subjectKeyIdentifier' }
      : {
          name: 'subjectKeyIdentifier',
          id: forge.pki.oids.subjectKeyIdentifier,
          subjectKeyIdentifier: forge.util.bytesToHex(parsed.keyId),
          value: forge.asn1.create(
            forge.asn1.Class.UNIVERSAL,
            forge.asn1.Type.OCTETSTRING,
            false,
            parsed.keyId,
          ),
        },
    aki,
  ]);
  signNatively(cert, ca.key);
  return {
    certPem: forge.pki.certificateToPem(cert),
    serial: cert.serialNumber,
    notBefore,
    notAfter,
  };
}

/** Facts about a PEM certificate, read with node:crypto. */
export function inspectCert(certPem: string): CertInfo {
  let x: X509Certificate;
  try {
    x = new X509Certificate(certPem);
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_PKI_CERT_INVALID',
      `certificate cannot be parsed: ${(err as Error).message}`,
      {},
      { cause: err },
    );
  }
  return {
    serial: x.serialNumber.toLowerCase(),
    subject: x.subject || '',
    issuer: x.issuer,
    notBefore: new Date(x.validFrom),
    notAfter: new Date(x.validTo),
    uris: urisFromSubjectAltName(x.subjectAltName),
    dnsNames: (x.subjectAltName ?? '')
      .split(', ')
      .filter((part) => part.startsWith('DNS:'))
      .map((part) => part.slice(4)),
    isCa: x.ca,
    fingerprint: sha256Hex(x.raw),
  };
}

/** True when `leafPem` was signed by one of `rootPems` and is valid at `now`. */
export function verifyLeaf(leafPem: string, rootPems: readonly string[], now: number): boolean {
  const leaf = new X509Certificate(leafPem);
  if (now < Date.parse(leaf.validFrom) || now > Date.parse(leaf.validTo)) return false;
  return rootPems.some((pem) => {
    const root = new X509Certificate(pem);
    return leaf.checkIssued(root) && leaf.verify(root.publicKey);
  });
}

/** Splits a PEM bundle into its certificates. */
export function splitPemBundle(bundle: string): string[] {
  return (
    bundle
      .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)
      ?.map((p) => `${p}\n`) ?? []
  );
}
