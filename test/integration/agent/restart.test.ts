import t from 'tap';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isProcessAlive } from '../../../agent/spawn.ts';
import {
  apiDefinition,
  startMesh,
  startWebLoad,
  waitFor,
  webDefinition,
  webReachesApi,
} from './harness.ts';

// two agent boots (each first compiles the proxy's code into Node's cache) and four bounded
// waits: on a loaded 2-core CI box, running another test file beside it, this passes 60 s
t.setTimeout(180_000);

t.test(
  'an agent restart under light load fails no request and starts no duplicate proxy',
  async (t) => {
    const mesh = await startMesh(t);
    await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
    await mesh.writeDefinition('api.json', apiDefinition(mesh.ports, 1));
    // the readiness TTL must outlast the window without an agent; on a loaded 2-core CI box an
    // agent takes several seconds to boot, so give it a wide margin
    const env = { REMORA_AGENT_CHECK_TTL_MS: '120000' };
    const first = mesh.startAgent(env, ['--keep-proxies']);
    await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
    const pidsBefore = await mesh.proxyPids();
    t.same(Object.keys(pidsBefore).sort(), ['api-1', 'web-1']);

    // light load: one request at a time, bounded in count and time
    const load = startWebLoad(mesh);

    await waitFor('some requests before the restart', () => load.ok >= 20, 30_000);
    t.equal(await first.stop('SIGTERM'), 0, 'the first agent exits cleanly');
    t.match(first.output(), /proxies and registrations stay for the next agent/);
    for (const [id, pid] of Object.entries(pidsBefore))
      t.ok(isProcessAlive(pid), `proxy of ${id} outlives the agent`);
    const during = load.ok;
    await waitFor('requests while no agent runs', () => load.ok >= during + 20, 30_000);
    // api-1's certificate file is lost while its proxy runs: the next agent adopts the proxy
    // and asks for a new one without waiting for the proxy's registration
    const certFile = join(mesh.dataDir, 'instances', 'api-1', 'cert.pem');
    const lostCert = await readFile(certFile, 'utf8');
    await rm(certFile);

    const second = mesh.startAgent(env, ['--keep-proxies']);
    t.teardown(() => second.stop());
    const status = await waitFor(
      'the new agent to adopt both proxies',
      async () => {
        const s = await mesh.status().catch(() => null);
        return s &&
          s.instances.length === 2 &&
          s.instances.every((i) => i.proxy?.adopted && i.proxy.ready && i.registered)
          ? s
          : null;
      },
      60_000,
      100,
    );
    const renewed = await waitFor(
      "api-1's new certificate",
      () => readFile(certFile, 'utf8').catch(() => null),
      30_000,
      100,
    );
    t.not(renewed, lostCert, 'a new certificate was issued for the adopted instance');
    const after = load.ok;
    await waitFor('requests after the adoption', () => load.ok >= after + 20, 30_000);
    await load.stop();

    t.same(load.failures, [], 'no request failed');
    t.ok(load.ok > 60, `${load.ok} requests succeeded`);
    t.same(await mesh.proxyPids(), pidsBefore, 'the same proxy processes serve, none was started');
    for (const i of status.instances) t.equal(i.proxy?.restarts, 0, `${i.id}: no restart`);
    t.equal((await mesh.healthy('api')).length, 1, 'api-1 stays healthy in Consul');
  },
);
