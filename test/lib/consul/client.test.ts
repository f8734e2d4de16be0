import t from 'tap';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { createConsulClient } from '../../../lib/consul/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';
import { startTestConsul } from '../../helpers/devconsul.ts';

t.test('registers a service with a sidecar and reads it back in Consul shapes', async (t) => {
  const dc = await startTestConsul(t, { random: () => 0 });
  const c = createConsulClient({ address: dc.url, token: 'secret' });
  t.teardown(() => c.close());
  await c.agent.registerService({
    name: 'api',
    id: 'api-1',
    port: 9000,
    meta: { 'remora-node': 'n1' },
    connect: {
      sidecar_service: {
        proxy: { upstreams: [{ destination_name: 'db', local_bind_port: 9191 }] },
        checks: [{ CheckID: 'api-1-proxy-ready', name: 'proxy ready', ttl: '30s' }],
      },
    },
  });
  const services = await c.agent.services();
  t.same(Object.keys(services).sort(), ['api-1', 'api-1-sidecar-proxy']);
  const sidecar = await c.agent.service('api-1-sidecar-proxy');
  t.equal(sidecar?.Kind, 'connect-proxy');
  t.equal(sidecar?.Port, 21000, 'first port of the sidecar range');
  t.equal(sidecar?.Meta['remora-node'], 'n1', 'meta copied from the parent');
  t.match(sidecar?.Proxy, {
    DestinationServiceName: 'api',
    DestinationServiceID: 'api-1',
    LocalServiceAddress: '127.0.0.1',
    LocalServicePort: 9000,
    Upstreams: [{ DestinationName: 'db', LocalBindPort: 9191, DestinationType: 'service' }],
  });
  t.equal(await c.agent.service('nope'), undefined, 'an unknown ID reads as undefined');
  const self = await c.agent.self();
  t.equal(self.Config.Datacenter, 'dc1');
  t.equal(self.Config.NodeName, 'remora-dev');
});

t.test('a TTL update makes the sidecar appear in health/connect?passing', async (t) => {
  const dc = await startTestConsul(t);
  const c = createConsulClient({ address: dc.url });
  t.teardown(() => c.close());
  await c.agent.registerService({
    name: 'web',
    id: 'web-1',
    port: 8080,
    connect: { sidecar_service: { checks: [{ CheckID: 'web-1-ready', ttl: '30s' }] } },
  });
  const before = await c.health.connect('web', { passing: true });
  t.same(before.entries, [], 'a new TTL check is critical');
  t.ok(before.index > 0, 'X-Consul-Index is never 0');
  const blocked = c.health.connect('web', { passing: true, index: before.index, wait: '10s' });
  await c.agent.updateTtl('web-1-ready', 'passing', 'proxy ready');
  const after = await blocked;
  t.ok(after.index > before.index, 'the blocking query woke with a higher index');
  t.equal(after.entries.length, 1);
  t.equal(after.entries[0]?.Service.ID, 'web-1-sidecar-proxy');
  t.equal(
    after.entries[0]?.Checks.find((ch) => ch.CheckID === 'web-1-ready')?.Output,
    'proxy ready',
  );
  const checks = await c.agent.checks();
  t.equal(checks['web-1-ready']?.Status, 'passing');
  const all = await c.health.service('web-sidecar-proxy');
  t.equal(all.entries.length, 1, 'health/service goes through the npm consul package');
  t.ok(all.index > 0);
});

t.test('KV put with CAS succeeds once and then refuses a stale index', async (t) => {
  const dc = await startTestConsul(t);
  const c = createConsulClient({ address: dc.url });
  t.teardown(() => c.close());
  t.equal(await c.kv.put('remora/ca/root', 'v1', { cas: 0 }), true, 'cas=0 creates');
  t.equal(
    await c.kv.put('remora/ca/root', 'v2', { cas: 0 }),
    false,
    'cas=0 refuses an existing key',
  );
  const got = await c.kv.get('remora/ca/root');
  t.equal(got?.value, 'v1');
  t.equal(await c.kv.put('remora/ca/root', 'v2', { cas: got!.modifyIndex }), true);
  t.equal(await c.kv.put('remora/ca/root', 'v3', { cas: got!.modifyIndex }), false, 'stale index');
  t.equal(await c.kv.delete('remora/ca/root', { cas: got!.modifyIndex }), false);
  await c.kv.put('remora/intentions', '{}');
  t.same(
    (await c.kv.list('remora/')).map((p) => p.key),
    ['remora/ca/root', 'remora/intentions'],
  );
  t.equal(await c.kv.delete('remora/', { recurse: true }), true);
  t.same(await c.kv.list('remora/'), []);
  t.equal(await c.kv.get('remora/ca/root'), undefined);
});

t.test('maintenance mode takes an instance out of passing results', async (t) => {
  const dc = await startTestConsul(t);
  const c = createConsulClient({ address: dc.url });
  t.teardown(() => c.close());
  await c.agent.registerService({ name: 'db', id: 'db-1', port: 5432 });
  t.equal((await c.health.service('db', { passing: true })).entries.length, 1);
  await c.agent.maintenance('db-1', true, 'upgrade');
  t.equal((await c.health.service('db', { passing: true })).entries.length, 0);
  const maint = (await c.agent.checks())['_service_maintenance:db-1'];
  t.equal(maint?.Notes, 'upgrade');
  await c.agent.maintenance('db-1', false);
  t.equal((await c.health.service('db', { passing: true })).entries.length, 1);
  t.same(await c.catalog.services(), { consul: [], db: [] });
  t.equal((await c.catalog.service('db'))[0]?.ServicePort, 5432);
});

t.test('errors carry stable codes: refused requests and an unreachable Consul', async (t) => {
  const dc = await startTestConsul(t);
  const c = createConsulClient({ address: dc.url });
  t.teardown(() => c.close());
  await t.rejects(c.agent.deregisterService('ghost'), {
    code: 'REMORA_E_CONSUL_REQUEST_FAILED',
    message: /404: Unknown service ID "ghost"/,
  });
  await t.rejects(c.agent.registerService({ name: 'x', bogus: 1 }), {
    code: 'REMORA_E_CONSUL_REQUEST_FAILED',
    message: /400: Request decode failed: json: unknown field "bogus"/,
  });
  await dc.close();
  try {
    await c.agent.services();
    t.fail('should not answer');
  } catch (err) {
    t.ok(hasCode(err, 'REMORA_E_CONSUL_UNREACHABLE'), 'unreachable');
  }
  t.throws(() => createConsulClient({ address: 'nope' }), { code: 'REMORA_E_CONSUL_CONFIG' });
  t.throws(
    () => createConsulClient({ address: 'https://127.0.0.1:1', caFile: '/nonexistent.pem' }),
    {
      code: 'REMORA_E_CONSUL_CONFIG',
    },
  );
});

t.test('a Consul that accepts but never answers times out as unreachable', async (t) => {
  const sockets = new Set<Socket>();
  const silent = createServer((s) => sockets.add(s));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const port = (silent.address() as { port: number }).port;
  const c = createConsulClient({ address: `http://127.0.0.1:${port}`, timeoutMs: 200 });
  t.teardown(() => c.close());
  await t.rejects(c.agent.services(), { code: 'REMORA_E_CONSUL_UNREACHABLE' }, 'npm consul path');
  await t.rejects(
    c.agent.registerService({ name: 'x' }),
    { code: 'REMORA_E_CONSUL_UNREACHABLE' },
    'got path',
  );
  await t.rejects(c.health.connect('x'), { code: 'REMORA_E_CONSUL_UNREACHABLE' });
  await t.rejects(c.kv.put('k', 'v', { cas: 0 }), { code: 'REMORA_E_CONSUL_UNREACHABLE' });
});

t.test(
  'catalog.servicesBlocking returns the index and blocks until the list changes',
  async (t) => {
    const dc = await startTestConsul(t);
    const c = createConsulClient({ address: dc.url, timeoutMs: 2000 });
    t.teardown(() => c.close());
    const first = await c.catalog.servicesBlocking();
    t.same(first.services, { consul: [] });
    t.ok(first.index > 0, 'X-Consul-Index is read');
    let woke = false;
    const blocked = c.catalog.servicesBlocking({ index: first.index, wait: '10s' });
    void blocked.then(() => (woke = true));
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.notOk(woke, 'still blocked while nothing changes');
    await c.agent.registerService({ name: 'web', id: 'web-1', port: 8080, tags: ['v1'] });
    const after = await blocked;
    t.ok(after.index > first.index, 'woke with a higher index');
    t.same(after.services, { consul: [], web: ['v1'] });
    const timedOut = await c.catalog.servicesBlocking({ index: after.index, wait: '100ms' });
    t.equal(timedOut.index, after.index, 'a wait that runs out answers with the same index');
    const ac = new AbortController();
    const aborted = c.catalog.servicesBlocking({
      index: after.index,
      wait: '10s',
      signal: ac.signal,
    });
    ac.abort();
    await t.rejects(aborted, { code: 'REMORA_E_CONSUL_UNREACHABLE' }, 'the signal aborts it');
  },
);

t.test('catalog.servicesBlocking refuses malformed answers with coded errors', async (t) => {
  let reply: { body: string; index?: string; status?: number } = { body: '{}' };
  const server = createHttpServer((_req, res) => {
    res.writeHead(reply.status ?? 200, {
      'content-type': 'application/json',
      ...(reply.index !== undefined ? { 'x-consul-index': reply.index } : {}),
    });
    res.end(reply.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const c = createConsulClient({ address: `http://127.0.0.1:${port}`, timeoutMs: 2000 });
  t.teardown(() => c.close());
  const bad = [
    { body: '[]', index: '3' },
    { body: 'null', index: '3' },
    { body: '"web"', index: '3' },
    { body: '{"web": "v1"}', index: '3' },
    { body: '{"web": [1]}', index: '3' },
    { body: '{"web": {}}', index: '3' },
    { body: 'not json', index: '3' },
    { body: '{"web": []}', index: 'abc' },
    { body: '{"web": []}', index: '-1' },
  ];
  for (const b of bad) {
    reply = b;
    await t.rejects(
      c.catalog.servicesBlocking(),
      { code: 'REMORA_E_CONSUL_BAD_RESPONSE' },
      `${b.body} / index ${b.index}`,
    );
  }
  reply = { body: 'boom', status: 500 };
  await t.rejects(c.catalog.servicesBlocking(), { code: 'REMORA_E_CONSUL_REQUEST_FAILED' });
  reply = { body: '{"web": null, "db": ["a"]}', index: '7' };
  t.same(
    await c.catalog.servicesBlocking(),
    { services: { web: [], db: ['a'] }, index: 7 },
    'a null tag list (a Go nil slice) reads as no tags',
  );
});
