// Per-instance rate limits (docs/proxy.md, "Rate limits"): api's sidecar admits its burst, then
// answers 429 REMORA_E_PROXY_RATE_LIMITED with retry-after, and the app never sees the rest; a
// route has a bucket of its own; denied calls take no token; HTTP/2 and gRPC get the same.
// Real sidecars, real mTLS. The buckets refill one request every 20 s, so nothing refills
// while a test runs.
import t from 'tap';
import http2 from 'node:http2';
import { ERROR_HEADER } from '../../../proxy/stages/responder.ts';
import type { RateLimitConfig } from '../../../lib/proxy-api/index.ts';
import { request, startH2Pair, startTwoSidecars, type Sidecar } from './mesh.ts';

const SLOW = 0.05;

async function limit(api: Sidecar, rateLimit: RateLimitConfig): Promise<void> {
  await api.apply({
    ...api.snapshot,
    version: api.snapshot.version + 1,
    inbound: { ...api.snapshot.inbound, rateLimit },
  });
}

t.test(
  'the burst passes, the rest is answered 429 before the app; a route has its own',
  async (t) => {
    const m = await startTwoSidecars();
    t.teardown(() => m.close());
    await limit(m.api, {
      instance: { requestsPerSecond: SLOW, burst: 3 },
      routes: [
        { pathPrefix: '/reports', requestsPerSecond: SLOW, burst: 1 },
        { pathExact: '/health', requestsPerSecond: 1000, burst: 1000 },
      ],
    });
    const statuses = async (path: string, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await request(m.url(path))).status);
      return out;
    };
    const hits = m.app.hits;
    t.same(await statuses('/orders', 5), [200, 200, 200, 429, 429], 'a burst of 3');
    t.equal(m.app.hits - hits, 3, 'the app saw only what was admitted');
    const limited = await request(m.url('/orders?page=2'));
    t.equal(limited.status, 429);
    t.equal(limited.headers[ERROR_HEADER], 'REMORA_E_PROXY_RATE_LIMITED');
    t.match(limited.headers['retry-after'], /^\d+$/, 'when to come back');
    t.ok(Number(limited.headers['retry-after']) >= 1);
    t.match(
      limited.body,
      /^REMORA_E_PROXY_RATE_LIMITED: api admits 0\.05 requests per second \(burst 3; its service-defaults RateLimits\); retry after \d+ s/,
    );
    t.same(await statuses('/reports/daily?x=1', 2), [200, 429], "the route's own bucket of 1");
    // a large upload over the limit (streamed, not buffered): refused before the app reads it
    const before = m.app.hits;
    const upload = await request(m.url('/orders'), {
      method: 'POST',
      body: Buffer.alloc(2 * 1024 * 1024, 'x'),
    });
    t.equal(upload.status, 429, 'a 2 MiB upload is refused');
    t.equal(m.app.hits, before, 'and never reached the app');
    t.same(await statuses('/health', 5), [200, 200, 200, 200, 200], 'a generous route');

    // a snapshot that changes something else keeps the buckets: no new burst
    await m.api.apply({ ...m.api.snapshot, version: m.api.snapshot.version + 1 });
    t.same(await statuses('/orders', 1), [429], 'still empty after an unrelated snapshot');
    // new limits: new buckets
    await limit(m.api, { instance: { requestsPerSecond: SLOW, burst: 2 } });
    t.same(await statuses('/reports', 3), [200, 200, 429], 'routes gone: the instance bucket');

    const text = await m.api.proxy.metrics.registry.metrics();
    t.match(text, /remora_proxy_rate_limited_total\{limit="instance"\} [4-9]/);
    t.match(text, /remora_proxy_rate_limited_total\{limit="\/reports\*"\} 1/);
    t.match(
      text,
      /remora_proxy_requests_total\{direction="inbound",service="api",code="4xx"\} 7/,
      'counted as answers',
    );
  },
);

t.test('a call the intentions deny takes no token', async (t) => {
  const m = await startTwoSidecars({ intentions: { defaultPolicy: 'deny' } });
  t.teardown(() => m.close());
  await limit(m.api, { instance: { requestsPerSecond: SLOW, burst: 1 } });
  for (let i = 0; i < 3; i++) t.equal((await request(m.url('/'))).status, 403);
  await m.api.apply({
    ...m.api.snapshot,
    version: m.api.snapshot.version + 1,
    intentions: { ...m.api.snapshot.intentions, defaultPolicy: 'allow' },
  });
  t.equal((await request(m.url('/'))).status, 200, 'the one token is still there');
  t.equal((await request(m.url('/'))).status, 429);
});

t.test('HTTP/2 gets 429 with retry-after, gRPC gets RESOURCE_EXHAUSTED', async (t) => {
  const m = await startH2Pair((stream) => {
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  t.teardown(() => m.close());
  await limit(m.api, { instance: { requestsPerSecond: SLOW, burst: 2 } });
  const client = http2.connect(`http://127.0.0.1:${m.port}`);
  t.teardown(() => client.close());
  const call = (headers: http2.OutgoingHttpHeaders) =>
    new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const s = client.request({ ':path': '/v1/x', ...headers });
      s.on('response', (h) => {
        s.resume();
        s.on('end', () => resolve(h));
      });
      s.on('error', reject);
      s.end();
    });
  t.equal((await call({}))[':status'], 200);
  t.equal((await call({}))[':status'], 200);
  const h = await call({});
  t.equal(h[':status'], 429);
  t.equal(h[ERROR_HEADER], 'REMORA_E_PROXY_RATE_LIMITED');
  t.ok(Number(h['retry-after']) >= 1);
  const g = await call({ 'content-type': 'application/grpc', ':method': 'POST' });
  t.equal(g[':status'], 200, 'gRPC errors travel in the status field');
  t.equal(g['grpc-status'], '8', 'RESOURCE_EXHAUSTED');
  t.match(
    decodeURIComponent(String(g['grpc-message'])),
    /^REMORA_E_PROXY_RATE_LIMITED: api admits/,
  );
});
