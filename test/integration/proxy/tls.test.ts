import t from 'tap';
import tls from 'node:tls';
import { waitFor } from '../../../lib/util/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import { request, startEchoApp, startSidecar } from './mesh.ts';

const mesh = createMeshCerts();

/** Tries one HTTP request over mTLS straight to a sidecar's inbound port; resolves with what happened. */
function tryCall(port: number, o: { cert?: string; key?: string }): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port,
      ca: [mesh.ca.certPem],
      ...(o.cert ? { cert: o.cert, key: o.key } : {}),
      checkServerIdentity: () => undefined,
    });
    let out = '';
    s.on('secureConnect', () => s.write('GET / HTTP/1.1\r\nHost: api\r\n\r\n'));
    s.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\r\n\r\n')) {
        s.destroy();
        resolve(out.split('\r\n')[0]!);
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`));
    s.on('close', () => resolve(out === '' ? 'closed' : out.split('\r\n')[0]!));
  });
}

async function failures(
  sc: { proxy: { metrics: { registry: { metrics(): Promise<string> } } } },
  reason: string,
) {
  const text = await sc.proxy.metrics.registry.metrics();
  const m = new RegExp(
    `remora_proxy_tls_handshake_failures_total\\{direction="inbound",reason="${reason}"\\} (\\d+)`,
  ).exec(text);
  return Number(m?.[1] ?? 0);
}

t.test('inbound mTLS refuses bad client certificates and counts each by reason', async (t) => {
  const app = await startEchoApp();
  const api = await startSidecar(mesh, 'api', { appPort: app.port });
  t.teardown(async () => {
    await api.proxy.close();
    await app.close();
  });
  const web = mesh.leaf('web');
  t.equal(
    await tryCall(api.inboundPort, { cert: web.certPem, key: web.keyPem }),
    'HTTP/1.1 200 OK',
    'a valid mesh certificate passes',
  );

  t.not(await tryCall(api.inboundPort, {}), 'HTTP/1.1 200 OK', 'no client certificate');
  await waitFor(
    'no_client_cert counted',
    async () => (await failures(api, 'no_client_cert')) === 1,
    5000,
  );

  const expired = mesh.leaf('web', { now: Date.now() - 3 * 3600_000, ttlMs: 3600_000 });
  t.not(
    await tryCall(api.inboundPort, { cert: expired.certPem, key: expired.keyPem }),
    'HTTP/1.1 200 OK',
    'an expired certificate',
  );
  await waitFor('expired counted', async () => (await failures(api, 'expired')) === 1, 5000);

  const foreign = mesh.leaf('web', { ca: mesh.otherCa() });
  t.not(
    await tryCall(api.inboundPort, { cert: foreign.certPem, key: foreign.keyPem }),
    'HTTP/1.1 200 OK',
    'a certificate from another CA',
  );
  await waitFor('unknown_ca counted', async () => (await failures(api, 'unknown_ca')) === 1, 5000);

  t.equal(app.hits, 1, 'only the valid call reached the app');
  t.equal(
    await tryCall(api.inboundPort, { cert: web.certPem, key: web.keyPem }),
    'HTTP/1.1 200 OK',
    'the proxy still serves',
  );
});

t.test(
  'outbound accepts only the destination identity: an endpoint with another SPIFFE ID is refused',
  async (t) => {
    const app = await startEchoApp('db');
    const db = await startSidecar(mesh, 'db', { appPort: app.port });
    // web believes this endpoint is `api`, but it presents db's certificate
    const web = await startSidecar(mesh, 'web', {
      upstreams: [
        makeUpstream(mesh, 'api', [db.inboundPort], {
          resilience: { ...makeUpstream(mesh, 'api', []).resilience, maxRetries: 0 },
        }),
      ],
    });
    t.teardown(async () => {
      await web.proxy.close();
      await db.proxy.close();
      await app.close();
    });
    const res = await request(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}/`);
    t.equal(res.status, 502);
    t.equal(res.headers['x-remora-error'], 'REMORA_E_PROXY_UPSTREAM_IDENTITY');
    t.match(res.body, /expected spiffe:\/\/.*\/svc\/api/);
    t.equal(app.hits, 0);
  },
);
