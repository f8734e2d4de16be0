import t from 'tap';
import fc from 'fast-check';
import { startDevConsul } from '../../../lib/devconsul/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import { startTestConsul } from '../../helpers/devconsul.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function call(url: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, {
    method,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) as Json };
}

t.test('the catalog answers arbitrary requests without crashing', async (t) => {
  const dc = await startTestConsul(t);
  const paths = [
    '/v1/agent/service/register',
    '/v1/agent/service/deregister/',
    '/v1/agent/service/maintenance/',
    '/v1/agent/service/',
    '/v1/agent/services',
    '/v1/agent/checks',
    '/v1/agent/check/register',
    '/v1/agent/check/pass/',
    '/v1/agent/check/update/',
    '/v1/health/service/',
    '/v1/health/connect/',
    '/v1/catalog/service/',
    '/v1/catalog/services',
    '/v1/kv/',
    '/v1/config',
    '/v1/config/',
    '/v1/config/service-defaults/',
    '/v1/config/proxy-defaults/',
    '/v1/',
    '/',
  ];
  // The only 500s Consul itself answers on these inputs.
  const known500 =
    /^(strconv\.ParseUint|Scripts are disabled|No path to datacenter|CheckID .* does not have associated TTL)/;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('GET', 'PUT', 'DELETE', 'POST'),
      fc.constantFrom(...paths),
      fc.string({ maxLength: 12 }),
      fc.string({ maxLength: 30 }),
      fc.oneof(
        fc.constant(undefined),
        fc.string({ maxLength: 80 }),
        fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
        fc
          .record(
            {
              Name: fc.string({ maxLength: 8 }),
              Port: fc.oneof(fc.integer(), fc.string()),
              Check: fc.dictionary(
                fc.constantFrom('TTL', 'HTTP', 'TCP', 'Interval', 'Status', 'AliasService', 'Foo'),
                fc.oneof(fc.string({ maxLength: 10 }), fc.integer()),
              ),
              connect: fc.oneof(
                fc.constant({ sidecar_service: {} }),
                fc.record({ sidecar_service: fc.record({ port: fc.integer() }) }),
              ),
              Kind: fc.constantFrom('', 'connect-proxy', 'odd'),
            },
            { requiredKeys: [] },
          )
          .map((v) => JSON.stringify(v)),
      ),
      async (method, path, suffix, query, body) => {
        const safeSuffix = encodeURIComponent(suffix);
        const res = await fetch(`${dc.url}${path}${safeSuffix}?${encodeURI(query)}`, {
          method,
          ...(body !== undefined && method !== 'GET' ? { body } : {}),
          signal: AbortSignal.timeout(5000),
        });
        const text = await res.text();
        if (res.status >= 500) return known500.test(text);
        return res.status >= 200 && res.status < 500;
      },
    ),
    { numRuns: 150 },
  );
  const alive = await call(dc.url, 'GET', '/v1/status/leader');
  t.equal(alive.status, 200, 'still serving');
});

t.test(
  'snake_case and PascalCase keys decode alike, and PascalCase wins when both are set',
  async (t) => {
    const dc = await startTestConsul(t);
    const r = await call(dc.url, 'PUT', '/v1/agent/service/register', {
      name: 'svc',
      ID: 'svc-1',
      enable_tag_override: true,
      Connect: {
        sidecar_service: {
          Proxy: {
            local_service_port: 1,
            LocalServicePort: 2,
            upstreams: [{ destination_name: 'db', DestinationName: 'cache', local_bind_port: 5 }],
          },
        },
      },
    });
    t.equal(r.status, 200, r.text);
    const svc = (await call(dc.url, 'GET', '/v1/agent/service/svc-1')).json();
    t.equal(svc.EnableTagOverride, true);
    const sc = (await call(dc.url, 'GET', '/v1/agent/service/svc-1-sidecar-proxy')).json();
    t.equal(sc.Proxy.LocalServicePort, 2);
    t.equal(sc.Proxy.Upstreams[0].DestinationName, 'cache');
  },
);

t.test('the alias check of a sidecar follows the parent service health', async (t) => {
  const dc = await startTestConsul(t, { random: () => 0 });
  await call(dc.url, 'PUT', '/v1/agent/service/register', {
    name: 'web',
    port: 80,
    check: { CheckID: 'web-ttl', ttl: '30s' },
    connect: { sidecar_service: {} },
  });
  const alias = async () =>
    (await call(dc.url, 'GET', '/v1/agent/checks')).json()['service:web-sidecar-proxy:2'];
  t.equal((await alias()).Status, 'critical', 'parent critical');
  await call(dc.url, 'PUT', '/v1/agent/check/warn/web-ttl');
  t.equal((await alias()).Status, 'warning');
  await call(dc.url, 'PUT', '/v1/agent/check/pass/web-ttl');
  t.match(await alias(), { Status: 'passing', Output: 'All checks passing.' });
});

t.test(
  're-registration keeps check status; replace-existing-checks drops stale checks',
  async (t) => {
    const dc = await startTestConsul(t);
    const def = {
      name: 'api',
      checks: [
        { CheckID: 'a', ttl: '30s' },
        { CheckID: 'b', ttl: '30s' },
      ],
    };
    await call(dc.url, 'PUT', '/v1/agent/service/register', def);
    await call(dc.url, 'PUT', '/v1/agent/check/pass/a?note=up');
    await call(dc.url, 'PUT', '/v1/agent/service/register', def);
    const checks = (await call(dc.url, 'GET', '/v1/agent/checks')).json();
    t.match(checks.a, { Status: 'passing', Output: 'up' }, 'status and output survive');
    await call(dc.url, 'PUT', '/v1/agent/service/register?replace-existing-checks', {
      name: 'api',
      checks: [{ CheckID: 'a', ttl: '30s' }],
    });
    const after = (await call(dc.url, 'GET', '/v1/agent/checks')).json();
    t.same(Object.keys(after), ['a']);
  },
);

t.test('an exhausted sidecar port range is a 400 naming the range', async (t) => {
  const dc = await startTestConsul(t, { sidecarMinPort: 21000, sidecarMaxPort: 21001 });
  for (const n of ['a', 'b']) {
    const r = await call(dc.url, 'PUT', '/v1/agent/service/register', {
      name: n,
      port: 1,
      connect: { sidecar_service: {} },
    });
    t.equal(r.status, 200);
  }
  const r = await call(dc.url, 'PUT', '/v1/agent/service/register', {
    name: 'c',
    port: 1,
    connect: { sidecar_service: {} },
  });
  t.equal(r.status, 400);
  t.match(r.text, 'none left in the configured range [21000, 21001]');
});

t.test('a TCP sidecar check passes once the proxy port listens', async (t) => {
  const { createServer } = await import('node:net');
  const srv = createServer((s) => s.end());
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.teardown(() => srv.close());
  const port = (srv.address() as { port: number }).port;
  const dc = await startTestConsul(t, { random: () => 0 });
  await call(dc.url, 'PUT', '/v1/agent/service/register', {
    name: 'pay',
    port: 1,
    connect: { sidecar_service: { port, check: { tcp: `127.0.0.1:${port}`, interval: '200ms' } } },
  });
  await waitFor('the TCP check to pass', async () => {
    const c = (await call(dc.url, 'GET', '/v1/agent/checks')).json()['service:pay-sidecar-proxy'];
    return c?.Status === 'passing';
  });
  t.pass('passing');
});

t.test('a port in use is a coded listen error', async (t) => {
  const first = await startTestConsul(t);
  await t.rejects(startDevConsul({ port: first.port }), { code: 'REMORA_E_DEVCONSUL_LISTEN' });
  try {
    await startDevConsul({ port: first.port });
  } catch (err) {
    t.ok(hasCode(err, 'REMORA_E_DEVCONSUL_LISTEN'));
  }
});

t.test('a datacenter other than ours is answered like Consul without a path to it', async (t) => {
  const dc = await startTestConsul(t, { datacenter: 'east' });
  const r = await call(dc.url, 'GET', '/v1/health/service/x?dc=west');
  t.equal(r.status, 500);
  t.equal(r.text, 'No path to datacenter');
  t.equal((await call(dc.url, 'GET', '/v1/health/service/x?dc=east')).status, 200);
});

t.test('hash-based blocking on one agent service wakes when the service changes', async (t) => {
  const dc = await startTestConsul(t);
  await call(dc.url, 'PUT', '/v1/agent/service/register', { name: 'h', port: 1 });
  const first = await fetch(`${dc.url}/v1/agent/service/h`);
  const hash = first.headers.get('x-consul-contenthash') ?? '';
  await first.text();
  const blocked = fetch(`${dc.url}/v1/agent/service/h?hash=${hash}&wait=30s`).then((r) => r.json());
  await call(dc.url, 'PUT', '/v1/agent/service/register', { name: 'h', port: 2 });
  const after = (await blocked) as Json;
  t.equal(after.Port, 2);
  t.not(after.ContentHash, hash);
});

t.test('health/state lists checks in a state, the node check included', async (t) => {
  const dc = await startTestConsul(t);
  await call(dc.url, 'PUT', '/v1/agent/service/register', {
    name: 's',
    check: { CheckID: 's-ttl', ttl: '30s' },
  });
  const critical = (
    await call(dc.url, 'GET', '/v1/health/state/critical')
  ).json() as unknown as Json[];
  t.same(
    critical.map((c) => c.CheckID),
    ['s-ttl'],
  );
  const any = (await call(dc.url, 'GET', '/v1/health/state/any')).json() as unknown as Json[];
  t.ok(any.some((c) => c.CheckID === 'serfHealth'));
  const bad = await call(dc.url, 'GET', '/v1/health/state/sideways');
  t.equal(bad.status, 400);
  t.equal(bad.text, 'Invalid check state');
});

t.test('raw KV values are served as inert text', async (t) => {
  const dc = await startTestConsul(t);
  await call(dc.url, 'PUT', '/v1/kv/page', '<script>x</script>');
  const r = await fetch(`${dc.url}/v1/kv/page?raw`);
  t.equal(await r.text(), '<script>x</script>');
  t.equal(r.headers.get('content-type'), 'text/plain');
  t.equal(r.headers.get('x-content-type-options'), 'nosniff');
});

t.test(
  'config entries: kinds the embedded catalog lacks are named, bad bodies refused',
  async (t) => {
    const dc = await startTestConsul(t);
    const gateway = await call(dc.url, 'PUT', '/v1/config', {
      Kind: 'api-gateway',
      Name: 'web',
    });
    t.equal(gateway.status, 400);
    t.match(gateway.text, /does not implement config entries of kind "api-gateway"/);
    t.match(
      gateway.text,
      /service-defaults, proxy-defaults, service-resolver, service-splitter, service-router/,
    );
    t.equal(
      (await call(dc.url, 'GET', '/v1/config/nonsense')).text,
      'invalid config entry kind: nonsense',
    );
    t.equal((await call(dc.url, 'PUT', '/v1/config', '[1]')).status, 400, 'an array body');
    t.equal((await call(dc.url, 'PUT', '/v1/config', '{')).status, 400, 'broken JSON');
    const noName = await call(dc.url, 'PUT', '/v1/config', { Kind: 'service-defaults' });
    t.equal(noName.status, 400);
    const proto = await call(dc.url, 'PUT', '/v1/config', {
      kind: 'service-defaults',
      name: 'web',
      protocol: 7,
    });
    t.equal(proto.status, 400, 'a protocol that is not a string');
    // lowercase keys are accepted, as Consul's decoder does, and come back in Consul's spelling
    const ok = await call(dc.url, 'PUT', '/v1/config', {
      kind: 'service-defaults',
      name: 'web',
      protocol: 'GRPC',
      CreateIndex: 99999,
    });
    t.equal(ok.text, 'true');
    const e = (await call(dc.url, 'GET', '/v1/config/service-defaults/web')).json();
    t.match(e, { Kind: 'service-defaults', Name: 'web', Protocol: 'grpc' });
    t.not(e.CreateIndex, 99999, "indexes are the store's");
    // the inbound settings: snake_case accepted, integers only, service-defaults only
    const limits = await call(dc.url, 'PUT', '/v1/config', {
      Kind: 'service-defaults',
      Name: 'db',
      local_request_timeout_ms: 1500,
      MaxInboundConnections: 10,
    });
    t.equal(limits.text, 'true');
    t.match((await call(dc.url, 'GET', '/v1/config/service-defaults/db')).json(), {
      LocalRequestTimeoutMs: 1500,
      MaxInboundConnections: 10,
    });
    const notInt = await call(dc.url, 'PUT', '/v1/config', {
      Kind: 'service-defaults',
      Name: 'db',
      LocalConnectTimeoutMs: '5s',
    });
    t.same(
      [notInt.status, notInt.text],
      [400, 'Request decoding failed: LocalConnectTimeoutMs must be an integer'],
    );
    const elsewhere = await call(dc.url, 'PUT', '/v1/config', {
      Kind: 'proxy-defaults',
      Name: 'global',
      MaxInboundConnections: 10,
    });
    t.equal(elsewhere.status, 400, 'not a proxy-defaults field');
    const miss = await call(dc.url, 'GET', '/v1/config/service-defaults/nope');
    t.equal(miss.status, 404);
    t.equal(miss.text, 'Config entry not found for "service-defaults" / "nope"');
    t.same((await call(dc.url, 'DELETE', '/v1/config/service-defaults/web?cas=1')).json(), {
      Deleted: false,
    });
    t.equal((await call(dc.url, 'GET', '/v1/config/service-defaults/web')).status, 200, 'kept');
  },
);

t.test(
  "a service-router's header and query matches are checked as Consul checks them",
  async (t) => {
    const dc = await startTestConsul(t);
    await call(dc.url, 'PUT', '/v1/config', {
      Kind: 'service-defaults',
      Name: 'api',
      Protocol: 'http',
    });
    const router = (http: Record<string, unknown>) =>
      call(dc.url, 'PUT', '/v1/config', {
        Kind: 'service-router',
        Name: 'api',
        Routes: [{ Match: { HTTP: http }, Destination: { Service: 'api-v2' } }],
      });
    const twoKinds = await router({ Header: [{ Name: 'x-v', Exact: '2', Prefix: '2' }] });
    t.same(
      [twoKinds.status, twoKinds.text],
      [
        400,
        'Route[0] Header[0] should only contain one of Present, Exact, Prefix, Suffix, or Regex',
      ],
    );
    const noName = await router({ QueryParam: [{ Exact: '2' }] });
    t.same(
      [noName.status, noName.text],
      [400, 'Route[0] QueryParam[0] missing required Name field'],
    );
    const queryKinds = await router({ QueryParam: [{ Name: 'v', Present: true, Regex: '2' }] });
    t.same(
      [queryKinds.status, queryKinds.text],
      [400, 'Route[0] QueryParam[0] should only contain one of Present, Exact, or Regex'],
    );
    const method = await router({ Methods: ['FETCH'] });
    t.same(
      [method.status, method.text],
      [400, 'Route[0] Methods contains an invalid method "FETCH"'],
    );
    const ok = await router({
      Header: [{ Name: 'x-v', Exact: '2' }],
      QueryParam: [{ Name: 'v', Present: true }],
    });
    t.equal(ok.status, 200, ok.text);
  },
);
