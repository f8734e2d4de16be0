// Fault scenarios on the data path, under bounded GET+POST load through real proxies:
// an endpoint killed, a proxy killed (its agent restarts it), the agent restarted.
import t from 'tap';
import { waitFor } from '../../lib/util/index.ts';
import { LONG, OUTAGE_MS, startLoad } from './load.ts';
import { checkScenario, startFaultMesh } from './setup.ts';

t.setTimeout(LONG ? 900_000 : 300_000);
const fm = await startFaultMesh(t, ['--keep-proxies']);
const { mesh, recorders } = fm;

t.test('an endpoint killed under load loses no GET and duplicates no POST', async (t) => {
  const load = startLoad({ url: fm.url, scenario: 'endpoint-killed' });
  await load.okMore(20, 'requests before the kill');
  await recorders[1].kill('SIGKILL');
  await load.hold(OUTAGE_MS);
  const before = recorders[1].received();
  await recorders[1].restart();
  await waitFor(
    'api-2 to receive requests again',
    () => recorders[1].received() > before || null,
    60_000,
    50,
  );
  await load.okMore(20, 'requests after the endpoint returned');
  await checkScenario(t, 'endpoint-killed', await load.stop(), fm);
});

t.test('a proxy killed under load is restarted by its agent; nothing is duplicated', async (t) => {
  const pids = await mesh.proxyPids();
  const load = startLoad({ url: fm.url, scenario: 'proxy-killed' });
  await load.okMore(20, 'requests before the kill');
  process.kill(pids['api-1']!, 'SIGKILL');
  const before = recorders[0].received();
  const pid = await waitFor(
    'the agent to start a new proxy for api-1',
    async () => {
      const now = (await mesh.proxyPids())['api-1'];
      return now && now !== pids['api-1'] ? now : null;
    },
    60_000,
    100,
  );
  await waitFor(
    'api-1 to receive requests again',
    () => recorders[0].received() > before || null,
    60_000,
    50,
  );
  await load.okMore(20, 'requests after the restart');
  await checkScenario(t, 'proxy-killed', await load.stop(), fm);
  t.not(pid, pids['api-1'], 'a new proxy process serves api-1');
});

t.test('an agent restarted under load fails and duplicates nothing', async (t) => {
  const pids = await mesh.proxyPids();
  const load = startLoad({ url: fm.url, scenario: 'agent-restarted' });
  await load.okMore(20, 'requests before the restart');
  t.equal(await fm.agent.stop('SIGTERM'), 0, 'the agent exits cleanly');
  await load.hold(OUTAGE_MS);
  fm.startAgent();
  await waitFor(
    'the new agent to adopt every proxy',
    async () => {
      const s = await mesh.status().catch(() => null);
      return (
        (s &&
          s.instances.length === 3 &&
          s.instances.every((i) => i.proxy?.ready && i.registered)) ||
        null
      );
    },
    60_000,
    100,
  );
  await load.okMore(20, 'requests after the adoption');
  // The agent refreshes its sidecars' TTL checks every third of the TTL, so an absence of two
  // thirds of it lets them lapse in Consul (the long variant: 30 s away, TTL 30 s); the new
  // agent then keeps its cached endpoints through Consul's first empty answer.
  await checkScenario(t, 'agent-restarted', await load.stop(), fm);
  t.same(await mesh.proxyPids(), pids, 'the same proxy processes still serve');
});
