// remora-mux/1 between two real sidecars: many HTTP requests share one mTLS connection, each
// answered as soon as it is ready; what does not fit (streaming uploads) and peers that do not
// speak it still work over plain HTTP/1.1.
import t from 'tap';
import http from 'node:http';
import https from 'node:https';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startEchoApp, startSidecar, startTwoSidecars, request, type TwoSidecars } from './mesh.ts';
import { makeUpstream, createMeshCerts } from '../../helpers/mesh-certs.ts';
import { DEFAULT_RESILIENCE } from '../../../lib/proxy-api/index.ts';

/** Connections api's proxy accepted from web's (its inbound listener). */
async function inboundConnections(m: Pick<TwoSidecars, 'api'>): Promise<number> {
  const text = await m.api.proxy.metrics.registry.metrics();
  const line = /^remora_proxy_connections_total\{direction="inbound",service="api"\} (\d+)$/m.exec(
    text,
  );
  return line ? Number(line[1]) : 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function slowFastApp(): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const send = () => {
      res.writeHead(200, {
        'content-type': 'text/plain',
        // an app may send anything, even the protocol's own field names
        'remora-stream': '99',
        'x-seen-remora-stream': String(req.headers['remora-stream'] ?? 'none'),
      });
      res.end(`${req.method} ${req.url}`);
    };
    req.resume();
    if (req.url?.startsWith('/slow')) setTimeout(send, 1200);
    else if (req.url?.startsWith('/hang')) setTimeout(send, 5000);
    else send();
  };
}

t.test(
  'a slow request does not hold up a fast one behind it on the shared connection',
  async (t) => {
    const m = await startTwoSidecars({ app: await startEchoApp('api', slowFastApp()) });
    t.teardown(() => m.close());
    t.equal((await request(m.url('/warm'))).status, 200);
    const slow = request(m.url('/slow'));
    await sleep(100);
    const t0 = performance.now();
    const fast = await request(m.url('/fast'));
    const fastMs = performance.now() - t0;
    t.equal(fast.status, 200);
    t.equal(fast.body, 'GET /fast');
    t.ok(
      fastMs < 800,
      `the fast answer took ${Math.round(fastMs)} ms while the slow one was pending`,
    );
    const s = await slow;
    t.equal(s.status, 200);
    t.equal(s.body, 'GET /slow');
    t.equal(await inboundConnections(m), 1, 'all three requests travelled on one connection');
  },
);

t.test('many requests at once: one connection, each answer to its own request', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const n = 60;
  const answers = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      request(m.url(`/item/${i}`), i % 3 === 0 ? { method: 'POST', body: `body-${i}` } : {}),
    ),
  );
  for (let i = 0; i < n; i++) {
    t.equal(answers[i]!.status, 200);
    const echo = JSON.parse(answers[i]!.body) as { url: string; body: string; method: string };
    t.equal(echo.url, `/item/${i}`);
    t.equal(echo.body, i % 3 === 0 ? `body-${i}` : '');
  }
  t.ok((await inboundConnections(m)) <= 2, 'no connection per request');
});

t.test(
  'the protocol’s own header fields from apps are not forwarded and break nothing',
  async (t) => {
    const m = await startTwoSidecars({ app: await startEchoApp('api', slowFastApp()) });
    t.teardown(() => m.close());
    for (let i = 0; i < 3; i++) {
      const r = await request(m.url('/fast'), {
        headers: { 'remora-stream': '7', 'remora-refused': '1' },
      });
      t.equal(r.status, 200);
      t.equal(r.headers['x-seen-remora-stream'], 'none', 'the app never sees the caller’s value');
      t.equal(r.headers['remora-stream'], undefined, 'the caller never sees the app’s value');
    }
    t.equal(await inboundConnections(m), 1, 'and the shared connection kept working');
  },
);

t.test('a request that times out fails alone; the connection goes on serving', async (t) => {
  const m = await startTwoSidecars({
    app: await startEchoApp('api', slowFastApp()),
    upstream: { resilience: { ...structuredClone(DEFAULT_RESILIENCE), requestTimeoutMs: 400 } },
  });
  t.teardown(() => m.close());
  t.equal((await request(m.url('/fast'))).status, 200);
  // a POST is not retried: one attempt, one timeout
  const hung = request(m.url('/hang'), { method: 'POST', body: 'x' });
  await sleep(50);
  t.equal((await request(m.url('/fast'))).status, 200, 'answered while the other one hangs');
  const h = await hung;
  t.equal(h.status, 504);
  t.equal(h.headers['x-remora-error'], 'REMORA_E_PROXY_REQUEST_TIMEOUT');
  t.equal((await request(m.url('/fast'))).status, 200, 'and after it timed out');
  t.equal(await inboundConnections(m), 1);
});

t.test('a streaming (chunked) upload travels on a connection of its own', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  t.equal((await request(m.url('/warm'))).status, 200);
  const body = await new Promise<string>((resolve, reject) => {
    const req = http1Chunked(m.port, resolve, reject);
    req.write('part-1;');
    setTimeout(() => req.end('part-2'), 50);
  });
  t.equal((JSON.parse(body) as { body: string }).body, 'part-1;part-2');
  t.equal(await inboundConnections(m), 2, 'the multiplexed one and the upload’s own');
});

/** A POST whose body is written in parts: node:http sends it chunked (no Content-Length). */
function http1Chunked(
  port: number,
  resolve: (body: string) => void,
  reject: (e: Error) => void,
): http.ClientRequest {
  const req = http.request(
    { host: '127.0.0.1', port, method: 'POST', path: '/upload', agent: false },
    (res) => {
      let out = '';
      res.on('data', (c: Buffer) => (out += c.toString()));
      res.on('end', () => resolve(out));
      res.on('error', reject);
    },
  );
  req.on('error', reject);
  return req;
}

t.test("no new request rides a connection past its TLS material's life", async (t) => {
  const mesh = createMeshCerts();
  const app = await startEchoApp();
  // api starts with a certificate that expires in 3 s, then rotates to a fresh one
  const shortLived = mesh.leaf('api', { ttlMs: 3000 });
  const api = await startSidecar(mesh, 'api', { appPort: app.port, leaf: shortLived });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', [api.inboundPort])],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await api.proxy.close();
    await app.close();
  });
  const url = `http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}/x`;
  t.equal((await request(url)).status, 200);
  await api.rotate(mesh.leaf('api'));
  t.equal((await request(url)).status, 200);
  t.equal(await inboundConnections({ api }), 1, 'before the expiry, the connection is reused');
  await sleep(Math.max(0, shortLived.notAfter.getTime() - Date.now()));
  t.equal((await request(url)).status, 200);
  t.equal(
    await inboundConnections({ api }),
    2,
    'past the expiry, a new connection (with the fresh certificate) is opened',
  );
  // this side's own certificate is replaced: the next request gets a new handshake too
  await web.rotate(mesh.leaf('web'));
  t.equal((await request(url)).status, 200);
  t.equal(await inboundConnections({ api }), 3, 'after a rotation, a new connection is opened');
});

t.test('a peer that does not speak remora-mux/1 is called over HTTP/1.1', async (t) => {
  const mesh = createMeshCerts();
  const leaf = mesh.cachedLeaf('api');
  // an older sidecar: mTLS with the api identity, HTTP/1.1 only
  const server = https.createServer(
    {
      cert: leaf.certPem,
      key: leaf.keyPem,
      ca: mesh.ca.certPem,
      requestCert: true,
      ALPNProtocols: ['http/1.1'],
    },
    (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(
        `old peer: ${req.method} ${req.url} ${(req.socket as TLSSocket).alpnProtocol || 'none'}`,
      );
    },
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const web = await startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', [(server.address() as AddressInfo).port])],
  });
  t.teardown(() => web.proxy.close());
  const port = web.proxy.addresses().upstreams.api!.port;
  for (const path of ['/a', '/b']) {
    const r = await request(`http://127.0.0.1:${port}${path}`);
    t.equal(r.status, 200);
    t.equal(r.body, `old peer: GET ${path} http/1.1`);
  }
});

t.test(
  'a draining peer answers what it has and refuses what comes after; those go elsewhere',
  async (t) => {
    const mesh = createMeshCerts();
    const apps = [
      await startEchoApp('api-a', slowFastApp()),
      await startEchoApp('api-b', slowFastApp()),
    ];
    const apis = [
      await startSidecar(mesh, 'api', { appPort: apps[0]!.port }),
      await startSidecar(mesh, 'api', { appPort: apps[1]!.port }),
    ];
    const web = await startSidecar(mesh, 'web', {
      upstreams: [
        makeUpstream(
          mesh,
          'api',
          apis.map((a) => a.inboundPort),
        ),
      ],
    });
    t.teardown(async () => {
      await web.proxy.close();
      for (const a of apis) await a.proxy.close();
      for (const a of apps) await a.close();
    });
    const url = (p: string) => `http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}${p}`;
    // warm both endpoints' multiplexed connections
    for (let i = 0; i < 20 && (apps[0]!.hits === 0 || apps[1]!.hits === 0); i++)
      t.equal((await request(url('/fast'))).status, 200);
    t.ok(apps[0]!.hits > 0 && apps[1]!.hits > 0, 'both endpoints in use');
    const slowOnA = Promise.all(Array.from({ length: 6 }, () => request(url('/slow'))));
    await sleep(200);
    const drained = apis[0]!.proxy.drain(5000);
    const hitsAtDrain = apps[0]!.hits;
    // POSTs too: a refused request was not processed, so any method may go elsewhere
    const during = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        request(url(`/fast?i=${i}`), { method: 'POST', body: 'x' }),
      ),
    );
    t.same(
      during.map((r) => r.status),
      during.map(() => 200),
      'every request sent while one endpoint drains is answered',
    );
    t.equal(apps[0]!.hits, hitsAtDrain, 'the draining endpoint took no new request');
    t.same(
      (await slowOnA).map((r) => r.status),
      Array.from({ length: 6 }, () => 200),
      'requests in flight on the draining endpoint finished',
    );
    await drained;
  },
);
