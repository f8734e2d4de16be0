import t from 'tap';
import { once } from 'node:events';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import {
  createCsr,
  createRootCa,
  generateKeyPair,
  inspectCert,
  inspectCsr,
  issueLeaf,
  splitPemBundle,
  verifyLeaf,
} from '../../../lib/pki/index.ts';
import {
  createTrustDomain,
  formatSpiffeId,
  spiffeIdFromSubjectAltName,
} from '../../../lib/identity/index.ts';

const now = Date.now();
const trustDomain = createTrustDomain();
const ca = createRootCa({ trustDomain, ttlMs: 365 * 86400_000, now });
const webId = formatSpiffeId({ trustDomain, datacenter: 'dc1', service: 'web' });
const apiId = formatSpiffeId({ trustDomain, datacenter: 'dc1', service: 'api' });

function leafFor(spiffeId: string, ttlMs = 3600_000, at = now) {
  const keys = generateKeyPair();
  const csrPem = createCsr({ ...keys, spiffeId });
  return { ...keys, ...issueLeaf({ ca, csrPem, spiffeId, ttlMs, now: at }) };
}

t.test('a root CA is self-signed, a CA, and carries the trust domain URI', async (t) => {
  const info = inspectCert(ca.certPem);
  t.ok(info.isCa);
  t.same(info.uris, [`spiffe://${trustDomain}`]);
  t.equal(info.fingerprint, ca.id);
  t.ok(verifyLeaf(ca.certPem, [ca.certPem], now));
});

t.test('a CSR carries exactly the requested SPIFFE ID and an RSA 2048 key', async (t) => {
  const keys = generateKeyPair();
  const info = inspectCsr(createCsr({ ...keys, spiffeId: webId }));
  t.same(info.uris, [webId]);
  t.same(info.dnsNames, []);
  t.equal(info.keyType, 'rsa');
  t.equal(info.keyBits, 2048);
});

t.test('a tampered or garbage CSR is refused', async (t) => {
  t.throws(() => inspectCsr('not a csr'), { code: 'REMORA_E_PKI_CSR_INVALID' });
  const keys = generateKeyPair();
  const other = generateKeyPair();
  // signed with a key that does not match the public key inside
  const forged = createCsr({
    keyPem: other.keyPem,
    publicKeyPem: keys.publicKeyPem,
    spiffeId: webId,
  });
  t.throws(() => inspectCsr(forged), { code: 'REMORA_E_PKI_CSR_INVALID' });
});

t.test(
  'a leaf has one URI SAN, is backdated a minute, and verifies against its root only',
  async (t) => {
    const leaf = leafFor(webId, 7200_000);
    const info = inspectCert(leaf.certPem);
    t.same(info.uris, [webId]);
    t.notOk(info.isCa);
    t.equal(info.serial, leaf.serial);
    t.ok(Math.abs(info.notBefore.getTime() - (now - 60_000)) < 1000);
    t.ok(Math.abs(info.notAfter.getTime() - (now + 7200_000)) < 1000);
    t.ok(verifyLeaf(leaf.certPem, [ca.certPem], now));
    const otherCa = createRootCa({ trustDomain, ttlMs: 86400_000, now });
    t.notOk(verifyLeaf(leaf.certPem, [otherCa.certPem], now), 'a foreign root does not verify it');
    t.ok(
      verifyLeaf(leaf.certPem, [otherCa.certPem, ca.certPem], now),
      'a bundle with both roots does',
    );
    t.notOk(verifyLeaf(leaf.certPem, [ca.certPem], now + 3 * 3600_000), 'expired is not valid');
    t.equal(splitPemBundle(otherCa.certPem + ca.certPem).length, 2);
  },
);

t.test('Node TLS accepts issued leaves for mTLS and exposes the peer SPIFFE IDs', async (t) => {
  const server = leafFor(apiId);
  const client = leafFor(webId);
  const seen: Array<string | undefined> = [];
  const srv = tls.createServer(
    {
      key: server.keyPem,
      cert: server.certPem,
      ca: ca.certPem,
      requestCert: true,
      rejectUnauthorized: true,
    },
    (s) => {
      seen.push(spiffeIdFromSubjectAltName(s.getPeerCertificate().subjectaltname));
      s.end('ok');
    },
  );
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  const port = (srv.address() as AddressInfo).port;
  const sock = tls.connect({
    port,
    host: '127.0.0.1',
    key: client.keyPem,
    cert: client.certPem,
    ca: ca.certPem,
    checkServerIdentity: (_h, cert) =>
      spiffeIdFromSubjectAltName(cert.subjectaltname) === apiId
        ? undefined
        : new Error('wrong identity'),
  });
  const [data] = (await once(sock, 'data')) as [Buffer];
  t.equal(data.toString(), 'ok');
  t.ok(sock.authorized);
  t.equal(spiffeIdFromSubjectAltName(sock.getPeerCertificate().subjectaltname), apiId);
  t.same(seen, [webId]);
  sock.destroy();
});
