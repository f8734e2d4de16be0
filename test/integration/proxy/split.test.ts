// Routes and traffic splits (Consul service-router, service-splitter) through real sidecars:
// web's upstream `api` sends some of its requests to api-v2, whose own sidecar checks its own
// intentions.
import t from 'tap';
import type { Test } from 'tap';
import http2 from 'node:http2';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type {
  HttpRoute,
  ProxySnapshot,
  TrafficSplit,
  UpstreamConfig,
} from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeUpstream, type MeshCerts } from '../../helpers/mesh-certs.ts';
import { startEchoApp, startH2AppSidecar, startSidecar, type Sidecar } from './mesh.ts';

/** web's upstream to api, split by `weights` between api and api-v2 (no split when null). */
function splitUpstream(
  mesh: MeshCerts,
  ports: { api: number; v2: number },
  weights: { api: number; v2: number } | null,
  protocol: UpstreamConfig['protocol'] = 'http',
): UpstreamConfig {
  const u = makeUpstream(mesh, 'api', [ports.api], { protocol });
  if (weights === null) return u;
  const v2 = makeUpstream(mesh, 'api-v2', [ports.v2]);
  return {
    ...u,
    splits: [
      { service: 'api', weight: weights.api },
      { service: 'api-v2', weight: weights.v2 },
    ],
    targets: [
      {
        destinationName: 'api-v2',
        destinationSpiffeId: v2.destinationSpiffeId,
        loadBalancer: v2.loadBalancer,
        resilience: v2.resilience,
        endpoints: v2.endpoints,
      },
    ],
  };
}

async function get(
  port: number,
  path = '/',
): Promise<{ status: number; body: string; code: string | null }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text(), code: r.headers.get('x-remora-error') };
}

async function startSplitMesh(
  t: Test,
  o: { v2Intentions?: Partial<ProxySnapshot['intentions']> } = {},
): Promise<{
  web: Sidecar;
  mesh: MeshCerts;
  ports: { api: number; v2: number };
  port: () => number;
}> {
  const mesh = createMeshCerts();
  const apiApp = await startEchoApp('api');
  const v2App = await startEchoApp('api-v2');
  const api = await startSidecar(mesh, 'api', { appPort: apiApp.port });
  const v2 = await startSidecar(mesh, 'api-v2', {
    appPort: v2App.port,
    ...(o.v2Intentions ? { intentions: o.v2Intentions } : {}),
  });
  const ports = { api: api.inboundPort, v2: v2.inboundPort };
  const web = await startSidecar(mesh, 'web', {
    upstreams: [splitUpstream(mesh, ports, { api: 0, v2: 100 })],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await api.proxy.close();
    await v2.proxy.close();
    await apiApp.close();
    await v2App.close();
  });
  return { web, mesh, ports, port: () => web.proxy.addresses().upstreams.api!.port };
}

t.test('http: requests follow the split weights, and a new split applies live', async (t) => {
  const { web, mesh, ports, port } = await startSplitMesh(t);
  const apps = async (n: number): Promise<Record<string, number>> => {
    const seen: Record<string, number> = {};
    for (let i = 0; i < n; i++) {
      const r = await get(port());
      t.equal(r.status, 200);
      const app = (JSON.parse(r.body) as { app: string }).app;
      seen[app] = (seen[app] ?? 0) + 1;
    }
    return seen;
  };
  t.same(await apps(20), { 'api-v2': 20 }, 'api 0 %, api-v2 100 %: every request reaches api-v2');

  const r = await get(port());
  t.match(
    (JSON.parse(r.body) as { xfcc: string }).xfcc,
    /URI=spiffe:\/\/.*\/svc\/web$/,
    'api-v2 sees the caller, web',
  );
  const clusters = web.proxy.clusters() as Array<{
    name: string;
    splitOf?: string;
    splits?: unknown;
  }>;
  t.same(
    clusters.map((c) => ({
      name: c.name,
      splitOf: c.splitOf ?? null,
      split: c.splits !== undefined,
    })),
    [
      { name: 'api', splitOf: null, split: true },
      { name: 'api-v2', splitOf: 'api', split: false },
    ],
    '/clusters lists the split target after its upstream',
  );

  await web.apply({
    ...web.snapshot,
    version: web.snapshot.version + 1,
    upstreams: [splitUpstream(mesh, ports, { api: 50, v2: 50 })],
  });
  const half = await apps(60);
  t.ok(
    (half.api ?? 0) > 0 && (half['api-v2'] ?? 0) > 0,
    `50/50 reaches both: ${JSON.stringify(half)}`,
  );

  await web.apply({
    ...web.snapshot,
    version: web.snapshot.version + 1,
    upstreams: [splitUpstream(mesh, ports, null)],
  });
  t.same(await apps(10), { api: 10 }, 'without a split every request goes to api');
  t.same(
    (web.proxy.clusters() as Array<{ name: string }>).map((c) => c.name),
    ['api'],
    'the split target is gone',
  );
});

t.test("a split target's sidecar enforces its own intentions", async (t) => {
  const { port } = await startSplitMesh(t, {
    v2Intentions: {
      intentions: [{ source: 'web', destination: 'api-v2', action: 'deny' }],
    },
  });
  const r = await get(port());
  t.equal(r.status, 403);
  t.equal(r.code, 'REMORA_E_PROXY_INTENTION_DENIED');
  t.match(r.body, /web.*api-v2/);
});

/** web's upstream to api with routes to api-v2: `/v2/…` (rewritten to `/…`), and x-canary: 1. */
function routedUpstream(
  mesh: MeshCerts,
  ports: { api: number; v2: number },
  protocol: UpstreamConfig['protocol'] = 'http',
): UpstreamConfig {
  const u = splitUpstream(mesh, ports, { api: 100, v2: 0 }, protocol);
  const toV2 = [{ service: 'api-v2', weight: 100 }];
  const { splits: _none, ...rest } = u;
  return {
    ...rest,
    routes: [
      { match: { pathPrefix: '/v2/' }, splits: toV2, prefixRewrite: '/' },
      { match: { header: [{ name: 'x-canary', exact: '1' }], methods: ['GET'] }, splits: toV2 },
      { match: { pathPrefix: '/' }, query: [{ name: 'version', exact: '2' }], splits: toV2 },
    ],
  };
}

t.test('http: routes send matching requests to their service, rewriting the path', async (t) => {
  const { web, mesh, ports, port } = await startSplitMesh(t);
  await web.apply({
    ...web.snapshot,
    version: web.snapshot.version + 1,
    upstreams: [routedUpstream(mesh, ports)],
  });
  const call = async (path: string, headers: Record<string, string> = {}, method = 'GET') => {
    const r = await fetch(`http://127.0.0.1:${port()}${path}`, { method, headers });
    const b = (await r.json()) as { app: string; url: string };
    return `${b.app} ${b.url}`;
  };
  t.equal(await call('/v2/users?page=2'), 'api-v2 /users?page=2', 'prefix matched and rewritten');
  t.equal(await call('/v2'), 'api /v2', 'no trailing slash: the prefix does not match');
  t.equal(await call('/users', { 'x-canary': '1' }), 'api-v2 /users', 'the header route');
  t.equal(
    await call('/users', { 'x-canary': '1' }, 'DELETE'),
    'api /users',
    'the header route is for GET only',
  );
  t.equal(await call('/users?a=1&version=2'), 'api-v2 /users?a=1&version=2', 'the query route');
  t.equal(await call('/users?version=3'), 'api /users?version=3', 'another value');
  t.equal(await call('/users'), 'api /users', 'no route matches: the default (api)');
});

/**
 * api and api-v2 as h2c apps (each answers `<service> <path>`) behind their sidecars, and web's
 * sidecar with `upstream(ports)`; returns an h2c client of web's api listener and a GET.
 */
async function startH2Mesh(
  t: Test,
  upstream: (mesh: MeshCerts, ports: { api: number; v2: number }) => UpstreamConfig,
): Promise<(path: string, extra?: http2.OutgoingHttpHeaders) => Promise<string>> {
  const mesh = createMeshCerts();
  const start = (name: string) => startH2AppSidecar(mesh, name, (path) => `${name} ${path}`);
  const api = await start('api');
  const v2 = await start('api-v2');
  const web = await startSidecar(mesh, 'web', {
    upstreams: [upstream(mesh, { api: api.sc.inboundPort, v2: v2.sc.inboundPort })],
  });
  const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
  client.on('error', () => {});
  t.teardown(async () => {
    client.close();
    await web.proxy.close();
    for (const x of [api, v2]) {
      await x.sc.proxy.close();
      x.app.close();
    }
  });
  return (path, extra = {}) =>
    new Promise<string>((resolve, reject) => {
      const req = client.request({ ':path': path, ...extra });
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => resolve(body));
      req.on('error', reject);
    });
}

t.test('http2: streams follow the split to the target service', async (t) => {
  const call = await startH2Mesh(t, (mesh, ports) =>
    splitUpstream(mesh, ports, { api: 0, v2: 100 }, 'http2'),
  );
  t.same([await call('/'), await call('/'), await call('/')], ['api-v2 /', 'api-v2 /', 'api-v2 /']);
});

t.test('http2: routes apply to streams too', async (t) => {
  const call = await startH2Mesh(t, (mesh, ports) => routedUpstream(mesh, ports, 'http2'));
  t.equal(await call('/v2/feed'), 'api-v2 /feed');
  t.equal(await call('/feed', { 'x-canary': '1' }), 'api-v2 /feed');
  t.equal(await call('/feed?version=2'), 'api-v2 /feed?version=2');
  t.equal(await call('/feed'), 'api /feed');
});

/**
 * web's sidecar in front of api's, whose app listens on `appPort`, with `routes` on web's api
 * upstream (every route to api itself, through `routeShare`'s header changes) and `splits` for
 * the other requests; returns web's api listener port.
 */
async function startRoutedPair(
  t: Test,
  appPort: number,
  routes: Array<Omit<HttpRoute, 'splits'>>,
  protocol: UpstreamConfig['protocol'] = 'http',
  o: { routeShare?: Partial<TrafficSplit>; splits?: TrafficSplit[] } = {},
): Promise<{ port: number; metrics: () => Promise<string> }> {
  const mesh = createMeshCerts();
  const api = await startSidecar(mesh, 'api', { appPort, protocol });
  const base = makeUpstream(mesh, 'api', [api.inboundPort], { protocol });
  const toApi = [{ service: 'api', weight: 100, ...o.routeShare }];
  const web = await startSidecar(mesh, 'web', {
    upstreams: [
      {
        ...base,
        routes: routes.map((r) => ({ ...r, splits: toApi })),
        ...(o.splits ? { splits: o.splits } : {}),
        targets: [],
      },
    ],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await api.proxy.close();
  });
  return {
    port: web.proxy.addresses().upstreams.api!.port,
    metrics: () => web.proxy.metrics.registry.metrics(),
  };
}

t.test("a route's request timeout and retries apply to its requests only", async (t) => {
  const app = await startEchoApp('api', (req, res) => {
    // every answer takes 400 ms
    setTimeout(() => res.writeHead(200).end(`late ${req.url}`), 400);
  });
  t.teardown(() => app.close());
  const { port } = await startRoutedPair(t, app.port, [
    { match: { pathPrefix: '/quick/' }, requestTimeoutMs: 100, maxRetries: 0 },
  ]);
  const quick = await get(port, '/quick/x');
  t.same(
    [quick.status, quick.code],
    [504, 'REMORA_E_PROXY_REQUEST_TIMEOUT'],
    'the route times out',
  );
  t.equal(app.hits, 1, 'and is not retried: its route allows no retry');
  const other = await get(port, '/x');
  t.same([other.status, other.body], [200, 'late /x'], "other paths keep api's own timeout");
});

t.test("a route's retry statuses apply to its idempotent requests only", async (t) => {
  // every other answer is 429: a retry meets the next one, a 200
  let n = 0;
  const app = await startEchoApp('api', (req, res) => {
    n += 1;
    res.writeHead(n % 2 === 1 ? 429 : 200).end(`answer ${n} ${req.method} ${req.url}`);
  });
  t.teardown(() => app.close());
  const { port } = await startRoutedPair(t, app.port, [
    { match: { pathPrefix: '/busy/' }, maxRetries: 2, retryOn: [429] },
  ]);
  const routed = await get(port, '/busy/x');
  t.same([routed.status, routed.body], [200, 'answer 2 GET /busy/x'], 'the 429 was retried');
  const post = await fetch(`http://127.0.0.1:${port}/busy/y`, { method: 'POST', body: 'x' });
  t.same([post.status, await post.text()], [429, 'answer 3 POST /busy/y'], 'a POST is not');
  n = 0;
  const other = await get(port, '/other');
  t.same([other.status, other.body], [429, 'answer 1 GET /other'], 'nor a request of no route');
});

t.test("a route's header changes apply to its requests and their answers", async (t) => {
  const app = await startEchoApp('api', (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-internal': 'secret' });
    res.end(JSON.stringify(req.headers));
  });
  t.teardown(() => app.close());
  const { port } = await startRoutedPair(t, app.port, [
    {
      match: { pathPrefix: '/tagged/' },
      requestHeaders: {
        set: { 'x-route': 'tagged' },
        add: { 'x-extra': 'one' },
        remove: ['x-drop'],
      },
      responseHeaders: { set: { 'x-served-by': 'route-1' }, remove: ['x-internal'] },
    },
  ]);
  const call = async (path: string) => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, {
      headers: { 'x-route': 'from-client', 'x-extra': 'zero', 'x-drop': 'gone' },
    });
    const seen = (await r.json()) as Record<string, string>;
    return {
      app: { route: seen['x-route'], extra: seen['x-extra'], drop: seen['x-drop'] ?? null },
      caller: { by: r.headers.get('x-served-by'), internal: r.headers.get('x-internal') },
    };
  };
  t.same(
    await call('/tagged/x'),
    {
      app: { route: 'tagged', extra: 'zero, one', drop: null },
      caller: { by: 'route-1', internal: null },
    },
    'set replaces, add appends, remove drops; the answer changed too',
  );
  t.same(
    await call('/other'),
    {
      app: { route: 'from-client', extra: 'zero', drop: 'gone' },
      caller: { by: null, internal: 'secret' },
    },
    'other requests are untouched',
  );
});

t.test("a split's header changes apply after its route's, to its share only", async (t) => {
  const app = await startEchoApp('api', (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-internal': 'secret' });
    res.end(JSON.stringify(req.headers));
  });
  t.teardown(() => app.close());
  const { port } = await startRoutedPair(
    t,
    app.port,
    [
      {
        match: { pathPrefix: '/tagged/' },
        requestHeaders: { set: { 'x-route': 'tagged' } },
        responseHeaders: { set: { 'x-served-by': 'route-1' } },
      },
    ],
    'http',
    {
      // the route's share: its changes come after the route's
      routeShare: {
        requestHeaders: { add: { 'x-route': 'v1-share' } },
        responseHeaders: { set: { 'x-served-by': 'v1-share' }, remove: ['x-internal'] },
      },
      // the split of the other requests
      splits: [
        {
          service: 'api',
          weight: 100,
          requestHeaders: { set: { 'x-split': 'main' } },
          responseHeaders: { add: { 'x-served-by': 'main-share' } },
        },
      ],
    },
  );
  const call = async (path: string) => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, {
      headers: { 'x-route': 'from-client' },
    });
    const seen = (await r.json()) as Record<string, string>;
    return {
      app: { route: seen['x-route'], split: seen['x-split'] ?? null },
      caller: { by: r.headers.get('x-served-by'), internal: r.headers.get('x-internal') },
    };
  };
  t.same(
    await call('/tagged/x'),
    {
      app: { route: 'tagged, v1-share', split: null },
      caller: { by: 'v1-share', internal: null },
    },
    "the route's changes, then its share's",
  );
  t.same(
    await call('/other'),
    {
      app: { route: 'from-client', split: 'main' },
      caller: { by: 'main-share', internal: 'secret' },
    },
    "requests no route meets get their split's changes only",
  );
});

t.test('http2: header changes apply to streams', async (t) => {
  const app = http2.createServer();
  app.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'x-internal': 'secret' });
    stream.end(`${String(headers['x-route'])} ${String(headers['x-drop'] ?? '-')}`);
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  t.teardown(() => app.close());
  const { port } = await startRoutedPair(
    t,
    (app.address() as AddressInfo).port,
    [
      {
        match: { pathPrefix: '/' },
        requestHeaders: { set: { 'x-route': 'tagged' }, remove: ['x-drop'] },
        responseHeaders: { set: { 'x-served-by': 'route-1' }, remove: ['x-internal'] },
      },
    ],
    'http2',
    {
      routeShare: {
        requestHeaders: { set: { 'x-drop': 'share' } },
        responseHeaders: { add: { 'x-share': 'yes' } },
      },
    },
  );
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.on('error', () => {});
  t.teardown(() => client.close());
  const got = await new Promise<{ body: string; head: http2.IncomingHttpHeaders }>(
    (resolve, reject) => {
      const req = client.request({ ':path': '/', 'x-route': 'from-client', 'x-drop': 'gone' });
      let body = '';
      let head: http2.IncomingHttpHeaders = {};
      req.on('response', (h) => (head = h));
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => resolve({ body, head }));
      req.on('error', reject);
    },
  );
  t.same(
    {
      body: got.body,
      by: got.head['x-served-by'],
      internal: got.head['x-internal'] ?? null,
      share: got.head['x-share'],
    },
    { body: 'tagged share', by: 'route-1', internal: null, share: 'yes' },
    "the route's changes, then its share's",
  );
});

t.test(
  "a route's gRPC retry conditions retry a trailers-only answer, whatever the method",
  async (t) => {
    // every other stream is refused by the app with a trailers-only UNAVAILABLE (14)
    let n = 0;
    const app = http2.createServer();
    app.on('stream', (stream, headers) => {
      n += 1;
      stream.resume();
      const path = String(headers[':path']);
      if (n % 2 === 1) {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' },
          { endStream: true },
        );
        return;
      }
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(`answer ${n} ${path}`);
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    t.teardown(() => app.close());
    const { port, metrics } = await startRoutedPair(
      t,
      (app.address() as AddressInfo).port,
      [{ match: { pathPrefix: '/pkg.Orders/' }, maxRetries: 2, retryOnGrpc: [14] }],
      'grpc',
    );
    const client = http2.connect(`http://127.0.0.1:${port}`);
    client.on('error', () => {});
    t.teardown(() => client.close());
    const call = (path: string) =>
      new Promise<{ grpcStatus: string; body: string }>((resolve, reject) => {
        const req = client.request({
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/grpc',
        });
        let body = '';
        let grpcStatus = '';
        req.on('response', (h) => {
          if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
        });
        req.on('trailers', (tr) => (grpcStatus = String(tr['grpc-status'])));
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => resolve({ grpcStatus, body }));
        req.on('error', reject);
        req.end(Buffer.from([0, 0, 0, 0, 0]));
      });
    t.same(
      await call('/pkg.Orders/Get'),
      { grpcStatus: '0', body: 'answer 2 /pkg.Orders/Get' },
      'the UNAVAILABLE was retried, though gRPC calls are POSTs',
    );
    t.same(
      await call('/pkg.Users/Get'),
      { grpcStatus: '14', body: '' },
      'a stream of no route is not',
    );
    t.match(
      await metrics(),
      /remora_proxy_retries_total\{upstream="api",reason="status_grpc"\} 1\n/,
      'the retry is counted with its reason',
    );
  },
);
