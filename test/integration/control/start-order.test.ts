// `remora control` started before nats-server (systemd and compose may start it first): it keeps
// trying with a coded log line, serves once NATS comes up, and a stop signal ends the wait at once.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { startNatsServer, type NatsServerHandle } from '../../helpers/nats.ts';
import { REMORA_BIN } from '../../helpers/cli.ts';
import { startDevConsul, type DevConsul } from '../../../lib/devconsul/index.ts';
import { waitFor } from '../../../lib/util/index.ts';

t.setTimeout(120_000);

let nats: NatsServerHandle;
let devconsul: DevConsul;
const children: ChildProcess[] = [];

t.before(async () => {
  nats = await startNatsServer();
  await nats.stop(); // the port is known; nothing listens on it until restart()
  devconsul = await startDevConsul({ port: 0 });
});

t.teardown(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL');
      await once(c, 'exit');
    }
  }
  await nats.stop();
  await devconsul.close();
});

function startControl(): { child: ChildProcess; log: () => string } {
  const child = spawn(process.execPath, [REMORA_BIN, 'control'], {
    env: {
      PATH: process.env.PATH ?? '',
      REMORA_CONTROL_NATS_SERVERS: nats.url,
      REMORA_CONTROL_CONSUL_ADDRESS: devconsul.url,
      REMORA_CONTROL_OPERATOR_TOKEN: 'start-order-operator-token',
      REMORA_CONTROL_TRACING_ENDPOINT: '',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let log = '';
  child.stderr.on('data', (d: Buffer) => (log += d.toString()));
  return { child, log: () => log };
}

const waiting = (log: string): boolean =>
  log.includes('"code":"REMORA_E_NATS_CONNECT_FAILED"') && log.includes('NATS not reachable yet');

t.test('a stop signal ends the wait for NATS and the process exits 0', async (t) => {
  const c = startControl();
  await waitFor('control to report that NATS is not reachable', () => waiting(c.log()), 60_000);
  const exited = once(c.child, 'exit');
  c.child.kill('SIGTERM');
  const [code, signal] = (await Promise.race([
    exited,
    new Promise((r) => setTimeout(() => r(['still running', null]), 20_000)),
  ])) as [number | string, string | null];
  t.equal(code, 0, 'exit code 0 after one SIGTERM');
  t.equal(signal, null, 'not killed by a signal');
  t.match(c.log(), /stopped before NATS answered/);
});

t.test('control started before NATS serves once NATS comes up', async (t) => {
  const c = startControl();
  await waitFor('control to report that NATS is not reachable', () => waiting(c.log()), 60_000);
  t.notMatch(c.log(), /control plane serving/, 'not serving without NATS');
  await nats.restart();
  await waitFor('control to serve', () => c.log().includes('control plane serving'), 60_000);
  t.pass('serving after NATS came up');
  const exited = once(c.child, 'exit');
  c.child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  t.equal(code, 0, 'a clean stop after serving');
});
