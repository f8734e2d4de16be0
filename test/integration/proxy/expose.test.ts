// Exposed paths (docs/proxy.md, "Exposed paths"): a plain-HTTP port of the sidecar that serves
// one path of the app to callers outside the mesh, and nothing else. Real sidecars, real apps.
import t from 'tap';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { freePort } from '../../helpers/nats.ts';
import type { ExposePath } from '../../../lib/proxy-api/index.ts';
import { request, startEchoApp, startTwoSidecars, type Sidecar } from './mesh.ts';

function withExpose(sc: Sidecar, expose: ExposePath[] | undefined) {
  const { expose: _old, ...rest } = sc.snapshot;
  return sc.apply({ ...rest, version: sc.snapshot.version + 1, ...(expose ? { expose } : {}) });
}

async function refused(port: number): Promise<boolean> {
  const s = net.connect(port, '127.0.0.1');
  return new Promise((resolve) => {
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

t.test('an exposed path is served in plain HTTP from its app port; nothing else is', async (t) => {
  const metricsApp = await startEchoApp('metrics-port');
  const m = await startTwoSidecars();
  t.teardown(async () => {
    await m.close();
    await metricsApp.close();
  });
  const port = await freePort();
  await withExpose(m.api, [
    { path: '/metrics', localPathPort: metricsApp.port, listenerPort: port, protocol: 'http' },
  ]);
  t.same(m.api.proxy.addresses().exposed['/metrics']?.port, port);

  const r = await request(`http://127.0.0.1:${port}/metrics?format=prom`, {
    headers: { 'x-forwarded-client-cert': 'By=spiffe://evil;URI=spiffe://evil/web' },
  });
  t.equal(r.status, 200);
  t.match(JSON.parse(r.body), {
    app: 'metrics-port',
    url: '/metrics?format=prom',
    xfcc: null, // a caller outside the mesh cannot claim an identity
  });

  for (const path of ['/', '/metrics/extra', '/v1/orders']) {
    const no = await request(`http://127.0.0.1:${port}${path}`);
    t.same(
      [no.status, no.headers['x-remora-error']],
      [404, 'REMORA_E_PROXY_PATH_NOT_EXPOSED'],
      `${path} is not served`,
    );
    t.match(no.body, `${path} is not exposed on this port, which serves /metrics only`);
  }
  t.equal(metricsApp.hits, 1, 'the app saw the exposed path only');

  const text = await m.api.proxy.metrics.registry.metrics();
  t.match(text, /remora_proxy_requests_total\{direction="exposed",service="api",code="2xx"\} 1/);
  t.match(text, /remora_proxy_requests_total\{direction="exposed",service="api",code="4xx"\} 3/);

  // the mesh path is unchanged
  t.equal((await request(m.url('/through-the-mesh'))).status, 200);

  // the same port serving another path of another app port: no second bind, the next request
  // (even on a kept-alive connection) is served by what the port serves now
  const statsApp = await startEchoApp('stats-port');
  t.teardown(() => statsApp.close());
  await withExpose(m.api, [
    { path: '/stats', localPathPort: statsApp.port, listenerPort: port, protocol: 'http' },
  ]);
  const stats = await request(`http://127.0.0.1:${port}/stats`);
  t.match(JSON.parse(stats.body), { app: 'stats-port', url: '/stats' });
  t.equal((await request(`http://127.0.0.1:${port}/metrics`)).status, 404, 'the old path is gone');

  // the next snapshot without it closes the port
  await withExpose(m.api, undefined);
  t.ok(await refused(port), 'closed once the snapshot drops it');
});

t.test('an exposed HTTP/2 path reaches an h2c app port', async (t) => {
  const h2app = http2.createServer();
  h2app.on('stream', (stream, headers) => {
    stream.resume();
    stream.respond({ ':status': 200, 'x-path': String(headers[':path']) });
    stream.end('h2 ok');
  });
  h2app.listen(0, '127.0.0.1');
  await once(h2app, 'listening');
  const m = await startTwoSidecars();
  t.teardown(async () => {
    await m.close();
    h2app.close();
  });
  const port = await freePort();
  await withExpose(m.api, [
    {
      path: '/grpc.health.v1.Health/Check',
      localPathPort: (h2app.address() as AddressInfo).port,
      listenerPort: port,
      protocol: 'http2',
    },
  ]);
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  t.teardown(() => client.close());
  const call = (path: string) =>
    new Promise<{ status: number; path: unknown; code: unknown; body: string }>(
      (resolve, reject) => {
        const req = client.request({ ':method': 'POST', ':path': path });
        let head: http2.IncomingHttpHeaders = {};
        let body = '';
        req.on('response', (h) => (head = h));
        req.on('data', (d: Buffer) => (body += d.toString()));
        req.on('end', () =>
          resolve({
            status: Number(head[':status']),
            path: head['x-path'],
            code: head['x-remora-error'],
            body,
          }),
        );
        req.on('error', reject);
        req.end('x');
      },
    );
  t.same(await call('/grpc.health.v1.Health/Check'), {
    status: 200,
    path: '/grpc.health.v1.Health/Check',
    code: undefined,
    body: 'h2 ok',
  });
  t.match(await call('/other'), { status: 404, code: 'REMORA_E_PROXY_PATH_NOT_EXPOSED' });
});

t.test('a snapshot whose exposed port is taken is refused; the last good one serves', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const taken = net.createServer().listen(0, '127.0.0.1');
  await once(taken, 'listening');
  t.teardown(() => taken.close());
  const port = (taken.address() as AddressInfo).port;
  const version = m.api.snapshot.version;
  await t.rejects(
    withExpose(m.api, [
      { path: '/health', localPathPort: 1, listenerPort: port, protocol: 'http' },
    ]),
    {
      code: 'REMORA_E_PROXY_LISTEN_FAILED',
      message: new RegExp(`127.0.0.1:${port} for exposed path /health`),
    },
  );
  t.equal(m.api.proxy.status().appliedVersion, version, 'the last good snapshot stays');
  t.equal((await request(m.url('/still'))).status, 200);
});
