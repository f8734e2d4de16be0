// Exposed paths through the whole chain (docs/agent.md, "Exposed paths"): a definition's
// `proxy.expose.paths` (or an `Expose` of proxy-defaults and service-defaults, written while the
// agent runs) reaches Consul's registration and the running proxy, which serves the path in plain
// HTTP to a caller outside the mesh. Real agent, devconsul, NATS, control, proxies.
import t, { type Test } from 'tap';
import { freePort } from '../../helpers/nats.ts';
import {
  apiDefinition,
  httpGet,
  putConfig,
  startMesh,
  waitFor,
  webDefinition,
  webReachesApi,
  type HealthEntry,
  type Mesh,
} from './harness.ts';

t.setTimeout(120_000);

/**
 * Runs the agent with web and api-1, whose check probes /ready (and whose sidecar has `expose`,
 * when given), with a range of one port (`checkPort`) for exposed checks' listeners; returns once
 * web reaches api.
 */
async function startApiWithCheck(
  t: Test,
  mesh: Mesh,
  checkPort: number,
  expose?: object,
): Promise<void> {
  const api = apiDefinition(mesh.ports, 1) as {
    Service: { Connect: { SidecarService: { Proxy: Record<string, unknown> } }; Checks?: object[] };
  };
  if (expose) api.Service.Connect.SidecarService.Proxy.Expose = expose;
  api.Service.Checks = [
    { Name: 'api ready', HTTP: `http://127.0.0.1:${mesh.ports.api1App}/ready`, Interval: '1s' },
  ];
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition('api-1.json', api);
  const agent = mesh.startAgent({
    REMORA_AGENT_EXPOSE_PORT_MIN: String(checkPort),
    REMORA_AGENT_EXPOSE_PORT_MAX: String(checkPort),
  });
  t.teardown(() => agent.stop());
  await waitFor('web to reach api', () => webReachesApi(mesh), 60_000, 100);
}

/** The `Expose` of api-1's sidecar as Consul's catalog shows it. */
async function registeredExpose(mesh: Mesh): Promise<unknown> {
  const [entry] = (await mesh.healthy('api')) as (HealthEntry & {
    Service: { Proxy: { Expose?: unknown } };
  })[];
  return entry!.Service.Proxy.Expose;
}

/** Consul's registration of api-1's /health on `listener` and its /ready check on `checkPort`. */
function healthAndReady(mesh: Mesh, listener: number, checkPort: number): object {
  const path = (Path: string, ListenerPort: number) => ({
    Path,
    LocalPathPort: mesh.ports.api1App,
    ListenerPort,
    Protocol: 'http',
  });
  return { Paths: [path('/health', listener), path('/ready', checkPort)] };
}

t.test("api's sidecar serves /health to a caller outside the mesh, and nothing else", async (t) => {
  const mesh = await startMesh(t);
  const listener = await freePort();
  const checkPort = await freePort();
  await startApiWithCheck(t, mesh, checkPort, {
    Checks: true,
    Paths: [{ Path: '/health', LocalPathPort: mesh.ports.api1App, ListenerPort: listener }],
  });

  const health = await waitFor(
    'the exposed path to answer',
    () => httpGet(`http://127.0.0.1:${listener}/health?verbose=1`).catch(() => null),
    30_000,
    100,
  );
  t.equal(health.status, 200);
  t.match(health.json, { service: 'api', instance: 'api-1' }, "the api app's own answer");
  const other = await httpGet(`http://127.0.0.1:${listener}/v1/orders`);
  t.equal(other.status, 404);
  t.match(other.body, /^REMORA_E_PROXY_PATH_NOT_EXPOSED: \/v1\/orders is not exposed/);

  t.same(
    await registeredExpose(mesh),
    healthAndReady(mesh, listener, checkPort),
    "registered in Consul as Consul registers it, with the check's path on a port of the range",
  );

  // Checks = true: the check is registered against the sidecar's listener and passes through it
  const check = await waitFor(
    'the api check to pass through the sidecar',
    async () => {
      const r = await httpGet(`${mesh.consul.url}/v1/health/checks/api`);
      const c = (r.json as { Name: string; Status: string; Output: string }[]).find(
        (x) => x.Name === 'api ready',
      );
      return c?.Status === 'passing' ? c : null;
    },
    30_000,
    100,
  );
  t.match(
    check.Output,
    `HTTP GET http://127.0.0.1:${checkPort}/ready: 200 OK`,
    "Consul's probe went to the sidecar's listener, not to the app",
  );
  const ready = await httpGet(`http://127.0.0.1:${checkPort}/ready`);
  t.match(ready.json, { service: 'api', instance: 'api-1', path: '/ready' });
  const notReady = await httpGet(`http://127.0.0.1:${checkPort}/health`);
  t.equal(notReady.status, 404, 'the check listener serves the check path only');
  t.notOk(
    (await mesh.status()).problems.some((p) => p.code === 'REMORA_E_AGENT_DEFINITION_NOT_APPLIED'),
    'Checks = true is applied, not reported',
  );
});

t.test(
  "proxy-defaults' and service-defaults' Expose apply to a running agent, and go when deleted",
  async (t) => {
    const mesh = await startMesh(t);
    const listener = await freePort();
    const checkPort = await freePort();
    await startApiWithCheck(t, mesh, checkPort);
    const apiCheck = async () => {
      const r = await httpGet(`${mesh.consul.url}/v1/health/checks/api`);
      return (r.json as { Name: string; Status: string; Output: string }[]).find(
        (x) => x.Name === 'api ready',
      );
    };
    t.notMatch((await apiCheck())?.Output ?? '', `:${checkPort}/`, 'the check probes the app');

    // written while the agent runs: no restart
    await putConfig(mesh, { Kind: 'proxy-defaults', Name: 'global', Expose: { Checks: true } });
    await putConfig(mesh, {
      Kind: 'service-defaults',
      Name: 'api',
      Expose: {
        Paths: [{ Path: '/health', LocalPathPort: mesh.ports.api1App, ListenerPort: listener }],
      },
    });
    const health = await waitFor(
      "service-defaults' path to be served",
      () => httpGet(`http://127.0.0.1:${listener}/health`).catch(() => null),
      30_000,
      100,
    );
    t.equal(health.status, 200, 'in plain HTTP, outside the mesh');
    t.match(health.json, { service: 'api', instance: 'api-1' });
    const check = await waitFor(
      "the check to pass through the sidecar (proxy-defaults' Checks)",
      async () => {
        const c = await apiCheck();
        return c?.Status === 'passing' && c.Output.includes(`:${checkPort}/ready`) ? c : null;
      },
      30_000,
      100,
    );
    t.match(check.Output, `HTTP GET http://127.0.0.1:${checkPort}/ready: 200 OK`);
    t.same(
      await registeredExpose(mesh),
      healthAndReady(mesh, listener, checkPort),
      'the registration in Consul carries the merged paths',
    );

    // a bad path in an entry is reported, coded; the rest keeps working
    await putConfig(mesh, {
      Kind: 'proxy-defaults',
      Name: 'global',
      Expose: { Checks: true, Paths: [{ Path: 'metrics', LocalPathPort: 9102, ListenerPort: 1 }] },
    });
    const problem = await waitFor(
      'the bad path reported',
      async () =>
        (await mesh.status()).problems.find(
          (p) => p.code === 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        ) ?? null,
      30_000,
      100,
    );
    t.match(problem.message, /^proxy-defaults global: Expose\.Paths\[0\] Path must start with \//);
    t.equal((await httpGet(`http://127.0.0.1:${listener}/health`)).status, 200, 'still served');

    const del = await fetch(`${mesh.consul.url}/v1/config/service-defaults/api`, {
      method: 'DELETE',
    });
    t.equal(del.status, 200);
    await waitFor(
      'the path to go',
      () =>
        httpGet(`http://127.0.0.1:${listener}/health`).then(
          () => null,
          () => true,
        ),
      30_000,
      100,
    );
    await fetch(`${mesh.consul.url}/v1/config/proxy-defaults/global`, { method: 'DELETE' });
    const back = await waitFor(
      'the check to probe the app again',
      async () => {
        const c = await apiCheck();
        return c?.Status === 'passing' && !c.Output.includes(`:${checkPort}/`) ? c : null;
      },
      30_000,
      100,
    );
    t.match(back.Output, `:${mesh.ports.api1App}/ready`);
    t.same(await registeredExpose(mesh), {}, 'nothing exposed in the registration either');
    t.same(
      (await mesh.status()).problems.filter(
        (p) => p.code === 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
      ),
      [],
      'and nothing reported',
    );
  },
);
