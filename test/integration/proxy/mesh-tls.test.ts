// The mesh's TLS versions and suites (docs/proxy.md, "Mesh TLS versions and suites"): incoming on
// the sidecar port, outgoing to other sidecars, changed on running proxies by a snapshot. Real
// sidecars, real TLS handshakes.
import t from 'tap';
import tls from 'node:tls';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { makeUpstream } from '../../helpers/mesh-certs.ts';
import type { MeshTlsConfig } from '../../../lib/proxy-api/index.ts';
import { request, startSidecar, startTwoSidecars, type Sidecar } from './mesh.ts';

function withMeshTls(sc: Sidecar, meshTls: MeshTlsConfig | undefined) {
  const { meshTls: _old, ...rest } = sc.snapshot;
  return sc.apply({ ...rest, version: sc.snapshot.version + 1, ...(meshTls ? { meshTls } : {}) });
}

/** A TLS handshake to `port` with web's certificate, limited to `maxVersion`. */
async function handshake(
  port: number,
  leaf: { certPem: string; keyPem: string },
  maxVersion: tls.SecureVersion,
): Promise<string> {
  const s = tls.connect({
    port,
    host: '127.0.0.1',
    cert: leaf.certPem,
    key: leaf.keyPem,
    rejectUnauthorized: false,
    maxVersion,
  });
  try {
    await once(s, 'secureConnect');
    return s.getProtocol() ?? 'none';
  } catch (err) {
    return `refused: ${(err as NodeJS.ErrnoException).code}`;
  } finally {
    s.destroy();
  }
}

t.test('incoming TLSv1_3 minimum: a TLS 1.2 caller is refused and counted', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const web = m.mesh.cachedLeaf('web');
  t.equal(await handshake(m.api.inboundPort, web, 'TLSv1.2'), 'TLSv1.2', 'TLS 1.2 by default');
  await withMeshTls(m.api, { incoming: { minVersion: 'TLSv1_3' } });
  t.match(
    await handshake(m.api.inboundPort, web, 'TLSv1.2'),
    /^refused/,
    'refused on the same listener',
  );
  t.equal(await handshake(m.api.inboundPort, web, 'TLSv1.3'), 'TLSv1.3');
  t.match(
    await m.api.proxy.metrics.registry.metrics(),
    /remora_proxy_tls_handshake_failures_total\{direction="inbound",reason="protocol"\} 1/,
  );
  t.equal((await request(m.url('/'))).status, 200, 'sidecars speak TLS 1.3 to each other');

  // web capped at TLS 1.2 outgoing cannot reach it: the call fails with a code, not a hang
  await withMeshTls(m.web, { outgoing: { maxVersion: 'TLSv1_2' } });
  const r = await request(m.url('/'));
  t.equal(r.status, 502);
  t.equal(r.headers['x-remora-error'], 'REMORA_E_PROXY_TLS_NEGOTIATION');
  t.match(r.body, /share no TLS version or suite/, 'the reason says what to align');
  await withMeshTls(m.api, undefined);
  t.equal((await request(m.url('/'))).status, 200, 'back once the minimum is dropped');
});

t.test('outgoing TLS 1.2 suites are the ones offered', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const api = m.mesh.cachedLeaf('api');
  let seen: { protocol: string | null; cipher: string } | null = null;
  // an endpoint that answers HTTP/1.1 and records what was negotiated
  const endpoint = tls.createServer(
    {
      cert: api.certPem,
      key: api.keyPem,
      ca: m.mesh.ca.certPem,
      requestCert: true,
      ALPNProtocols: ['http/1.1'],
    },
    (s) => {
      seen = { protocol: s.getProtocol(), cipher: s.getCipher().name };
      s.on('error', () => {});
      s.once('data', () =>
        s.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok'),
      );
    },
  );
  endpoint.listen(0, '127.0.0.1');
  await once(endpoint, 'listening');
  t.teardown(() => endpoint.close());
  const web = await startSidecar(m.mesh, 'web', {
    upstreams: [makeUpstream(m.mesh, 'api', [(endpoint.address() as AddressInfo).port])],
  });
  t.teardown(() => web.proxy.close());
  await withMeshTls(web, {
    outgoing: {
      maxVersion: 'TLSv1_2',
      cipherSuites: ['TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'],
    },
  });
  const port = web.proxy.addresses().upstreams.api!.port;
  t.equal((await request(`http://127.0.0.1:${port}/`)).status, 200);
  t.same(seen, { protocol: 'TLSv1.2', cipher: 'ECDHE-RSA-AES256-GCM-SHA384' });
});
