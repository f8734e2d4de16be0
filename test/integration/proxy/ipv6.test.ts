// Sidecars on IPv6: an inbound listener, an app, an upstream listener and endpoints all on ::1.
import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createProxy } from '../../../proxy/proxy.ts';
import { createSilentLogger } from '../../../lib/log/index.ts';
import { createMeshCerts, makeSnapshot, makeUpstream } from '../../helpers/mesh-certs.ts';

t.test('a call between two sidecars whose addresses are all IPv6', async (t) => {
  const mesh = createMeshCerts();
  const app = http.createServer((req, res) =>
    res.end(`${req.socket.remoteAddress} ${String(req.headers['x-forwarded-client-cert'])}`),
  );
  await new Promise<void>((r) => app.listen(0, '::1', r));
  t.teardown(() => app.close());

  const api = createProxy({ logger: createSilentLogger() });
  t.teardown(() => api.close());
  const inbound = makeSnapshot(mesh, mesh.cachedLeaf('api'), {
    appPort: (app.address() as AddressInfo).port,
  });
  inbound.inbound.bindAddress = '::1';
  inbound.inbound.localAppAddress = '::1';
  await api.apply(inbound);

  const web = createProxy({ logger: createSilentLogger() });
  t.teardown(() => web.close());
  const up = makeUpstream(mesh, 'api', [api.addresses().inbound!.port]);
  up.localBindAddress = '::1';
  for (const e of up.endpoints) e.address = '::1';
  await web.apply(makeSnapshot(mesh, mesh.cachedLeaf('web'), { upstreams: [up] }));

  const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const port = web.addresses().upstreams.api!.port;
    http
      .get({ host: '::1', port, path: '/' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
  t.equal(answer.status, 200);
  t.match(answer.body, /^::1 /, 'the app was called over IPv6');
  t.match(answer.body, /URI=spiffe:\/\/[^;]+\/svc\/web$/, 'api saw web’s identity (mTLS)');
});
