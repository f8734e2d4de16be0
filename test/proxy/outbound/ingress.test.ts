// An ingress gateway's listeners in the proxy: Host matching, the snapshot field's checks, and
// calls from outside through real gateway and sidecar proxies in this process (real mTLS).
import t from 'tap';
import net from 'node:net';
import http2 from 'node:http2';
import { once } from 'node:events';
import { hostName, matchIngressHost } from '../../../proxy/outbound/ingress.ts';
import { createProxy, type Proxy } from '../../../proxy/proxy.ts';
import { createSilentLogger } from '../../../lib/log/index.ts';
import {
  decodeProxySnapshot,
  type IngressService,
  type ProxySnapshot,
} from '../../../lib/proxy-api/index.ts';
import { freePort } from '../../helpers/nats.ts';
import { createMeshCerts, makeSnapshot, makeUpstream } from '../../helpers/mesh-certs.ts';
import {
  request,
  startEchoApp,
  startEchoTcp,
  startH2AppSidecar,
  startSidecar,
} from '../../integration/proxy/mesh.ts';

t.test('a Host is matched exactly first, then by the longest wildcard, then by *', async (t) => {
  t.equal(hostName('API.example.com:8080'), 'api.example.com');
  t.equal(hostName('api.example.com.'), 'api.example.com');
  t.equal(hostName('[::1]:80'), '[::1]');
  t.equal(hostName('api:port'), null);
  t.equal(hostName(''), null);
  const svc = (upstream: string, hosts: string[]): IngressService => ({ upstream, hosts });
  const services = [
    svc('exact', ['api.example.com']),
    svc('suffix', ['*.example.com']),
    svc('longer', ['*.eu.example.com']),
    svc('prefix', ['api.ingress.*']),
    svc('any', ['*']),
  ];
  const pick = (h: string) => matchIngressHost(services, h)?.upstream ?? null;
  t.equal(pick('api.example.com'), 'exact');
  t.equal(pick('web.example.com'), 'suffix');
  t.equal(pick('a.b.example.com'), 'suffix', 'a wildcard stands for one or more labels');
  t.equal(pick('web.eu.example.com'), 'longer', 'the longest suffix wins');
  t.equal(pick('api.ingress.consul'), 'prefix');
  t.equal(pick('api.ingress.example.org:8080'.replace(':8080', '')), 'prefix');
  t.equal(pick('example.com'), 'any', '*.example.com does not take example.com itself');
  t.equal(pick('elsewhere'), 'any');
  t.equal(matchIngressHost(services.slice(0, 4), 'elsewhere'), null, 'no * → no service');
});

t.test('the snapshot field is optional and checked', async (t) => {
  const mesh = createMeshCerts();
  const base = makeSnapshot(mesh, mesh.cachedLeaf('ingress'), {
    upstreams: [
      makeUpstream(mesh, 'api', [1], { listener: false }),
      makeUpstream(mesh, 'echo', [2], { protocol: 'tcp', listener: false }),
    ],
  });
  t.notOk('ingress' in decodeProxySnapshot(base), 'absent stays absent');
  const http = {
    bindAddress: '127.0.0.1',
    bindPort: 18080,
    protocol: 'http' as const,
    services: [{ upstream: 'api', hosts: ['api.ingress.*', '*.example.com'] }],
  };
  const tcp = {
    bindAddress: '127.0.0.1',
    bindPort: 18081,
    protocol: 'tcp' as const,
    services: [{ upstream: 'echo', hosts: [] }],
  };
  const ok = { ...base, ingress: { listeners: [http, tcp] } };
  t.same(decodeProxySnapshot(ok).ingress, ok.ingress);
  t.equal(decodeProxySnapshot(ok).upstreams[0]!.listener, false);
  const bad = (ingress: unknown, re: RegExp, what: string) =>
    t.throws(() => decodeProxySnapshot({ ...base, ingress }), re, what);
  bad({ listeners: [{ ...http, services: [] }] }, /services` must not be empty/, 'no service');
  bad(
    { listeners: [{ ...http, services: [{ upstream: 'nosuch', hosts: [] }] }] },
    /names no upstream/,
    'an unknown upstream',
  );
  bad(
    { listeners: [{ ...http, services: [{ upstream: 'echo', hosts: ['x'] }] }] },
    /is tcp, the listener http/,
    'a protocol mismatch',
  );
  bad(
    { listeners: [{ ...tcp, services: [{ upstream: 'echo', hosts: ['echo'] }] }] },
    /must be empty on a tcp listener/,
    'hosts on tcp',
  );
  bad(
    { listeners: [{ ...http, services: [{ upstream: 'api', hosts: ['a*.example.com'] }] }] },
    /wildcard only as its whole first label/,
    'a bad wildcard',
  );
  bad({ listeners: [http, { ...tcp, bindPort: 18080 }] }, /already used by ingress listener 0/, '');
  t.throws(
    () => decodeProxySnapshot({ ...base, upstreams: [{ ...base.upstreams[0], listener: true }] }),
    /listener` must be false when present/,
  );
});

/** One raw HTTP/1.1 exchange on a fresh connection, until the peer closes. */
function exchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', reject);
    s.on('close', () => resolve(out));
    s.setTimeout(5000, () => s.destroy(new Error(`no answer: ${out}`)));
  });
}

t.test('outside calls reach services through the gateway by Host and over TCP', async (t) => {
  const mesh = createMeshCerts();
  const apiApp = await startEchoApp('api');
  const webApp = await startEchoApp('web');
  const tcpApp = await startEchoTcp();
  t.teardown(async () => {
    tcpApp.close();
    await Promise.all([apiApp.close(), webApp.close()]);
  });
  const api = await startSidecar(mesh, 'api', { appPort: apiApp.port });
  const web = await startSidecar(mesh, 'web', {
    appPort: webApp.port,
    // web takes calls from nobody but itself: the gateway is refused
    intentions: {
      defaultPolicy: 'deny',
      intentions: [],
    },
  });
  const echo = await startSidecar(mesh, 'echo', { appPort: tcpApp.port, protocol: 'tcp' });
  const grpc = await startH2AppSidecar(mesh, 'greeter', (path) => `h2 ${path}`);
  const gw: Proxy = createProxy({ logger: createSilentLogger() });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([api.proxy.close(), web.proxy.close(), echo.proxy.close()]);
    await grpc.sc.proxy.close();
    grpc.app.close();
  });
  const [httpPort, tcpPort, h2Port, newPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const snapshot: ProxySnapshot = {
    ...makeSnapshot(mesh, mesh.cachedLeaf('ingress'), {
      upstreams: [
        makeUpstream(mesh, 'api', [api.inboundPort], { listener: false }),
        makeUpstream(mesh, 'web', [web.inboundPort], { listener: false }),
        makeUpstream(mesh, 'echo', [echo.inboundPort], { protocol: 'tcp', listener: false }),
        makeUpstream(mesh, 'greeter', [grpc.sc.inboundPort], {
          protocol: 'http2',
          listener: false,
        }),
      ],
    }),
    ingress: {
      listeners: [
        {
          bindAddress: '127.0.0.1',
          bindPort: httpPort,
          protocol: 'http',
          services: [
            {
              upstream: 'api',
              hosts: ['api.example.com', 'api.ingress.*'],
              requestHeaders: { set: { 'x-gateway': 'ingress' } },
              responseHeaders: { add: { 'x-served-by': 'gateway' } },
            },
            { upstream: 'web', hosts: ['web.ingress.*'] },
          ],
        },
        {
          bindAddress: '127.0.0.1',
          bindPort: tcpPort,
          protocol: 'tcp',
          services: [{ upstream: 'echo', hosts: [] }],
        },
        {
          bindAddress: '127.0.0.1',
          bindPort: h2Port,
          protocol: 'http2',
          services: [{ upstream: 'greeter', hosts: ['greeter.ingress.*'] }],
        },
      ],
    },
  };
  await gw.apply(snapshot);
  t.equal(gw.status().ready, true, 'ready without an inbound mTLS listener');
  t.equal(gw.addresses().inbound, null, 'no inbound listener is bound');
  t.same(gw.addresses().upstreams, {}, 'the services have no listener of their own');

  const one = await request(`http://127.0.0.1:${httpPort}/hello`, {
    headers: { host: 'api.example.com:8443' },
  });
  t.equal(one.status, 200, 'Host api.example.com (with a port) is answered');
  const body = JSON.parse(one.body) as { app: string; url: string; xfcc: string };
  t.equal(body.app, 'api', 'by api');
  t.equal(body.url, '/hello');
  t.match(body.xfcc, `URI=${mesh.spiffeIdFor('ingress')}`, 'over mTLS as the gateway');
  t.equal(one.headers['x-served-by'], 'gateway', 'the response header change applied');
  const dflt = await request(`http://127.0.0.1:${httpPort}/`, {
    headers: { host: 'api.ingress.consul' },
  });
  t.equal(JSON.parse(dflt.body).app, 'api', 'the default host <service>.ingress.* reaches api');

  // per request, not per connection: a keep-alive connection may change its Host
  const both = await exchange(
    httpPort,
    'GET /a HTTP/1.1\r\nHost: api.ingress.x\r\n\r\nGET /b HTTP/1.1\r\nHost: web.ingress.x\r\nConnection: close\r\n\r\n',
  );
  t.match(both, /"app":"api"[\s\S]*HTTP\/1\.1 403 /, 'first api, then web on one connection');
  t.match(
    both,
    /x-remora-error: REMORA_E_PROXY_INTENTION_DENIED/i,
    'web refuses the gateway (403)',
  );

  const unknown = await request(`http://127.0.0.1:${httpPort}/`, {
    headers: { host: 'nosuch.example.org' },
  });
  t.equal(unknown.status, 404, 'an unknown Host is answered 404');
  t.equal(unknown.headers['x-remora-error'], 'REMORA_E_PROXY_INGRESS_UNKNOWN_HOST');
  t.match(unknown.body, /"nosuch\.example\.org".*api\.example\.com/, 'naming the hosts it takes');

  const echoed = await new Promise<string>((resolve, reject) => {
    const s = net.connect(tcpPort, '127.0.0.1', () => s.write('through the gateway'));
    s.on('data', (d: Buffer) => {
      resolve(d.toString());
      s.destroy();
    });
    s.on('error', reject);
  });
  t.equal(echoed, 'THROUGH THE GATEWAY', 'the tcp listener reaches echo');

  const h2 = http2.connect(`http://127.0.0.1:${h2Port}`);
  t.teardown(() => h2.close());
  const stream = (authority: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; body: string; error?: string; grpc?: string }>(
      (resolve, reject) => {
        const s = h2.request({ ':path': '/x', ':authority': authority, ...headers });
        let status = 0;
        let error: string | undefined;
        let grpc: string | undefined;
        let out = '';
        s.on('response', (h) => {
          status = Number(h[':status']);
          error = h['x-remora-error'] as string | undefined;
          grpc = h['grpc-status'] as string | undefined;
        });
        s.on('data', (d: Buffer) => (out += d.toString()));
        s.on('end', () =>
          resolve({ status, body: out, ...(error ? { error } : {}), ...(grpc ? { grpc } : {}) }),
        );
        s.on('error', reject);
        s.end();
      },
    );
  const g = await stream('greeter.ingress.example.com');
  t.same([g.status, g.body], [200, 'h2 /x'], 'an h2c stream reaches greeter by :authority');
  const gu = await stream('other.example.com');
  t.same([gu.status, gu.error], [404, 'REMORA_E_PROXY_INGRESS_UNKNOWN_HOST']);
  const gg = await stream('other.example.com', { 'content-type': 'application/grpc' });
  t.same(
    [gg.status, gg.grpc, gg.error],
    [200, '12', 'REMORA_E_PROXY_INGRESS_UNKNOWN_HOST'],
    'a gRPC caller gets UNIMPLEMENTED in a trailers-only answer',
  );

  // a changed entry: the tcp listener goes, a new http listener comes, the rest keeps serving
  await gw.apply({
    ...snapshot,
    version: 2,
    ingress: {
      listeners: [
        snapshot.ingress!.listeners[0]!,
        {
          bindAddress: '127.0.0.1',
          bindPort: newPort,
          protocol: 'http',
          services: [{ upstream: 'api', hosts: ['*'] }],
        },
      ],
    },
  });
  const fresh = await request(`http://127.0.0.1:${newPort}/`, { headers: { host: 'anything' } });
  t.equal(JSON.parse(fresh.body).app, 'api', 'the new listener serves at once');
  const kept = await request(`http://127.0.0.1:${httpPort}/`, {
    headers: { host: 'api.example.com' },
  });
  t.equal(kept.status, 200, 'the kept listener still serves');
  const refused = net.connect(tcpPort, '127.0.0.1');
  const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
  t.equal(err.code, 'ECONNREFUSED', 'the removed tcp listener is closed');
});
