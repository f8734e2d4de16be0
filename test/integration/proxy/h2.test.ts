import t from 'tap';
import http2 from 'node:http2';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../../../lib/util/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import { startSidecar } from './mesh.ts';

for (const protocol of ['http2', 'grpc'] as const) {
  t.test(
    `${protocol}: a bidirectional stream flows through both sidecars and trailers arrive`,
    async (t) => {
      const mesh = createMeshCerts();
      const app = http2.createServer();
      app.on('stream', (stream, headers) => {
        stream.respond(
          {
            ':status': 200,
            'content-type': 'application/grpc',
            'x-peer': String(headers['x-forwarded-client-cert'] ?? ''),
          },
          { waitForTrailers: true },
        );
        let n = 0;
        stream.on('data', (c: Buffer) => {
          n++;
          stream.write(c.toString().toUpperCase());
        });
        stream.on('end', () => stream.end());
        stream.on('wantTrailers', () =>
          stream.sendTrailers({ 'grpc-status': '0', 'x-messages': String(n) }),
        );
      });
      app.listen(0, '127.0.0.1');
      await once(app, 'listening');
      const api = await startSidecar(mesh, 'api', {
        appPort: (app.address() as AddressInfo).port,
        protocol,
      });
      const web = await startSidecar(mesh, 'web', {
        upstreams: [makeUpstream(mesh, 'api', [api.inboundPort], { protocol })],
      });
      const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
      t.teardown(async () => {
        client.close();
        await web.proxy.close();
        await api.proxy.close();
        app.close();
      });
      const req = client.request({
        ':method': 'POST',
        ':path': '/echo.Echo/Chat',
        'content-type': 'application/grpc',
      });
      let got = '';
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders | null = null;
      req.on('response', (h) => (headers = h));
      req.on('data', (c: Buffer) => (got += c.toString()));
      req.on('trailers', (tr) => (trailers = tr));
      req.write('one;');
      await waitFor('first message echoed before the request ends', () => got === 'ONE;', 5000);
      req.write('two;');
      await waitFor('second message', () => got === 'ONE;TWO;', 5000);
      req.end();
      await once(req, 'close');
      t.equal(headers[':status'], 200);
      t.match(
        String(headers['x-peer']),
        /URI=spiffe:\/\/.*\/svc\/web$/,
        'the app sees the caller identity',
      );
      t.same(trailers && { status: trailers['grpc-status'], n: trailers['x-messages'] }, {
        status: '0',
        n: '2',
      });
    },
  );
}

t.test('grpc: a denied call gets grpc-status 7 and the coded reason', async (t) => {
  const mesh = createMeshCerts();
  const app = http2.createServer();
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const api = await startSidecar(mesh, 'api', {
    appPort: (app.address() as AddressInfo).port,
    protocol: 'grpc',
    intentions: {
      intentions: [
        {
          source: 'web',
          destination: 'api',
          permissions: [{ action: 'deny', http: { pathPrefix: '/admin.' } }],
        },
      ],
    },
  });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', [api.inboundPort], { protocol: 'grpc' })],
  });
  const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
  t.teardown(async () => {
    client.close();
    await web.proxy.close();
    await api.proxy.close();
    app.close();
  });
  const req = client.request({
    ':method': 'POST',
    ':path': '/admin.Admin/Drop',
    'content-type': 'application/grpc',
  });
  req.end();
  const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(h['grpc-status'], '7');
  t.equal(h['x-remora-error'], 'REMORA_E_PROXY_INTENTION_DENIED');
  t.match(decodeURIComponent(String(h['grpc-message'])), /permission #1 deny/);
});
