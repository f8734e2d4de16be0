import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import { waitFor } from '../../../lib/util/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import http2 from 'node:http2';
import {
  rawExchange,
  request,
  startEchoApp,
  startH2Pair,
  startSidecar,
  startTwoSidecars,
  type Sidecar,
} from './mesh.ts';

t.test(
  'a call through two sidecars over mTLS reaches the app with the caller identity',
  async (t) => {
    const m = await startTwoSidecars();
    t.teardown(() => m.close());
    const res = await request(m.url('/v1/things?x=1'), {
      method: 'POST',
      body: 'hello',
      headers: { 'x-forwarded-client-cert': 'spoofed' },
    });
    t.equal(res.status, 200);
    const got = JSON.parse(res.body);
    t.equal(got.url, '/v1/things?x=1');
    t.equal(got.body, 'hello');
    t.equal(got.xfcc, `By=${m.mesh.spiffeIdFor('api')};URI=${m.mesh.spiffeIdFor('web')}`);
    // keep-alive: many requests over one client connection
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.teardown(() => agent.destroy());
    for (let i = 0; i < 20; i++) {
      const r = await request(m.url(`/k/${i}`), { agent });
      t.equal(JSON.parse(r.body).url, `/k/${i}`);
    }
  },
);

t.test(
  "SanitizeXForwardedClientCert: the app gets no x-forwarded-client-cert, not even a caller's, over HTTP/1.1 and HTTP/2",
  async (t) => {
    const sanitize = (sc: Sidecar, on: boolean) =>
      sc.apply({
        ...sc.snapshot,
        version: sc.snapshot.version + 1,
        inbound: { ...sc.snapshot.inbound, sanitizeClientCert: on },
      });
    const m = await startTwoSidecars();
    t.teardown(() => m.close());
    const seen = async () =>
      (
        JSON.parse(
          (await request(m.url('/'), { headers: { 'x-forwarded-client-cert': 'spoofed' } })).body,
        ) as { xfcc: string | null }
      ).xfcc;
    t.match(await seen(), /URI=spiffe:\/\/.*\/svc\/web$/, 'set by default');
    await sanitize(m.api, true);
    t.equal(await seen(), null, 'none once the mesh entry says so');
    await sanitize(m.api, false);
    t.match(await seen(), /URI=spiffe:/, 'and back, live');

    const h2 = await startH2Pair((stream, headers) => {
      stream.respond({ ':status': 200 });
      stream.end(String(headers['x-forwarded-client-cert'] ?? 'none'));
    });
    t.teardown(() => h2.close());
    await sanitize(h2.api, true);
    const client = http2.connect(h2.url(''));
    t.teardown(() => client.close());
    const req = client.request({ ':path': '/', 'x-forwarded-client-cert': 'spoofed' });
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    await new Promise((r) => req.on('end', r));
    t.equal(body, 'none', 'none over HTTP/2 either');
  },
);
t.test('a call denied by an intention gets 403 naming the intention', async (t) => {
  const m = await startTwoSidecars({
    intentions: {
      defaultPolicy: 'allow',
      intentions: [{ source: 'web', destination: 'api', action: 'deny' }],
    },
  });
  t.teardown(() => m.close());
  const res = await request(m.url('/'));
  t.equal(res.status, 403);
  t.equal(res.headers['x-remora-error'], 'REMORA_E_PROXY_INTENTION_DENIED');
  t.match(res.body, /intention denies web → api/);
  t.match(res.body, /remora intention create web api/);
  t.equal(m.app.hits, 0);
  const metrics = await m.api.proxy.metrics.registry.metrics();
  t.match(metrics, /remora_proxy_intention_denials_total\{layer="l4",enforced="true"\} 1/);
  // the refusals are requests too: counted on both sides, as the caller saw them
  t.match(metrics, 'remora_proxy_requests_total{direction="inbound",service="api",code="4xx"} 1');
  t.match(
    await m.web.proxy.metrics.registry.metrics(),
    'remora_proxy_requests_total{direction="outbound",service="api",code="4xx"} 1',
  );
});

t.test('an answer the proxy makes up for a failed connect is counted', async (t) => {
  const mesh = createMeshCerts();
  const web = await startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', [1], { protocol: 'http' })],
  });
  t.teardown(() => web.proxy.close());
  const res = await request(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}/`);
  t.same([res.status, res.headers['x-remora-error']], [502, 'REMORA_E_PROXY_CONNECT_FAILED']);
  const metrics = await web.proxy.metrics.registry.metrics();
  t.match(metrics, 'remora_proxy_requests_total{direction="outbound",service="api",code="5xx"} 1');
  t.match(
    metrics,
    'remora_proxy_request_duration_seconds_count{direction="outbound",service="api"} 1',
  );
});

t.test('chunked bodies and trailers pass through both sidecars', async (t) => {
  const app = await startEchoApp('api', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.write(`got ${Buffer.concat(chunks).length} bytes; `);
      res.write(`trailer ${req.trailers['x-client-sum']}`);
      res.addTrailers({ 'x-checksum': 'abc' });
      res.end();
    });
  });
  const m = await startTwoSidecars({ app });
  t.teardown(() => m.close());
  const raw = await rawExchange(
    m.port,
    'POST /up HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n' +
      '4\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Client-Sum: 7\r\n\r\n',
  );
  t.match(raw, /^HTTP\/1\.1 200 OK\r\n/);
  t.match(raw, /transfer-encoding: chunked/i);
  t.match(raw.replace(/\r\n[0-9a-f]+\r\n/g, ''), /got 7 bytes; trailer 7/);
  t.match(raw, /\r\n0\r\nx-checksum: abc\r\n\r\n$/i);
});

t.test('Expect: 100-continue gets a 100 before the body is sent, then the answer', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const res = await new Promise<{ continued: boolean; status: number; body: string }>(
    (resolve, reject) => {
      let continued = false;
      const req = http.request(
        m.url('/upload'),
        { method: 'PUT', headers: { expect: '100-continue', 'content-length': '5' }, agent: false },
        (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ continued, status: res.statusCode!, body }));
        },
      );
      req.on('continue', () => {
        continued = true;
        req.end('12345');
      });
      req.on('error', reject);
    },
  );
  t.ok(res.continued);
  t.equal(res.status, 200);
  t.equal(JSON.parse(res.body).body, '12345');
});

t.test('a WebSocket upgrade is spliced end to end', async (t) => {
  const app = await startEchoApp();
  app.server.on('upgrade', (req, socket) => {
    socket.on('error', () => {});
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    );
    socket.on('data', (c: Buffer) => socket.write(`echo:${c.toString()}`));
  });
  const m = await startTwoSidecars({ app });
  t.teardown(() => m.close());
  const s = net.connect(m.port, '127.0.0.1');
  t.teardown(() => {
    s.destroy();
  });
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString()));
  s.write(
    'GET /ws HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  );
  await waitFor('101', () => got.includes('\r\n\r\n'), 5000);
  t.match(got, /^HTTP\/1\.1 101 /);
  got = '';
  s.write('ping-1');
  await waitFor('echo', () => got === 'echo:ping-1', 5000);
  s.write('ping-2');
  await waitFor('echo 2', () => got === 'echo:ping-1echo:ping-2', 5000);
  t.pass('frames flow both ways after the upgrade');
});

const smuggling: Array<[string, string, number]> = [
  [
    'Content-Length and Transfer-Encoding together',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    400,
  ],
  [
    'two different Content-Lengths',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde',
    400,
  ],
  [
    'a chunked encoding hidden behind gzip',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
    501,
  ],
  ['obs-fold', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n', 400],
  ['a space before the colon', 'GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n', 400],
  [
    'a malformed chunk size',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    400,
  ],
];

for (const [what, raw, status] of smuggling) {
  t.test(
    `a request with ${what} is refused with ${status}, counted, and never reaches the app`,
    async (t) => {
      const m = await startTwoSidecars();
      t.teardown(() => m.close());
      const out = await rawExchange(m.port, raw);
      t.match(out, new RegExp(`^HTTP/1\\.1 ${status} `));
      t.match(out, /x-remora-error: REMORA_E_PROXY_/);
      t.equal(m.app.hits, 0);
      const text = await m.web.proxy.metrics.registry.metrics();
      t.match(text, /remora_proxy_http_refused_total\{direction="outbound",reason="[a-z_]+"\} 1/);
      // the proxy keeps serving others
      t.equal((await request(m.url('/after'))).status, 200);
    },
  );
}

t.test('oversized heads get 431 and slow heads 408', async (t) => {
  const m = await startTwoSidecars({ limits: { maxHeadBytes: 1024, headerTimeoutMs: 300 } });
  t.teardown(() => m.close());
  const big = await rawExchange(
    m.port,
    `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'x'.repeat(2000)}\r\n\r\n`,
  );
  t.match(big, /^HTTP\/1\.1 431 /);
  const slow = await rawExchange(m.port, 'GET / HTTP/1.1\r\nHost: a\r\n');
  t.match(slow, /^HTTP\/1\.1 408 /);
  t.match(slow, /REMORA_E_PROXY_HEADER_TIMEOUT/);
  const text = await m.web.proxy.metrics.registry.metrics();
  t.match(text, /reason="header_timeout"\} 1/);
  t.match(text, /reason="head_too_large"\} 1/);
});
