/**
 * Conformance: agent service and check endpoints. Each case cites the Consul documentation
 * page (or source file) it derives from.
 */
import t from 'tap';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../../../lib/util/index.ts';
import { AGAINST_REAL_CONSUL, doc, openTarget } from './harness.ts';

const SERVICE_DOC = doc('api-docs/agent/service.mdx');
const CHECK_DOC = doc('api-docs/agent/check.mdx');
const SIDECAR_DOC = `${doc('docs/connect/proxies/deploy-sidecar-services.mdx')} + agent/sidecar_service.go`;

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- raw API bodies are probed field by field
type Json = Record<string, any>;

const target = await openTarget();
t.teardown(() => target.close());
const p = target.prefix;
const api = target.call;

async function cleanup(...ids: string[]): Promise<void> {
  for (const id of ids) await api('PUT', `/v1/agent/service/deregister/${id}`);
}

t.test(`registers a PascalCase definition; ID defaults to Name ${SERVICE_DOC}`, async (t) => {
  const name = `${p}-pascal`;
  const r = await api('PUT', '/v1/agent/service/register', {
    Name: name,
    Port: 8080,
    Tags: ['v1'],
  });
  t.equal(r.status, 200);
  t.teardown(() => cleanup(name));
  const svc = (await api('GET', `/v1/agent/services`)).json<Json>()[name];
  t.match(svc, { ID: name, Service: name, Port: 8080, Tags: ['v1'] });
  t.same(svc.Weights, { Passing: 1, Warning: 1 }, 'default weights');
});

t.test(`expands connect.sidecar_service with Consul's defaults ${SIDECAR_DOC}`, async (t) => {
  const name = `${p}-web`;
  const r = await api('PUT', '/v1/agent/service/register', {
    name,
    id: `${name}-1`,
    port: 8080,
    meta: { 'remora-node': 'n1' },
    tags: ['blue'],
    connect: {
      sidecar_service: {
        proxy: { upstreams: [{ destination_name: 'api', local_bind_port: 9191 }] },
      },
    },
  });
  t.equal(r.status, 200, r.text);
  t.teardown(() => cleanup(`${name}-1`));
  const sc = (await api('GET', `/v1/agent/service/${name}-1-sidecar-proxy`)).json<Json>();
  t.equal(sc.Kind, 'connect-proxy');
  t.equal(sc.ID, `${name}-1-sidecar-proxy`);
  t.equal(sc.Service, `${name}-sidecar-proxy`);
  t.ok(sc.Port >= 21000 && sc.Port <= 21255, `port ${sc.Port} from the sidecar range`);
  t.same(sc.Meta, { 'remora-node': 'n1' }, 'meta copied from the parent when none given');
  t.same(sc.Tags, ['blue'], 'tags copied from the parent when none given');
  t.match(sc.Proxy, {
    DestinationServiceName: name,
    DestinationServiceID: `${name}-1`,
    LocalServiceAddress: '127.0.0.1',
    LocalServicePort: 8080,
    Upstreams: [{ DestinationName: 'api', LocalBindPort: 9191 }],
  });
});

t.test(
  `a sidecar without checks gets the listening and aliasing checks ${SIDECAR_DOC}`,
  async (t) => {
    const name = `${p}-dflt`;
    await api('PUT', '/v1/agent/service/register', {
      Name: name,
      Port: 8081,
      Connect: { SidecarService: {} },
    });
    t.teardown(() => cleanup(name));
    const port = (await api('GET', `/v1/agent/service/${name}-sidecar-proxy`)).json<Json>().Port;
    const checks = Object.values((await api('GET', '/v1/agent/checks')).json<Json>()).filter(
      (c: Json) => c.ServiceID === `${name}-sidecar-proxy`,
    );
    const listening = checks.find((c: Json) => c.Name === 'Connect Sidecar Listening');
    const aliasing = checks.find((c: Json) => c.Name === `Connect Sidecar Aliasing ${name}`);
    t.ok(listening, 'TCP listening check');
    t.equal(listening?.Type, 'tcp');
    t.equal(listening?.Interval, '10s');
    t.match(listening?.Definition?.TCP ?? `127.0.0.1:${port}`, `:${port}`);
    t.ok(aliasing, 'alias check');
    t.equal(aliasing?.Type, 'alias');
  },
);

t.test(
  `sidecar ports are allocated lowest-free and kept on re-registration ${SIDECAR_DOC}`,
  async (t) => {
    const a = `${p}-pa`;
    const b = `${p}-pb`;
    const def = (n: string) => ({ Name: n, Port: 9000, Connect: { SidecarService: {} } });
    await api('PUT', '/v1/agent/service/register', def(a));
    await api('PUT', '/v1/agent/service/register', def(b));
    t.teardown(() => cleanup(a, b));
    const pa = (await api('GET', `/v1/agent/service/${a}-sidecar-proxy`)).json<Json>().Port;
    const pb = (await api('GET', `/v1/agent/service/${b}-sidecar-proxy`)).json<Json>().Port;
    t.not(pa, pb, 'distinct ports');
    await api('PUT', '/v1/agent/service/register', def(a));
    t.equal((await api('GET', `/v1/agent/service/${a}-sidecar-proxy`)).json<Json>().Port, pa);
  },
);

t.test(`an unknown field is rejected as Consul's JSON decoder does ${SERVICE_DOC}`, async (t) => {
  const r = await api('PUT', '/v1/agent/service/register', { Name: `${p}-x`, Bogus: 1 });
  t.equal(r.status, 400);
  t.equal(r.text, 'Request decode failed: json: unknown field "Bogus"');
});

t.test(`malformed JSON and an empty body are decode failures ${SERVICE_DOC}`, async (t) => {
  const bad = await api('PUT', '/v1/agent/service/register', '{"Name": ');
  t.equal(bad.status, 400);
  t.match(bad.text, /^Request decode failed: /);
  const empty = await api('PUT', '/v1/agent/service/register', '');
  t.equal(empty.status, 400);
  t.equal(empty.text, 'Request decode failed: EOF');
  const wrongType = await api('PUT', '/v1/agent/service/register', { Name: `${p}-t`, Port: 'x' });
  t.equal(wrongType.status, 400);
  t.match(wrongType.text, /^Request decode failed: json: cannot unmarshal string into Go/);
});

t.test(`a definition without a name is refused ${SERVICE_DOC}`, async (t) => {
  const r = await api('PUT', '/v1/agent/service/register', { Port: 1 });
  t.equal(r.status, 400);
  t.equal(r.text, 'Missing service name');
});

t.test(`a check with neither TTL nor interval is refused ${CHECK_DOC}`, async (t) => {
  const r = await api('PUT', '/v1/agent/service/register', {
    Name: `${p}-badcheck`,
    Check: { HTTP: 'http://127.0.0.1:1/' },
  });
  t.equal(r.status, 400);
  t.match(r.text, /^Invalid check: Interval must be > 0/);
  const r2 = await api('PUT', '/v1/agent/service/register', {
    Name: `${p}-badcheck`,
    Check: { Notes: 'nothing' },
  });
  t.equal(r2.status, 400);
  t.equal(r2.text, 'Invalid check: TTL must be > 0 for TTL checks');
});

t.test(`a connect-proxy without a destination fails validation ${SERVICE_DOC}`, async (t) => {
  const r = await api('PUT', '/v1/agent/service/register', {
    Name: `${p}-proxy`,
    Kind: 'connect-proxy',
    Port: 21999,
  });
  t.equal(r.status, 400);
  t.match(r.text, /^Validation failed: .*Proxy\.DestinationServiceName must be non-empty/s);
});

t.test(`reserved meta keys are refused ${SERVICE_DOC}`, async (t) => {
  const r = await api('PUT', '/v1/agent/service/register', {
    Name: `${p}-meta`,
    Meta: { 'consul-x': '1' },
  });
  t.equal(r.status, 400);
  t.match(r.text, /^Invalid Service Meta: /);
});

t.test(`a wrong method is 405 with an Allow header ${doc('api-docs/index.mdx')}`, async (t) => {
  const r = await api('GET', '/v1/agent/service/register');
  t.equal(r.status, 405);
  t.match(r.text, 'method GET not allowed');
  t.match(r.headers.get('allow') ?? '', 'PUT');
});

t.test(`deregistering an unknown ID is 404 ${SERVICE_DOC}`, async (t) => {
  const r = await api('PUT', `/v1/agent/service/deregister/${p}-ghost`);
  t.equal(r.status, 404);
  t.match(r.text, `${p}-ghost`);
});

t.test(`deregistering a service removes its checks and its sidecar ${SERVICE_DOC}`, async (t) => {
  const name = `${p}-gone`;
  await api('PUT', '/v1/agent/service/register', {
    Name: name,
    Port: 1234,
    Check: { TTL: '30s' },
    Connect: { SidecarService: {} },
  });
  t.equal((await api('PUT', `/v1/agent/service/deregister/${name}`)).status, 200);
  const services = (await api('GET', '/v1/agent/services')).json<Json>();
  t.notOk(services[name], 'service gone');
  t.notOk(services[`${name}-sidecar-proxy`], 'sidecar gone');
  const checks = Object.values((await api('GET', '/v1/agent/checks')).json<Json>());
  t.notOk(
    checks.some((c: Json) => String(c.ServiceID).startsWith(name)),
    'no check of either remains',
  );
});

t.test(
  `reading one service: 404 when unknown, ContentHash when known ${SERVICE_DOC}`,
  async (t) => {
    t.equal((await api('GET', `/v1/agent/service/${p}-nobody`)).status, 404);
    const name = `${p}-one`;
    await api('PUT', '/v1/agent/service/register', { Name: name, Port: 5 });
    t.teardown(() => cleanup(name));
    const r = await api('GET', `/v1/agent/service/${name}`);
    t.equal(r.status, 200);
    const body = r.json<Json>();
    t.ok(body.ContentHash, 'ContentHash in the body');
    t.equal(r.headers.get('x-consul-contenthash'), body.ContentHash, 'and in the header');
  },
);

t.test(`maintenance mode adds a critical check and removes it again ${SERVICE_DOC}`, async (t) => {
  const name = `${p}-maint`;
  await api('PUT', '/v1/agent/service/register', { Name: name, Port: 6 });
  t.teardown(() => cleanup(name));
  t.equal(
    (await api('PUT', `/v1/agent/service/maintenance/${name}`)).text,
    'Missing value for enable',
  );
  const on = await api('PUT', `/v1/agent/service/maintenance/${name}?enable=true&reason=upgrade`);
  t.equal(on.status, 200);
  const maint = (await api('GET', '/v1/agent/checks')).json<Json>()[`_service_maintenance:${name}`];
  t.match(maint, { Status: 'critical', Notes: 'upgrade', ServiceID: name });
  await api('PUT', `/v1/agent/service/maintenance/${name}?enable=false`);
  t.notOk((await api('GET', '/v1/agent/checks')).json<Json>()[`_service_maintenance:${name}`]);
  const unknown = await api('PUT', `/v1/agent/service/maintenance/${p}-nobody?enable=true`);
  t.equal(unknown.status, 404);
  t.match(unknown.text, /^Unknown service ID/);
});

t.test(`a TTL check starts critical and follows pass, warn and fail ${CHECK_DOC}`, async (t) => {
  const name = `${p}-ttl`;
  await api('PUT', '/v1/agent/service/register', {
    Name: name,
    Port: 7,
    Check: { CheckID: `${name}-c`, TTL: '30s' },
  });
  t.teardown(() => cleanup(name));
  const status = async () => (await api('GET', '/v1/agent/checks')).json<Json>()[`${name}-c`];
  t.equal((await status()).Status, 'critical', 'initial status is critical');
  t.equal((await api('PUT', `/v1/agent/check/pass/${name}-c?note=all+good`)).status, 200);
  t.match(await status(), { Status: 'passing', Output: 'all good' });
  await api('PUT', `/v1/agent/check/warn/${name}-c`);
  t.equal((await status()).Status, 'warning');
  await api('PUT', `/v1/agent/check/update/${name}-c`, { Status: 'critical', Output: 'down' });
  t.match(await status(), { Status: 'critical', Output: 'down' });
  const bad = await api('PUT', `/v1/agent/check/update/${name}-c`, { Status: 'sideways' });
  t.equal(bad.status, 400);
  t.equal(bad.text, "Invalid check status: 'sideways'");
});

t.test(`a check's initial status can be given ${CHECK_DOC}`, async (t) => {
  const name = `${p}-init`;
  await api('PUT', '/v1/agent/service/register', {
    Name: name,
    Port: 8,
    Check: { CheckID: `${name}-c`, TTL: '30s', Status: 'passing' },
  });
  t.teardown(() => cleanup(name));
  t.equal((await api('GET', '/v1/agent/checks')).json<Json>()[`${name}-c`].Status, 'passing');
});

t.test(`TTL updates: an unknown check is 404, a non-TTL check is 500 ${CHECK_DOC}`, async (t) => {
  const unknown = await api('PUT', `/v1/agent/check/pass/${p}-nocheck`);
  t.equal(unknown.status, 404);
  t.equal(
    unknown.text,
    `Unknown check ID "${p}-nocheck". Ensure that the check ID is passed, not the check name.`,
  );
  const name = `${p}-notttl`;
  await api('PUT', '/v1/agent/service/register', {
    Name: name,
    Port: 14,
    Check: { CheckID: `${name}-tcp`, TCP: '127.0.0.1:1', Interval: '30s' },
  });
  t.teardown(() => cleanup(name));
  const notTtl = await api('PUT', `/v1/agent/check/pass/${name}-tcp`);
  t.equal(notTtl.status, 500);
  t.equal(notTtl.text, `CheckID "${name}-tcp" does not have associated TTL`);
});

t.test(`a TTL check that is not refreshed expires to critical ${CHECK_DOC}`, async (t) => {
  const name = `${p}-expire`;
  await api('PUT', '/v1/agent/service/register', {
    Name: name,
    Port: 9,
    Check: { CheckID: `${name}-c`, TTL: '1s' },
  });
  t.teardown(() => cleanup(name));
  await api('PUT', `/v1/agent/check/pass/${name}-c?note=fresh`);
  const expired = await waitFor(
    'the TTL to expire',
    async () => {
      const c = (await api('GET', '/v1/agent/checks')).json<Json>()[`${name}-c`];
      return c.Status === 'critical' ? c : undefined;
    },
    10_000,
  );
  t.match(expired.Output, /^TTL expired/);
});

async function httpTarget(t: { teardown(fn: () => unknown): void }): Promise<{
  url: string;
  setStatus(code: number): void;
}> {
  let code = 200;
  const server: Server = createServer((_req, res) => {
    res.writeHead(code);
    res.end(`status ${code}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/health`,
    setStatus: (c) => (code = c),
  };
}

t.test(
  `an HTTP check is passing on 2xx, warning on 429, critical otherwise ${CHECK_DOC}`,
  async (t) => {
    const target = await httpTarget(t);
    const name = `${p}-http`;
    await api('PUT', '/v1/agent/service/register', {
      Name: name,
      Port: 10,
      Check: { CheckID: `${name}-c`, HTTP: target.url, Interval: '1s' },
    });
    t.teardown(() => cleanup(name));
    const seen = async (status: string) =>
      waitFor(
        `the HTTP check to be ${status}`,
        async () => {
          const c = (await api('GET', '/v1/agent/checks')).json<Json>()[`${name}-c`];
          return c.Status === status ? c : undefined;
        },
        10_000,
      );
    const ok = await seen('passing');
    t.match(ok.Output, /200/);
    target.setStatus(429);
    await seen('warning');
    target.setStatus(503);
    const bad = await seen('critical');
    t.match(bad.Output, /503/);
  },
);

t.test(
  `a TCP check is passing when the port accepts and critical when it refuses ${CHECK_DOC}`,
  async (t) => {
    const target = await httpTarget(t);
    const port = new URL(target.url).port;
    const name = `${p}-tcp`;
    await api('PUT', '/v1/agent/service/register', {
      Name: name,
      Port: 11,
      Checks: [
        { CheckID: `${name}-up`, TCP: `127.0.0.1:${port}`, Interval: '1s' },
        { CheckID: `${name}-down`, TCP: '127.0.0.1:1', Interval: '1s', Status: 'passing' },
      ],
    });
    t.teardown(() => cleanup(name));
    await waitFor(
      'both TCP checks to settle',
      async () => {
        const all = (await api('GET', '/v1/agent/checks')).json<Json>();
        return all[`${name}-up`].Status === 'passing' && all[`${name}-down`].Status === 'critical';
      },
      10_000,
    );
    t.pass('open port passes, closed port is critical');
  },
);

t.test(
  `a check can be added to an existing service; unknown ServiceID is 404 ${CHECK_DOC}`,
  async (t) => {
    const name = `${p}-addcheck`;
    await api('PUT', '/v1/agent/service/register', { Name: name, Port: 12 });
    t.teardown(() => cleanup(name));
    const ok = await api('PUT', '/v1/agent/check/register', {
      Name: 'extra',
      ID: `${name}-extra`,
      ServiceID: name,
      TTL: '30s',
    });
    t.equal(ok.status, 200, ok.text);
    t.match((await api('GET', '/v1/agent/checks')).json<Json>()[`${name}-extra`], {
      ServiceID: name,
      ServiceName: name,
      Status: 'critical',
    });
    const bad = await api('PUT', '/v1/agent/check/register', {
      Name: 'x',
      ServiceID: `${p}-nobody`,
      TTL: '30s',
    });
    t.equal(bad.status, 404);
    t.equal(
      (await api('PUT', '/v1/agent/check/register', { TTL: '30s' })).text,
      'Missing check name',
    );
  },
);

t.test(
  `a service whose check stays critical is deregistered after deregister_critical_service_after ${CHECK_DOC}`,
  {
    skip: AGAINST_REAL_CONSUL
      ? 'real Consul enforces a 1 minute minimum and reaps every 30 s'
      : false,
  },
  async (t) => {
    const name = `${p}-reap`;
    await api('PUT', '/v1/agent/service/register', {
      Name: name,
      Port: 13,
      Check: { TTL: '30s', deregister_critical_service_after: '200ms' },
    });
    await waitFor(
      'the reaper to remove the service',
      async () => !(await api('GET', '/v1/agent/services')).json<Json>()[name],
      10_000,
    );
    t.pass('service deregistered');
  },
);

t.test(
  `agent self reports the node name and datacenter ${doc('api-docs/agent/index.mdx')}`,
  async (t) => {
    const self = (await api('GET', '/v1/agent/self')).json<Json>();
    t.type(self.Config.NodeName, 'string');
    t.type(self.Config.Datacenter, 'string');
  },
);
