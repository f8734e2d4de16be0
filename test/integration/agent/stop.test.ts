import t from 'tap';
import { isProcessAlive } from '../../../agent/spawn.ts';
import { apiDefinition, startMesh, waitFor, webDefinition, webReachesApi } from './harness.ts';

interface LogLine {
  time: string;
  msg: string;
  instance?: string;
  step?: string;
}

t.test(
  'stopping the agent fails readiness, deregisters, then drains and stops each proxy',
  async (t) => {
    const mesh = await startMesh(t);
    await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
    await mesh.writeDefinition('api.json', apiDefinition(mesh.ports, 1));
    const agent = mesh.startAgent();
    await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
    const pids = await mesh.proxyPids();

    t.equal(await agent.stop('SIGTERM'), 0, 'the agent exits cleanly');
    const lines = agent
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
    for (const id of ['api-1', 'web-1']) {
      const order = lines
        .filter((l) => l.instance === id && (l.step || /failing readiness/.test(l.msg)))
        .map((l) => l.step ?? 'fail-readiness');
      t.same(
        order,
        ['fail-readiness', 'deregistered', 'draining', 'stopped'],
        `${id}: ordered stop`,
      );
    }
    t.equal((await mesh.healthy('api')).length, 0, 'api is gone from Consul');
    t.equal((await mesh.healthy('web')).length, 0, 'web is gone from Consul');
    for (const [id, pid] of Object.entries(pids))
      t.notOk(isProcessAlive(pid), `proxy of ${id} exited`);
  },
);
