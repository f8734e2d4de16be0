// Consistent hashing (docs/proxy.md, "Balancing"): an upstream balanced with ring_hash or maglev
// sends the requests of one user (a header) to one instance, where the ring or Maglev's table
// puts that user, while users spread over the instances, and a user whose instance leaves
// moves alone. Real sidecars, real mTLS, three api instances shared by one caller per policy.
import t from 'tap';
import http2 from 'node:http2';
import { newEndpointState } from '../../../proxy/balance/endpoints.ts';
import { createHashBalancer, hash32 } from '../../../proxy/balance/hash.ts';
import type { Endpoint } from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import {
  request,
  startEchoApp,
  startH2AppSidecar,
  startSidecar,
  type App,
  type Sidecar,
} from './mesh.ts';

const NAMES = ['api-a', 'api-b', 'api-c'];
const users = Array.from({ length: 24 }, (_, i) => `user-${i}`);
const POLICIES = ['ring_hash', 'maglev'] as const;

/**
 * The app each user's requests should reach under `policy` over `endpoints` (the header's
 * value hashed as the sidecar hashes it; endpoint `api-<i>` is app `NAMES[i - 1]`).
 */
function expected(policy: (typeof POLICIES)[number], endpoints: Endpoint[]): string[] {
  const eps = endpoints.map(newEndpointState);
  const balancer = createHashBalancer(policy);
  return users.map((u) => NAMES[Number(balancer(eps, eps, hash32(u))!.id.slice(4)) - 1]!);
}

t.test('consistent hashing on a header through sidecars', async (t) => {
  const mesh = createMeshCerts();
  const apps: App[] = [];
  const apis: Sidecar[] = [];
  for (const name of NAMES) {
    const app = await startEchoApp(name);
    apps.push(app);
    apis.push(
      await startSidecar(mesh, 'api', {
        appPort: app.port,
        intentions: { defaultPolicy: 'allow' },
      }),
    );
  }
  t.teardown(async () => {
    for (const a of apis) await a.proxy.close();
    for (const a of apps) await a.close();
  });
  const ports = apis.map((a) => a.inboundPort);
  const everyone = makeUpstream(mesh, 'api', ports).endpoints;
  t.not(
    expected('maglev', everyone).join(),
    expected('ring_hash', everyone).join(),
    'the ring and the table place these users differently (each case tells them apart)',
  );

  for (const loadBalancer of POLICIES)
    await t.test(
      `${loadBalancer}: one user, one instance; users spread; a leaving instance moves only its users`,
      async (t) => {
        const upstream = makeUpstream(mesh, 'api', ports, {
          loadBalancer,
          hashPolicies: [{ field: 'header', fieldValue: 'X-User' }],
        });
        const web = await startSidecar(mesh, 'web', { upstreams: [upstream] });
        t.teardown(() => web.proxy.close());
        const port = web.proxy.addresses().upstreams.api!.port;
        const served = async (user: string): Promise<string> => {
          const r = await request(`http://127.0.0.1:${port}/`, { headers: { 'x-user': user } });
          return (JSON.parse(r.body) as { app: string }).app;
        };

        const first = new Map<string, string>();
        for (const u of users) first.set(u, await served(u));
        t.same(
          users.map((u) => first.get(u)),
          expected(loadBalancer, upstream.endpoints),
          `each user where the ${loadBalancer === 'maglev' ? 'table' : 'ring'} puts it`,
        );
        for (const u of users) t.equal(await served(u), first.get(u), `${u} stays on its instance`);
        const used = new Set(first.values());
        t.ok(used.size >= 2, `users spread over the instances (${[...used].join(', ')})`);

        // the instance of user-0 leaves the catalog: its users move, the others stay (Maglev
        // moves about 0.1% of the others' slots with 3 instances; none of these 24 users)
        const gone = first.get('user-0')!;
        const idx = NAMES.indexOf(gone);
        await web.apply({
          ...web.snapshot,
          version: web.snapshot.version + 1,
          upstreams: [{ ...upstream, endpoints: upstream.endpoints.filter((_, i) => i !== idx) }],
        });
        for (const u of users) {
          const now = await served(u);
          if (first.get(u) === gone) t.not(now, gone, `${u} moved off the instance that left`);
          else t.equal(now, first.get(u), `${u} did not move`);
        }
      },
    );
});

t.test(
  'ring_hash on a cookie the proxy makes up: a caller without one gets it, and its next calls reach the same instance',
  async (t) => {
    const mesh = createMeshCerts();
    const apps: App[] = [];
    const apis: Sidecar[] = [];
    for (const name of ['api-a', 'api-b', 'api-c']) {
      const app = await startEchoApp(name, (req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ app: name, cookie: req.headers.cookie ?? null }));
      });
      apps.push(app);
      apis.push(await startSidecar(mesh, 'api', { appPort: app.port }));
    }
    const cookie = { ttlSeconds: 3600, path: '/' };
    const upstream = makeUpstream(
      mesh,
      'api',
      apis.map((a) => a.inboundPort),
      { loadBalancer: 'ring_hash', hashPolicies: [{ field: 'cookie', fieldValue: 'sid', cookie }] },
    );
    const web = await startSidecar(mesh, 'web', { upstreams: [upstream] });
    t.teardown(async () => {
      await web.proxy.close();
      for (const a of apis) await a.proxy.close();
      for (const a of apps) await a.close();
    });
    const url = `http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}/`;
    const call = async (headers: Record<string, string>) => {
      const r = await request(url, { headers });
      const body = JSON.parse(r.body) as { app: string; cookie: string | null };
      return { ...body, setCookie: r.headers['set-cookie'] };
    };

    const used = new Set<string>();
    for (let i = 0; i < 12; i++) {
      // half the callers already carry another cookie: the made-up one joins it
      const other: Record<string, string> = i % 2 === 1 ? { cookie: 'theme=dark' } : {};
      const first = await call(other);
      t.equal(first.setCookie?.length, 1, 'one Set-Cookie');
      const m = /^sid=([0-9a-f]{16}); Max-Age=3600; Path=\/; HttpOnly$/.exec(
        first.setCookie?.[0] ?? '',
      );
      t.ok(m, `the cookie's attributes (${first.setCookie?.[0]})`);
      const sid = m![1]!;
      t.equal(
        first.cookie,
        i % 2 === 1 ? `theme=dark; sid=${sid}` : `sid=${sid}`,
        'the request that got the cookie carried it to the app, in its one Cookie field',
      );
      for (let k = 0; k < 3; k++) {
        const next = await call({ cookie: `theme=dark; sid=${sid}` });
        t.equal(next.app, first.app, 'a caller with the cookie stays on its instance');
        t.equal(next.setCookie, undefined, 'and is not given another');
      }
      used.add(first.app);
    }
    t.ok(used.size >= 2, `new callers spread over the instances (${[...used].join(', ')})`);
  },
);

t.test(
  'the made-up cookie over HTTP/2: set in the answer, and its calls stay on one instance',
  async (t) => {
    const mesh = createMeshCerts();
    const apis: { app: http2.Http2Server; sc: Sidecar }[] = [];
    for (const name of ['api-a', 'api-b', 'api-c'])
      apis.push(await startH2AppSidecar(mesh, 'api', () => name));
    const upstream = makeUpstream(
      mesh,
      'api',
      apis.map((a) => a.sc.inboundPort),
      {
        protocol: 'http2',
        loadBalancer: 'ring_hash',
        hashPolicies: [{ field: 'cookie', fieldValue: 'sid', cookie: { ttlSeconds: 0 } }],
      },
    );
    const web = await startSidecar(mesh, 'web', { upstreams: [upstream] });
    const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
    t.teardown(async () => {
      client.close();
      await web.proxy.close();
      for (const a of apis) {
        await a.sc.proxy.close();
        a.app.close();
      }
    });
    const call = (cookie?: string) =>
      new Promise<{ app: string; setCookie: string[] | undefined }>((resolve, reject) => {
        const s = client.request({ ':path': '/', ...(cookie ? { cookie } : {}) });
        let setCookie: string[] | undefined;
        let app = '';
        s.on('response', (h) => (setCookie = h['set-cookie']));
        s.setEncoding('utf8');
        s.on('data', (d: string) => (app += d));
        s.on('end', () => resolve({ app, setCookie }));
        s.on('error', reject);
      });
    const used = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const first = await call();
      const m = /^sid=([0-9a-f]{16}); HttpOnly$/.exec(first.setCookie?.[0] ?? '');
      t.ok(m, `a session cookie: no Max-Age, no Path (${first.setCookie?.[0]})`);
      for (let k = 0; k < 3; k++) {
        const next = await call(`sid=${m![1]}`);
        t.equal(next.app, first.app, 'a caller with the cookie stays on its instance');
        t.equal(next.setCookie, undefined, 'and is not given another');
      }
      used.add(first.app);
    }
    t.ok(used.size >= 2, `new callers spread over the instances (${[...used].join(', ')})`);
  },
);
