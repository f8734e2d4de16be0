import t from 'tap';
import http from 'node:http';
import { request, startTwoSidecars } from './mesh.ts';

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
});
