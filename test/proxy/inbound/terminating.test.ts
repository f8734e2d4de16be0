// A terminating gateway's way to services outside the mesh (proxy/inbound/terminating.ts): the
// certificate picked by SNI (the service's or a resolver subset's), instances taken in turn with
// the next one on a refused connection, ejected after consecutive failures, the resolver's
// timeouts, and TLS originated with the entry's CA, client certificate and SNI (strict name check).
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import http2 from 'node:http2';
import { X509Certificate } from 'node:crypto';
import { createTerminatingSet } from '../../../proxy/inbound/terminating.ts';
import { freePort } from '../../helpers/nats.ts';
import { createMeshCerts } from '../../helpers/mesh-certs.ts';
import { hasCode } from '../../../lib/errors/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import type { TerminatingService } from '../../../lib/proxy-api/index.ts';
import { DEFAULT_HTTP_LIMITS } from '../../../proxy/env.ts';
import type { ProxyRequest, ProxyResponse } from '../../../proxy/stages/types.ts';
import { proxyRequest } from '../../helpers/proxy-request.ts';

const limits = { maxHeaderBytes: 16384, maxHeaders: 100 } as never;
const certs = createMeshCerts();
const leaf = certs.cachedLeaf('legacy');

function service(over: Partial<TerminatingService>): TerminatingService {
  return {
    service: 'legacy',
    sni: 'legacy.default.dc1.internal.x.remora',
    protocol: 'tcp',
    certPem: leaf.certPem,
    keyPem: leaf.keyPem,
    endpoints: [],
    ...over,
  };
}

const endpoint = (port: number, id = `e${port}`) => ({
  id,
  address: '127.0.0.1',
  port,
  weight: 1,
  node: 'db-host',
});

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    const s = await p;
    (s as net.Socket).destroy();
    return undefined;
  } catch (err) {
    return hasCode(err) ? err.code : String(err);
  }
}

t.test('the SNI picks the service and its certificate; another SNI none', async (t) => {
  const set = createTerminatingSet({ limits });
  t.teardown(() => set.close());
  set
    .prepare(
      { services: [service({ sni: 'Legacy.default.dc1.internal.x.remora' })] },
      [certs.ca.certPem],
      undefined,
    )
    .commit();
  t.equal(
    set.target('legacy.default.dc1.internal.x.remora')?.service,
    'legacy',
    'case does not matter',
  );
  t.ok(set.context('legacy.default.dc1.internal.x.remora'));
  t.equal(set.target('api.default.dc1.internal.x.remora'), undefined);
  t.equal(set.target(false), undefined, 'no SNI, no service');
  set.prepare(undefined, [], undefined).commit();
  t.equal(set.target('legacy.default.dc1.internal.x.remora'), undefined, 'unlinked');
});

t.test('instances in turn, the next one when a connection is refused', async (t) => {
  const seen: number[] = [];
  const a = net.createServer((s) => (seen.push(1), s.end()));
  const b = net.createServer((s) => (seen.push(2), s.end()));
  const [pa, pb, dead] = [await listen(a), await listen(b), await freePort()];
  t.teardown(() => (a.close(), b.close()));
  const set = createTerminatingSet({ limits });
  t.teardown(() => set.close());
  set
    .prepare(
      { services: [service({ endpoints: [endpoint(dead), endpoint(pa), endpoint(pb)] })] },
      [],
      undefined,
    )
    .commit();
  const target = set.byService('legacy')!;
  for (let i = 0; i < 3; i += 1) (await target.dial(1000)).destroy();
  await waitFor('three connections taken', () => seen.length === 3);
  t.same(seen.sort(), [1, 1, 2], 'the dead instance is skipped, the others share the calls');
  set.prepare({ services: [service({ endpoints: [endpoint(dead)] })] }, [], undefined).commit();
  t.equal(await codeOf(set.byService('legacy')!.dial(1000)), 'REMORA_E_PROXY_CONNECT_FAILED');
  set.prepare({ services: [service({ endpoints: [] })] }, [], undefined).commit();
  t.equal(await codeOf(set.byService('legacy')!.dial(1000)), 'REMORA_E_PROXY_NO_ENDPOINTS');
});

t.test(
  'TLS origination: the CA file decides, a client certificate is presented, SNI is checked',
  async (t) => {
    // the external server's certificate: issued by the entry's CA, for a DNS name
    const server = certs.leaf('db-server');
    const client = certs.leaf('gateway-client');
    const other = createMeshCerts();
    const clients: (string | undefined)[] = [];
    const srv = tls.createServer(
      {
        cert: server.certPem,
        key: server.keyPem,
        ca: certs.ca.certPem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (s) => {
        clients.push(s.getPeerCertificate()?.subjectaltname);
        s.end('ok');
      },
    );
    const port = await listen(srv);
    t.teardown(() => srv.close());
    const set = createTerminatingSet({ limits });
    t.teardown(() => set.close());
    const dialWith = (over: Partial<TerminatingService>) => {
      set
        .prepare({ services: [service({ endpoints: [endpoint(port)], ...over })] }, [], undefined)
        .commit();
      return set.byService('legacy')!.dial(2000);
    };
    const s = (await dialWith({
      tls: { caPem: certs.ca.certPem, certPem: client.certPem, keyPem: client.keyPem },
    })) as tls.TLSSocket;
    t.ok(s.authorized, 'the server chains to the CA file');
    t.equal(
      new X509Certificate(s.getPeerX509Certificate()!.raw).fingerprint256,
      new X509Certificate(server.certPem).fingerprint256,
    );
    // the server answers once it took the handshake, client certificate included
    t.equal(await new Promise((r) => s.once('data', (d: Buffer) => r(d.toString()))), 'ok');
    s.destroy();
    t.match(clients.at(-1), /svc\/gateway-client/, 'the client certificate was presented');
    t.equal(
      await codeOf(dialWith({ tls: { caPem: other.ca.certPem } })),
      'REMORA_E_PROXY_UPSTREAM_IDENTITY',
      'a server another CA issued is refused',
    );
    t.equal(
      await codeOf(dialWith({ tls: { caPem: certs.ca.certPem, sni: 'db.corp.example' } })),
      'REMORA_E_PROXY_UPSTREAM_IDENTITY',
      'with SNI, a certificate without that name is refused (strict SAN match)',
    );
  },
);

t.test('HTTP/2 to a service outside the mesh: h2c, or h2 over the originated TLS', async (t) => {
  const server = certs.leaf('h2-server');
  const plain = http2.createServer((_req, res) => res.end('h2c'));
  const secure = http2.createSecureServer(
    { cert: server.certPem, key: server.keyPem },
    (_req, res) => res.end('h2 over TLS'),
  );
  const [pp, sp] = [await listen(plain), await listen(secure)];
  t.teardown(() => (plain.close(), secure.close()));
  const set = createTerminatingSet({ limits });
  t.teardown(() => set.close());
  const get = (session: http2.ClientHttp2Session) =>
    new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/' });
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => resolve(body));
      req.on('error', reject);
      req.end();
    });
  set
    .prepare(
      {
        services: [
          service({ service: 'a', sni: 'a', protocol: 'http2', endpoints: [endpoint(pp)] }),
          service({
            service: 'b',
            sni: 'b',
            protocol: 'grpc',
            endpoints: [endpoint(sp)],
            tls: { caPem: certs.ca.certPem },
          }),
        ],
      },
      [],
      undefined,
    )
    .commit();
  t.equal(await get(set.byService('a')!.h2Session(1000)), 'h2c');
  const b = set.byService('b')!.h2Session(1000);
  t.equal(await get(b), 'h2 over TLS');
  t.equal(set.byService('b')!.h2Session(1000), b, 'one session, reused');
});

function request(method: string, body: Buffer | null = null): ProxyRequest {
  return proxyRequest({ method, host: 'legacy', body, destination: 'legacy' });
}

async function statusOf(p: Promise<ProxyResponse>): Promise<number | string> {
  try {
    const res = await p;
    if (res.body !== null && !Buffer.isBuffer(res.body)) await res.body.collect(1 << 20);
    return res.status;
  } catch (err) {
    return hasCode(err) ? err.code : String(err);
  }
}

/** An HTTP app outside the mesh that names itself and counts the requests it got, by method. */
async function app(name: string, status = 200) {
  const got: string[] = [];
  const server = http.createServer((req, res) => {
    got.push(req.method ?? '');
    req.resume();
    req.on('end', () => {
      res.statusCode = status;
      res.end(name);
    });
  });
  const port = await listen(server);
  return { got, server, port };
}

t.test('a subset SNI reaches only its instances; the service SNI all of them', async (t) => {
  const v1 = await app('v1');
  const v2 = await app('v2');
  t.teardown(() => (v1.server.close(), v2.server.close()));
  const set = createTerminatingSet({ limits: DEFAULT_HTTP_LIMITS });
  t.teardown(() => set.close());
  const sni = 'legacy.default.dc1.internal.x.remora';
  set
    .prepare(
      {
        services: [
          service({
            protocol: 'http',
            endpoints: [endpoint(v1.port), endpoint(v2.port)],
            subsets: [{ name: 'v2', sni: `V2.${sni}`, endpoints: [endpoint(v2.port)] }],
          }),
        ],
      },
      [certs.ca.certPem],
      undefined,
    )
    .commit();
  const sub = set.target(`v2.${sni}`)!;
  t.equal(sub.service, 'legacy', 'the subset serves its service');
  t.equal(sub.subset, 'v2');
  t.equal(set.context(`v2.${sni}`), set.context(sni), 'with the service’s certificate');
  for (let i = 0; i < 4; i += 1) t.equal(await statusOf(sub.request(request('GET'))), 200);
  t.same([v1.got.length, v2.got.length], [0, 4], 'every call of the subset went to v2');
  for (let i = 0; i < 4; i += 1) await set.target(sni)!.request(request('GET'));
  t.same([v1.got.length, v2.got.length], [2, 6], 'the service’s calls went to both, in turn');
  t.equal(set.target(`v3.${sni}`), undefined, 'a subset the resolver does not define: none');
  // the resolver drops the subset: its SNI is no longer served
  set.prepare({ services: [service({ protocol: 'http' })] }, [], undefined).commit();
  t.equal(set.target(`v2.${sni}`), undefined, 'a removed subset is no longer served');
});

t.test('the resolver’s ConnectTimeout and RequestTimeout bound the calls', async (t) => {
  // an address that drops SYNs is not portable; a server that never answers stands for slow
  const slow = http.createServer(() => {});
  const port = await listen(slow);
  t.teardown(() => (slow.closeAllConnections(), slow.close()));
  const set = createTerminatingSet({ limits: DEFAULT_HTTP_LIMITS });
  t.teardown(() => set.close());
  set
    .prepare(
      {
        services: [
          service({ protocol: 'http', endpoints: [endpoint(port)], requestTimeoutMs: 150 }),
        ],
      },
      [],
      undefined,
    )
    .commit();
  const start = performance.now();
  t.equal(
    await statusOf(set.byService('legacy')!.request(request('POST', Buffer.from('x')))),
    'REMORA_E_PROXY_REQUEST_TIMEOUT',
    'a request the instance does not answer in time fails with a timeout',
  );
  t.ok(performance.now() - start < 2000, 'after the RequestTimeout, not the default');
  // ConnectTimeout: a TLS server that never completes the handshake
  const silent = net.createServer(() => {});
  const sp = await listen(silent);
  t.teardown(() => silent.close());
  set
    .prepare(
      {
        services: [
          service({
            endpoints: [endpoint(sp)],
            tls: { caPem: certs.ca.certPem },
            connectTimeoutMs: 100,
          }),
        ],
      },
      [],
      undefined,
    )
    .commit();
  const at = performance.now();
  t.equal(
    await codeOf(set.byService('legacy')!.dial(10_000)),
    'REMORA_E_PROXY_CONNECT_TIMEOUT',
    'the resolver’s ConnectTimeout wins over the gateway’s own',
  );
  t.ok(performance.now() - at < 2000);
});

t.test(
  'a dead instance: calls retried on another, then it is ejected; a POST is never sent twice',
  async (t) => {
    const live = await app('live');
    const failing = await app('failing', 503);
    const dead = await freePort();
    t.teardown(() => (live.server.close(), failing.server.close()));
    const now = 1_000_000;
    const ejected: string[] = [];
    const set = createTerminatingSet({
      limits: DEFAULT_HTTP_LIMITS,
      clock: { now: () => now, setTimeout, clearTimeout },
      onEjected: (service, id) => ejected.push(`${service}/${id}`),
    });
    t.teardown(() => set.close());
    set
      .prepare(
        {
          services: [
            service({
              protocol: 'http',
              endpoints: [endpoint(dead, 'dead'), endpoint(live.port, 'live')],
            }),
          ],
        },
        [],
        undefined,
      )
      .commit();
    const target = set.byService('legacy')!;
    for (let i = 0; i < 10; i += 1)
      t.equal(
        await statusOf(target.request(request(i % 2 ? 'POST' : 'GET', Buffer.from('x')))),
        200,
      );
    t.equal(live.got.length, 10, 'every call answered by the live instance, POSTs included');
    t.same(ejected, ['legacy/dead'], 'the dead one ejected after 5 failed connections');
    t.equal((await target.dial()).destroy().destroyed, true, 'TCP connects to the live one');
    // a 5xx is no connection failure: a POST that got one is not sent again, a GET is
    set
      .prepare(
        {
          services: [
            service({
              protocol: 'http',
              endpoints: [endpoint(failing.port, 'failing'), endpoint(live.port, 'live')],
              loadBalancer: 'round_robin',
            }),
          ],
        },
        [],
        undefined,
      )
      .commit();
    const before = failing.got.length;
    const answers: (number | string)[] = [];
    for (let i = 0; i < 4; i += 1)
      answers.push(await statusOf(target.request(request('POST', Buffer.from('x')))));
    t.same(answers.sort(), [200, 200, 503, 503], 'the POSTs the failing instance got answer 503');
    t.equal(failing.got.length - before, 2, 'each POST sent once');
  },
);

t.test(
  'an instance registered by hostname gets it as Host unless the entry disables the rewrite',
  async (t) => {
    const hosts: string[] = [];
    const h1 = http.createServer((req, res) => {
      hosts.push(`h1 ${req.headers.host}`);
      res.end('ok');
    });
    const h2 = http2.createServer((req, res) => {
      hosts.push(`h2 ${req.headers[':authority']}`);
      res.end('ok');
    });
    const [p1, p2] = [await listen(h1), await listen(h2)];
    t.teardown(() => (h1.close(), h2.close()));
    const set = createTerminatingSet({ limits: DEFAULT_HTTP_LIMITS });
    t.teardown(() => set.close());
    const byName = (port: number) => ({ ...endpoint(port), address: 'localhost' });
    const apply = (disable: boolean, address: (port: number) => ReturnType<typeof endpoint>) =>
      set
        .prepare(
          {
            services: (
              [
                ['a', 'http', p1],
                ['b', 'http2', p2],
              ] as const
            ).map(([name, protocol, port]) =>
              service({
                service: name,
                sni: name,
                protocol,
                endpoints: [address(port)],
                ...(disable ? { disableAutoHostRewrite: true as const } : {}),
              }),
            ),
          },
          [],
          undefined,
        )
        .commit();
    const h2Get = async () => {
      const target = set.byService('b')!;
      const session = target.h2Session(1000);
      const authority = target.h2Authority();
      await new Promise<void>((resolve, reject) => {
        const req = session.request({
          ':path': '/',
          ':authority': authority ?? 'b.virtual.consul',
        });
        req.resume();
        req.on('end', resolve);
        req.on('error', reject);
        req.end();
      });
      session.close();
    };
    const call = async () => {
      t.equal(await statusOf(set.byService('a')!.request(request('GET'))), 200);
      await h2Get();
    };
    apply(false, byName);
    await call();
    apply(true, byName);
    await call();
    apply(false, endpoint);
    await call();
    t.same(
      hosts,
      [
        'h1 localhost',
        'h2 localhost',
        'h1 legacy',
        'h2 b.virtual.consul',
        'h1 legacy',
        'h2 b.virtual.consul',
      ],
      "rewritten to the instance's hostname; kept when disabled, and for an instance registered by address",
    );
  },
);

t.test('circuit breakers bound the calls to the instances outside the mesh', async (t) => {
  let release: (() => void) | null = null;
  const slow = http.createServer((req, res) => {
    req.resume();
    release = () => res.end('late');
  });
  const echo = net.createServer((s) => s.pipe(s));
  const [hp, tp] = [await listen(slow), await listen(echo)];
  t.teardown(() => (slow.closeAllConnections(), slow.close(), echo.close()));
  const overflows: string[] = [];
  const set = createTerminatingSet({
    limits: DEFAULT_HTTP_LIMITS,
    circuitBreaker: { maxConnections: 1, maxPendingRequests: 0, maxRequests: 1 },
    onOverflow: (service, what) => overflows.push(`${service} ${what}`),
  });
  t.teardown(() => set.close());
  set
    .prepare(
      {
        services: [
          service({ service: 'web', sni: 'web', protocol: 'http', endpoints: [endpoint(hp)] }),
          service({ service: 'db', sni: 'db', protocol: 'tcp', endpoints: [endpoint(tp)] }),
        ],
      },
      [],
      undefined,
    )
    .commit();
  const web = set.byService('web')!;
  const first = web.request(request('GET'));
  await waitFor('the first request at the app', () => release !== null);
  t.equal(await statusOf(web.request(request('GET'))), 'REMORA_E_PROXY_OVERLOADED');
  release!();
  t.equal(await statusOf(first), 200, 'the one in flight is answered');

  const db = set.byService('db')!;
  const socket = await db.dial(1000);
  t.equal(await codeOf(db.dial(1000)), 'REMORA_E_PROXY_OVERLOADED', 'a second connection refused');
  socket.destroy();
  await waitFor('the slot given back', async () => (await codeOf(db.dial(1000))) === undefined);
  t.same([...new Set(overflows)], ['web requests', 'db connections'], 'each refusal reported');
});

t.test(
  "the resolver's LoadBalancer picks the instance: least request avoids a busy one",
  async (t) => {
    const held: http.ServerResponse[] = [];
    const busy = http.createServer((req, res) => (req.resume(), held.push(res)));
    const free = await app('free');
    const bp = await listen(busy);
    t.teardown(() => (busy.closeAllConnections(), busy.close(), free.server.close()));
    const set = createTerminatingSet({ limits: DEFAULT_HTTP_LIMITS, random: () => 0.5 });
    t.teardown(() => set.close());
    const apply = (loadBalancer: 'round_robin' | 'least_request') =>
      set
        .prepare(
          {
            services: [
              service({
                protocol: 'http',
                endpoints: [endpoint(bp), endpoint(free.port)],
                loadBalancer,
              }),
            ],
          },
          [],
          undefined,
        )
        .commit();
    const sni = 'legacy.default.dc1.internal.x.remora';
    // round robin: two calls, one to each instance; the busy one holds its call
    apply('round_robin');
    const target = set.target(sni)!;
    const first = [target.request(request('GET')), target.request(request('GET'))];
    await waitFor('round robin reached both', () => held.length === 1 && free.got.length === 1);
    // least request: the busy instance has a call in flight, every new one goes to the idle one
    apply('least_request');
    for (let i = 0; i < 4; i += 1) t.equal(await statusOf(target.request(request('GET'))), 200);
    t.equal(free.got.length, 5, 'least request: every call to the idle instance');
    t.equal(held.length, 1, 'none more to the busy one');
    held[0]!.end('late');
    t.same(await Promise.all(first.map(statusOf)), [200, 200], 'the held call is answered too');
  },
);
