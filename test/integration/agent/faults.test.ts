import t from 'tap';
import { apiDefinition, startMesh, waitFor, webDefinition, webReachesApi } from './harness.ts';

// two meshes, each waiting out a part that is down: 40 s on a quiet CI box
t.setTimeout(120_000);

t.test(
  'an agent started while NATS is down waits, says so, and converges when NATS returns',
  async (t) => {
    const mesh = await startMesh(t);
    await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
    await mesh.writeDefinition('api.json', apiDefinition(mesh.ports, 1));
    await mesh.nats.stop();
    const agent = mesh.startAgent();
    t.teardown(() => agent.stop());
    const waiting = await waitFor(
      'the agent to report what it waits for',
      async () => {
        const s = await mesh.status().catch(() => null);
        return s && s.waitingFor.some((w) => /trust bundle/.test(w)) ? s : null;
      },
      60_000,
      100,
    );
    t.ok(
      waiting.waitingFor.some((w) => /certificates for/.test(w)),
      'certificates are awaited',
    );
    t.match(agent.output(), /REMORA_E_AGENT_CONTROL_UNAVAILABLE/, 'the wait is logged with a code');
    t.equal(agent.child.exitCode, null, 'the agent keeps running');
    t.equal(
      (await mesh.healthy('api')).length,
      0,
      'no proxy is reported ready without a certificate',
    );

    await mesh.nats.restart();
    await waitFor('web to reach api once NATS is back', () => webReachesApi(mesh), 90_000, 100);
    const s = await mesh.status();
    t.same(s.waitingFor, [], 'nothing is awaited any more');
  },
);

t.test('Consul going away keeps proxies serving with their last endpoints', async (t) => {
  const mesh = await startMesh(t);
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition('api.json', apiDefinition(mesh.ports, 1));
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());
  await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
  await mesh.consul.stop();
  await waitFor(
    'the agent to notice Consul is gone',
    async () =>
      (await mesh.status()).upstreams.some(
        (u) => u.lastError?.code === 'REMORA_E_AGENT_CONSUL_UNAVAILABLE',
      ),
    30_000,
    100,
  );
  for (let i = 0; i < 20; i++)
    t.ok(await webReachesApi(mesh), `request ${i} served while Consul is down`);
  const api = (await mesh.status()).upstreams.find((u) => u.service === 'api');
  t.equal(api?.endpoints, 1, 'the endpoint set is kept');
  // a fresh, empty Consul: the agent registers everything again
  await mesh.consul.restart();
  await waitFor(
    'api to be registered again',
    async () => (await mesh.healthy('api')).length === 1,
    60_000,
    200,
  );
  t.ok(await webReachesApi(mesh), 'traffic flows after Consul returns');
});
