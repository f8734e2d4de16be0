// Throwaway PKI for one bench run: one mesh root from lib/pki, RSA 2048 leaves for web and api.
// Remora's leaves come from lib/pki exactly as control issues them (one URI SAN, the SPIFFE ID).
// The anchors (HAProxy, nginx) verify the peer by DNS name, so their leaves — same root, same key
// type and size — are issued with openssl and carry a DNS SAN next to the same SPIFFE ID.
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTrustDomain, formatSpiffeId } from '../../lib/identity/index.ts';
import { createCsr, createRootCa, generateKeyPair, issueLeaf } from '../../lib/pki/index.ts';

export interface Leaf {
  certPem: string;
  keyPem: string;
  spiffeId: string;
}

export interface BenchPki {
  dir: string;
  trustDomain: string;
  caPem: string;
  /** lib/pki leaves, for Remora's snapshots. */
  remora: { web: Leaf; api: Leaf; intruder: Leaf };
  /** DNS name the anchors' client sides verify on the server side's certificate. */
  serverName: string;
  /** What the report says about the certificates. */
  description: string;
}

const DAY_MS = 24 * 3600_000;

export function spiffeFor(trustDomain: string, service: string): string {
  return formatSpiffeId({ trustDomain, datacenter: 'dc1', service });
}

export function issueRemoraLeaf(
  ca: { certPem: string; keyPem: string },
  trustDomain: string,
  service: string,
  now = Date.now(),
): Leaf {
  const keys = generateKeyPair();
  const spiffeId = spiffeFor(trustDomain, service);
  const csrPem = createCsr({ keyPem: keys.keyPem, publicKeyPem: keys.publicKeyPem, spiffeId });
  const leaf = issueLeaf({ ca, csrPem, spiffeId, ttlMs: 2 * DAY_MS, now });
  return { certPem: leaf.certPem, keyPem: keys.keyPem, spiffeId };
}

function writeSecret(path: string, data: string): void {
  writeFileSync(path, data, { mode: 0o600 });
  chmodSync(path, 0o600);
}

export function createBenchPki(dir: string): BenchPki {
  const trustDomain = createTrustDomain();
  const now = Date.now();
  const ca = createRootCa({ trustDomain, ttlMs: 2 * DAY_MS, now, commonName: 'Remora bench CA' });
  writeFileSync(join(dir, 'ca.crt'), ca.certPem);
  writeSecret(join(dir, 'ca.key'), ca.keyPem);

  const remora = {
    web: issueRemoraLeaf(ca, trustDomain, 'web', now),
    api: issueRemoraLeaf(ca, trustDomain, 'api', now),
    // a valid mesh certificate for a service no intention allows: must be refused by api
    intruder: issueRemoraLeaf(ca, trustDomain, 'intruder', now),
  };
  for (const [name, leaf] of Object.entries(remora)) {
    writeFileSync(join(dir, `remora-${name}.crt`), leaf.certPem);
    writeSecret(join(dir, `remora-${name}.key`), leaf.keyPem);
  }

  const serverName = 'api.default.svc.dc1.bench';
  for (const service of ['web', 'api']) {
    const key = join(dir, `${service}.key`);
    const csr = join(dir, `${service}.csr`);
    const ext = join(dir, `${service}.ext`);
    const crt = join(dir, `${service}.crt`);
    execFileSync(
      'openssl',
      ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', key],
      {
        stdio: 'ignore',
      },
    );
    chmodSync(key, 0o600);
    execFileSync('openssl', ['req', '-new', '-key', key, '-subj', `/CN=${service}`, '-out', csr], {
      stdio: 'ignore',
    });
    writeFileSync(
      ext,
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage=serverAuth,clientAuth',
        `subjectAltName=URI:${spiffeFor(trustDomain, service)},DNS:${service}.default.svc.dc1.bench`,
        '',
      ].join('\n'),
    );
    execFileSync(
      'openssl',
      [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        join(dir, 'ca.crt'),
        '-CAkey',
        join(dir, 'ca.key'),
        '-CAcreateserial',
        '-days',
        '2',
        '-sha256',
        '-extfile',
        ext,
        '-out',
        crt,
      ],
      { stdio: 'ignore' },
    );
    // HAProxy's `crt` takes certificate and key in one file
    writeSecret(join(dir, `${service}.pem`), readFileSync(crt, 'utf8') + readFileSync(key, 'utf8'));
  }
  execFileSync(
    'openssl',
    ['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'web.crt'), join(dir, 'api.crt')],
    {
      stdio: 'ignore',
    },
  );

  return {
    dir,
    trustDomain,
    caPem: ca.certPem,
    remora,
    serverName,
    description:
      `one throwaway root (lib/pki \`createRootCa\`, RSA 2048, SHA-256, trust domain \`${trustDomain}\`); ` +
      'Remora leaves from lib/pki (`generateKeyPair` → `createCsr` → `issueLeaf`, RSA 2048, one URI SAN ' +
      '`spiffe://…/ns/default/dc/dc1/svc/web|api`); anchor leaves from `openssl x509 -req` with the same root, ' +
      `RSA 2048, the same SPIFFE URI SAN plus DNS SAN \`web|api.default.svc.dc1.bench\` (HAProxy and nginx verify the ` +
      `server side by DNS name \`${serverName}\`; Remora verifies the SPIFFE ID)`,
  };
}
