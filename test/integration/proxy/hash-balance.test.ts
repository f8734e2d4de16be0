// Consistent hashing (docs/proxy.md, "Balancing"): an upstream balanced with ring_hash sends the
// requests of one user (a header) to one instance, while users spread over the instances, and
// a user whose instance leaves moves alone. Real sidecars, real mTLS, three api instances.
import t from 'tap';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import { request, startEchoApp, startSidecar, type App, type Sidecar } from './mesh.ts';

t.test(
  'ring_hash on a header: one user, one instance; users spread; a leaving instance moves only its users',
  async (t) => {
    const mesh = createMeshCerts();
    const apps: App[] = [];
    const apis: Sidecar[] = [];
    for (const name of ['api-a', 'api-b', 'api-c']) {
      const app = await startEchoApp(name);
      apps.push(app);
      apis.push(
        await startSidecar(mesh, 'api', {
          appPort: app.port,
          intentions: { defaultPolicy: 'allow' },
        }),
      );
    }
    const upstream = makeUpstream(
      mesh,
      'api',
      apis.map((a) => a.inboundPort),
      { loadBalancer: 'ring_hash', hashPolicies: [{ field: 'header', fieldValue: 'X-User' }] },
    );
    const web = await startSidecar(mesh, 'web', { upstreams: [upstream] });
    t.teardown(async () => {
      await web.proxy.close();
      for (const a of apis) await a.proxy.close();
      for (const a of apps) await a.close();
    });
    const port = web.proxy.addresses().upstreams.api!.port;
    const served = async (user: string): Promise<string> => {
      const r = await request(`http://127.0.0.1:${port}/`, { headers: { 'x-user': user } });
      return (JSON.parse(r.body) as { app: string }).app;
    };

    const users = Array.from({ length: 24 }, (_, i) => `user-${i}`);
    const first = new Map<string, string>();
    for (const u of users) first.set(u, await served(u));
    for (const u of users) t.equal(await served(u), first.get(u), `${u} stays on its instance`);
    const used = new Set(first.values());
    t.ok(used.size >= 2, `users spread over the instances (${[...used].join(', ')})`);

    // the instance of user-0 leaves the catalog: its users move, the others stay
    const gone = first.get('user-0')!;
    const idx = ['api-a', 'api-b', 'api-c'].indexOf(gone);
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
