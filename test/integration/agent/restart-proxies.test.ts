import t from 'tap';
import { readFile } from 'node:fs/promises';
import { isProcessAlive } from '../../../agent/spawn.ts';
import { runRemora } from '../../helpers/cli.ts';
import {
  apiDefinition,
  startMesh,
  startWebLoad,
  waitFor,
  webDefinition,
  webReachesApi,
} from './harness.ts';

// one agent boot (which first compiles the proxy's code into Node's cache), two proxies
// replaced one after the other, bounded waits: a loaded 2-core CI box needs the margin
t.setTimeout(180_000);

t.test(
  'restart-proxies replaces every proxy under load: no request fails, the instances stay ready',
  async (t) => {
    const mesh = await startMesh(t);
    await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
    await mesh.writeDefinition('api.json', apiDefinition(mesh.ports, 1));
    const agent = mesh.startAgent();
    t.teardown(() => agent.stop());
    await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
    const before = await mesh.proxyPids();
    t.same(Object.keys(before).sort(), ['api-1', 'web-1']);

    // load: four callers, each one request at a time over the web app's keep-alive connections
    // to its sidecar, bounded in count and time
    const load = startWebLoad(mesh, 4);
    let stop = false;
    const deadline = Date.now() + 120_000;
    // Consul's view of api, sampled while the proxies are replaced
    let unhealthy = 0;
    let samples = 0;
    const watch = (async () => {
      while (!stop && Date.now() < deadline) {
        samples += 1;
        if ((await mesh.healthy('api')).length !== 1) unhealthy += 1;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    await waitFor('requests before the restart', () => load.ok >= 40, 30_000);
    const admin = `http://127.0.0.1:${mesh.adminPort}`;
    const r = await runRemora(['restart-proxies', '--agent-admin', admin], { timeoutMs: 120_000 });
    t.equal(r.code, 0, `restart-proxies succeeds\n${r.stdout}${r.stderr}`);
    for (const id of ['api-1', 'web-1'])
      t.match(
        r.stdout,
        new RegExp(
          `^${id}: restarted — pid \\d+ took over from pid ${before[id]}, which drains$`,
          'm',
        ),
      );
    // where the kernel would reset connections queued on an old proxy's listeners, it is said
    const migrate = await readFile('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').catch(() => '');
    if (migrate.trim() === '0') t.match(r.stdout, /^note: net\.ipv4\.tcp_migrate_req is 0/m);
    else t.notMatch(r.stdout, /^note:/m);
    const after = await mesh.proxyPids();
    for (const id of ['api-1', 'web-1']) {
      t.not(after[id], before[id], `${id} is served by a new proxy`);
      t.ok(isProcessAlive(after[id]!), `${id}'s new proxy runs`);
    }
    await waitFor(
      'the old proxies to drain and exit',
      () => Object.values(before).every((pid) => !isProcessAlive(pid)),
      30_000,
      100,
    );
    const more = load.ok;
    await waitFor('requests after the restart', () => load.ok >= more + 40, 30_000);
    stop = true;
    await Promise.all([load.stop(), watch]);

    t.same(load.failures, [], 'no request failed');
    t.ok(load.ok > 80, `${load.ok} requests succeeded`);
    t.ok(samples > 5, `Consul sampled ${samples} times`);
    t.equal(unhealthy, 0, 'api-1 stayed healthy in Consul throughout');
    const status = await mesh.status();
    for (const i of status.instances)
      t.match(i.proxy, { pid: after[i.id], ready: true, restarts: 0 }, `${i.id} in the status`);

    // an instance the host does not run is said with a code; the others are not touched
    const bad = await runRemora(['restart-proxies', 'nope-1', '--agent-admin', admin]);
    t.equal(bad.code, 1, 'a failed restart exits 1');
    t.match(
      bad.stdout,
      /^nope-1: not restarted — REMORA_E_AGENT_PROXY_HANDOVER_FAILED: cannot restart the proxy of nope-1: no proxy runs for it on this host/m,
    );
    t.same(await mesh.proxyPids(), after, 'no proxy was touched');
  },
);
