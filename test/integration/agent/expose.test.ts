// Exposed paths through the whole chain (docs/agent.md, "Exposed paths"): a definition's
// `proxy.expose.paths` reaches Consul's registration and the running proxy, which serves the
// path in plain HTTP to a caller outside the mesh. Real agent, devconsul, NATS, control, proxies.
import t from 'tap';
import { freePort } from '../../helpers/nats.ts';
import {
  apiDefinition,
  httpGet,
  startMesh,
  waitFor,
  webDefinition,
  webReachesApi,
  type HealthEntry,
} from './harness.ts';

t.setTimeout(120_000);

t.test("api's sidecar serves /health to a caller outside the mesh, and nothing else", async (t) => {
  const mesh = await startMesh(t);
  const listener = await freePort();
  const api = apiDefinition(mesh.ports, 1) as { Service: { Connect: { SidecarService: object } } };
  const sidecar = api.Service.Connect.SidecarService as { Proxy: Record<string, unknown> };
  sidecar.Proxy.Expose = {
    Checks: true,
    Paths: [{ Path: '/health', LocalPathPort: mesh.ports.api1App, ListenerPort: listener }],
  };
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition('api-1.json', api);
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());
  await waitFor('web to reach api', () => webReachesApi(mesh), 60_000, 100);

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

  const [entry] = (await mesh.healthy('api')) as (HealthEntry & {
    Service: { Proxy: { Expose?: unknown } };
  })[];
  t.match(
    entry!.Service.Proxy.Expose,
    { Paths: [{ Path: '/health', LocalPathPort: mesh.ports.api1App, ListenerPort: listener }] },
    'registered in Consul as Consul registers it',
  );
  const note = (await mesh.status()).problems.find(
    (p) => p.code === 'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
  );
  t.match(note?.message, /Proxy\.Expose\.Checks is not applied/, 'Checks = true is reported');
});
