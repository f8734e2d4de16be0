import t from 'tap';
import {
  apiDefinition,
  callWeb,
  echoDefinition,
  startMesh,
  waitFor,
  webDefinition,
  webReachesApi,
  type WebAnswer,
} from './harness.ts';
import { runRemora } from '../../helpers/cli.ts';
import { startOtlpReceiver } from '../../helpers/otlp-receiver.ts';

t.test('two services are registered and reachable through their proxies', async (t) => {
  const rx = await startOtlpReceiver();
  t.teardown(() => rx.close());
  const mesh = await startMesh(t, { tracingEndpoint: rx.endpoint });
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition('api-1.json', apiDefinition(mesh.ports, 1));
  await mesh.writeDefinition('echo.json', echoDefinition(mesh.ports));
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());

  const first = await waitFor(
    'web to reach api through the proxies',
    () => webReachesApi(mesh),
    60_000,
    100,
  ).catch(async (err: unknown) => {
    t.comment(agent.output().slice(-4000));
    t.comment(await mesh.proxyLogs());
    t.comment(JSON.stringify(await callWeb(mesh).catch((e: unknown) => String(e))));
    throw err;
  });
  const api = first.api!;
  t.equal(api.service, 'api');
  t.equal(api.instance, 'api-1');
  t.match(api.peer, /^spiffe:\/\/[^/]+\/ns\/default\/dc\/dc1\/svc\/web$/, "api saw web's identity");
  t.match(api.self, /^spiffe:\/\/[^/]+\/ns\/default\/dc\/dc1\/svc\/api$/, 'its own identity');

  const apiEntries = await mesh.healthy('api');
  t.equal(apiEntries.length, 1, 'api-1 sidecar is healthy in Consul');
  const entry = apiEntries[0]!;
  t.equal(entry.Service.Kind, 'connect-proxy');
  t.equal(entry.Service.Meta['remora-node'], 'node-a');
  t.equal(entry.Service.Proxy.DestinationServiceID, 'api-1');

  const [sign] = await rx.waitForSpans({
    service: 'remora-agent',
    name: 'ca.sign web',
    timeoutMs: 30_000,
  });
  t.equal(sign!.kind, 'CLIENT', 'the agent traces its certificate request');
  t.equal(sign!.attributes['remora.instance'], 'web-1');
  const controlSide = await rx
    .waitForSpans({ traceId: sign!.traceId, service: 'remora-control', timeoutMs: 30_000 })
    .catch(() => []);
  t.ok(controlSide.length > 0, 'control continues the same trace (context in NATS headers)');

  // echo's proxy becomes ready on its own schedule, as web did above: wait for it the same way
  const echoed = await waitFor(
    'web to reach echo over its tcp upstream',
    async () => {
      const r = await callWeb(mesh, '/echo?msg=hello-tcp').catch(() => null);
      return (r?.json as WebAnswer | null)?.echo?.echoed || null;
    },
    60_000,
    100,
  );
  t.equal(echoed, 'hello-tcp', 'tcp upstream echoes through both proxies');
  t.notMatch(
    agent.output(),
    /REMORA_E_CONTROL_SERVICE_NOT_ON_NODE|Consul lists no instance of/,
    'no certificate request reached control before its instance was registered',
  );

  t.test('a new definition file is registered without restarting anything', async (t) => {
    const pidsBefore = await mesh.proxyPids();
    await mesh.writeDefinition('api-2.json', apiDefinition(mesh.ports, 2));
    await waitFor(
      'api-2 to be healthy in Consul',
      async () => (await mesh.healthy('api')).length === 2,
      20_000,
    );
    const seen = new Set<string>();
    await waitFor(
      'web to reach both api instances',
      async () => {
        const r = await webReachesApi(mesh);
        if (r?.api) seen.add(r.api.instance);
        return seen.size === 2;
      },
      20_000,
      20,
    );
    t.same([...seen].sort(), ['api-1', 'api-2']);
    t.notMatch(
      agent.output(),
      /REMORA_E_CONTROL_SERVICE_NOT_ON_NODE|Consul lists no instance of/,
      'api-2 asked once registered',
    );
    const pidsAfter = await mesh.proxyPids();
    for (const id of ['web-1', 'api-1', 'echo'])
      t.equal(pidsAfter[id], pidsBefore[id], `proxy of ${id} kept running`);
    t.ok(agent.child.exitCode === null, 'the agent was not restarted');
  });

  t.test('SIGHUP (systemctl reload) re-reads the definitions and disturbs nothing', async (t) => {
    const pidsBefore = await mesh.proxyPids();
    const logged = (): number => agent.output().split('SIGHUP: reloading').length - 1;
    const before = logged();
    process.kill(agent.pid, 'SIGHUP');
    await waitFor('the agent to log the reload', () => logged() > before || null, 20_000);
    const r = await webReachesApi(mesh);
    t.ok(r?.api, 'web still reaches api');
    t.same(await mesh.proxyPids(), pidsBefore, 'every proxy kept running');
    t.ok(agent.child.exitCode === null, 'the agent is still running');
  });

  t.test('a broken file is reported while the others keep working', async (t) => {
    await mesh.writeDefinition('broken.json', '{"service": {"name": "bad", "port": "eighty"}}');
    const status = await waitFor(
      'the agent to report the broken file',
      async () => {
        const s = await mesh.status();
        return s.problems.find((p) => String(p.file).endsWith('broken.json')) ? s : null;
      },
      10_000,
    );
    const problem = status.problems.find((p) => String(p.file).endsWith('broken.json'))!;
    t.equal(problem.code, 'REMORA_E_AGENT_DEFINITION_INVALID');
    t.equal(problem.field, 'service.port');
    t.match(
      agent.output(),
      /REMORA_E_AGENT_DEFINITION_INVALID/,
      'the problem is logged with its code',
    );
    t.ok(await webReachesApi(mesh), 'traffic still flows');
    t.equal((await mesh.healthy('api')).length, 2);
    // a good file turning bad keeps its services
    await mesh.writeDefinition(
      'api-2.json',
      '{"Service": {"Name": "api", "ID": "api-2", "Port": 0}}',
    );
    await waitFor(
      'the api-2 problem',
      async () => (await mesh.status()).problems.some((p) => String(p.file).endsWith('api-2.json')),
      10_000,
    );
    t.equal(
      (await mesh.healthy('api')).length,
      2,
      'api-2 stays registered with its last good definition',
    );
    await mesh.removeDefinition('broken.json');
    await mesh.writeDefinition('api-2.json', apiDefinition(mesh.ports, 2));
  });

  t.test('a killed proxy is restarted and serves again', async (t) => {
    const pids = await mesh.proxyPids();
    const victim = pids['api-1']!;
    t.ok(victim);
    process.kill(victim, 'SIGKILL');
    const newPid = await waitFor(
      'a new proxy for api-1',
      async () => {
        const p = (await mesh.proxyPids())['api-1'];
        return p && p !== victim ? p : null;
      },
      10_000,
      20,
    );
    t.not(newPid, victim);
    await waitFor(
      'api-1 to answer through its new proxy',
      async () => {
        const r = await webReachesApi(mesh);
        return r?.api?.instance === 'api-1';
      },
      30_000,
      20,
    );
    const st = await mesh.status();
    const inst = st.instances.find((i) => i.id === 'api-1')!;
    t.equal(inst.proxy?.restarts, 1);
    t.equal(inst.proxy?.lastError?.code, 'REMORA_E_AGENT_PROXY_EXITED');
  });

  t.test('remora status prints instances, proxies, certificate expiry and endpoints', async (t) => {
    const r = await runRemora(['status', '--agent-admin', `http://127.0.0.1:${mesh.adminPort}`]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /INSTANCE\s+SERVICE/);
    t.match(
      r.stdout,
      /api-1\s+api\s+http\s+\d+\s+yes\s+\d+\s+yes/,
      'the protocol the proxy serves',
    );
    t.match(r.stdout, /UPSTREAM\s+ENDPOINTS/);
    t.match(r.stdout, /api\s+2\s+yes\s+web-1/);
    t.match(r.stdout, /\(in \d+h/);
  });
});
