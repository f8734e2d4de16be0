import t from 'tap';
import { runRemora } from '../../helpers/cli.ts';
import { startDevConsulProcess } from '../../helpers/devconsul.ts';

t.test('remora devconsul serves until SIGTERM and prints its URL once', async (t) => {
  const consul = await startDevConsulProcess();
  t.teardown(() => consul.stop());
  const leader = await fetch(`${consul.url}/v1/status/leader`);
  t.equal(leader.status, 200);
  t.equal(await leader.json(), `127.0.0.1:${consul.port}`);
  await consul.stop();
  await t.rejects(fetch(`${consul.url}/v1/status/leader`), 'gone after SIGTERM');
});

t.test('a malformed --listen stops with a coded error', async (t) => {
  const r = await runRemora(['devconsul', '--listen', 'nowhere'], { timeoutMs: 30_000 });
  t.equal(r.code, 1);
  t.match(r.stderr, /REMORA_E_DEVCONSUL_BAD_LISTEN/);
  t.match(r.stderr, /--listen "nowhere" is not host:port/);
});
