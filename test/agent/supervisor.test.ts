import t from 'tap';
import { connect } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSupervisor, type ProcessOps } from '../../agent/supervisor.ts';
import { dataPaths, writesSettled } from '../../agent/files.ts';
import type { SpawnProxyRequest } from '../../agent/spawn.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createClock, waitFor, type Clock } from '../../lib/util/index.ts';
import {
  attachFrameChannel,
  type AgentFrame,
  type ProxyFrame,
  type ProxySnapshot,
} from '../../lib/proxy-api/index.ts';

/** An in-process stand-in for `remora proxy`: speaks the real frames over the real socket. */
function fakeProxy(
  socketPath: string,
  instance: string,
  pid: number,
  appliedVersion: number | null = null,
  refuse = false,
) {
  const snapshots: number[] = [];
  const drains: number[] = [];
  let applied = appliedVersion;
  let connected = false;
  const sock = connect(socketPath);
  const ch = attachFrameChannel<AgentFrame, ProxyFrame>(sock, {
    // the snapshot body here is a placeholder, so only the frame shape is checked
    decode: (v) => v as AgentFrame,
    onFrame(f) {
      if (f.type === 'snapshot' && refuse) {
        const error = { code: 'REMORA_E_PROXY_LISTEN_FAILED', message: 'cannot listen on …' };
        ch.send({ v: 1, type: 'ack', version: f.snapshot.version, ok: false, error });
      } else if (f.type === 'snapshot') {
        snapshots.push(f.snapshot.version);
        applied = f.snapshot.version;
        ch.send({ v: 1, type: 'ack', version: f.snapshot.version, ok: true });
        ch.send({ v: 1, type: 'status', ready: true, appliedVersion: applied });
      } else if (f.type === 'drain') drains.push(f.deadlineMs);
    },
  });
  sock.on('connect', () => {
    connected = true;
    ch.send({ v: 1, type: 'hello', instance, pid, adminPort: 1234, appliedVersion: applied });
    ch.send({ v: 1, type: 'status', ready: applied !== null, appliedVersion: applied });
  });
  return { snapshots, drains, connected: () => connected, close: () => sock.destroy() };
}

function body(id: string): Omit<ProxySnapshot, 'version'> {
  return {
    instance: {
      id,
      service: 'api',
      datacenter: 'dc1',
      node: 'n',
      trustDomain: 'x.remora',
      spiffeId: 's',
    },
    inbound: {
      bindAddress: '127.0.0.1',
      bindPort: 1,
      localAppAddress: '127.0.0.1',
      localAppPort: 2,
      protocol: 'http',
    },
    upstreams: [],
    tls: { certPem: 'c', keyPem: 'k', rootsPem: ['r'] },
    intentions: { revision: 1, defaultPolicy: 'allow', auditMode: false, intentions: [] },
    tracing: { endpoint: '', sampleRatio: 1, headers: {} },
  };
}

async function setup(t: { teardown(fn: () => unknown): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'remora-sup-'));
  t.teardown(async () => {
    await writesSettled(); // a pid file write still in flight would fail on a removed dir
    await rm(dir, { recursive: true, force: true });
  });
  const paths = dataPaths(dir);
  let nextPid = 50_000;
  const alive = new Set<number>();
  const spawned: SpawnProxyRequest[] = [];
  const exits = new Map<number, (code: number | null, signal: string | null) => void>();
  const proxies: ReturnType<typeof fakeProxy>[] = [];
  t.teardown(() => proxies.forEach((p) => p.close()));
  // how a successor started by a handover behaves: serves, refuses its snapshot, never connects
  const successors = { mode: 'serve' as 'serve' | 'refuse' | 'silent' };
  const ops: ProcessOps = {
    spawn(req) {
      const pid = nextPid++;
      alive.add(pid);
      spawned.push(req);
      if (req.takeover && successors.mode === 'silent') return { pid, onExit: () => {} };
      const refuse = req.takeover === true && successors.mode === 'refuse';
      // the "process" connects like a real proxy would
      setImmediate(() => proxies.push(fakeProxy(req.socketPath, req.instance, pid, null, refuse)));
      return { pid, onExit: (fn) => exits.set(pid, fn) };
    },
    isAlive: (pid) => alive.has(pid),
    isProxy: (pid) => alive.has(pid),
    signal(pid) {
      alive.delete(pid);
      exits.get(pid)?.(null, 'SIGTERM');
    },
  };
  const ready: [string, boolean][] = [];
  const make = (clock: Clock = createClock()) =>
    createSupervisor({
      paths,
      ops,
      clock,
      random: () => 0.5,
      logger: createSilentLogger(),
      adoptTimeoutMs: 2000,
      adminPortBase: 0,
      snapshotFor: (id) => body(id),
      onReadyChange: (id, r) => ready.push([id, r]),
    });
  const crash = (pid: number) => {
    alive.delete(pid);
    exits.get(pid)?.(null, 'SIGKILL');
  };
  return { paths, spawned, ready, make, crash, proxies, alive, successors };
}

/** A supervisor whose api-1 proxy runs and is ready: where most tests start. */
async function servingApi(t: { teardown(fn: () => unknown): void }) {
  const s = await setup(t);
  const sup = s.make();
  await sup.listen();
  t.teardown(() => sup.close());
  await sup.ensure('api-1');
  await waitFor('ready', () => sup.status('api-1')?.ready);
  return { s, sup, oldPid: sup.status('api-1')!.pid! };
}

t.test('a new instance gets a proxy that receives its snapshot and reports ready', async (t) => {
  const s = await setup(t);
  const sup = s.make();
  await sup.listen();
  t.teardown(() => sup.close());
  await sup.ensure('api-1');
  t.equal(s.spawned.length, 1);
  t.same(s.spawned[0]!.instance, 'api-1');
  await waitFor('ready', () => sup.status('api-1')?.ready);
  t.same(s.ready, [['api-1', true]]);
  t.same(s.proxies[0]!.snapshots, [1]);
  sup.push('api-1');
  t.same(s.proxies[0]!.snapshots, [1], 'an unchanged snapshot is not sent again');
});

t.test('a crashed proxy is restarted and readiness fails while it is down', async (t) => {
  const { s, sup, oldPid: pid } = await servingApi(t);
  s.crash(pid);
  t.equal(sup.status('api-1')!.ready, false);
  await waitFor('a new proxy', () => s.spawned.length === 2 && sup.status('api-1')?.ready);
  t.not(sup.status('api-1')!.pid, pid);
  t.equal(sup.status('api-1')!.restarts, 1);
  t.same(
    s.ready.map((r) => r[1]),
    [true, false, true],
  );
});

t.test('a new supervisor adopts a running proxy instead of starting a duplicate', async (t) => {
  const s = await setup(t);
  const first = s.make();
  await first.listen();
  await first.ensure('api-1');
  await waitFor('ready', () => first.status('api-1')?.ready);
  const pid = first.status('api-1')!.pid!;
  first.release('api-1');
  await first.close();
  s.proxies[0]!.close();

  const second = s.make();
  await second.listen();
  t.teardown(() => second.close());
  await second.ensure('api-1');
  t.equal(second.status('api-1')!.state, 'adopting');
  // the surviving proxy reconnects with the version it serves
  s.proxies.push(fakeProxy(s.paths.socket, 'api-1', pid, 1));
  await waitFor('adopted and ready', () => second.status('api-1')?.ready);
  t.equal(s.spawned.length, 1, 'no second process was started');
  t.equal(second.status('api-1')!.adopted, true);
  t.same(s.proxies[1]!.snapshots, [], 'the unchanged snapshot is not re-sent');
});

t.test('a proxy that connects before its instance is defined is bound when it is', async (t) => {
  const s = await setup(t);
  const sup = s.make();
  await sup.listen();
  t.teardown(() => sup.close());
  s.alive.add(777);
  const early = fakeProxy(s.paths.socket, 'web-1', 777, 3);
  s.proxies.push(early);
  await waitFor('the early proxy to connect', () => early.connected());
  await sup.ensure('web-1');
  await waitFor('ready from the replayed status', () => sup.status('web-1')?.ready);
  t.equal(s.spawned.length, 0);
  t.equal(sup.status('web-1')!.pid, 777);
});

t.test('drain asks the proxy and stop ends it', async (t) => {
  const { s, sup, oldPid: pid } = await servingApi(t);
  const drained = sup.drain('api-1', 100);
  await waitFor('the drain frame', () => s.proxies[0]!.drains.length === 1);
  s.crash(pid); // the proxy exits once drained
  t.equal(await drained, true);
  await sup.stop('api-1');
  t.equal(sup.status('api-1'), null);
  t.equal(s.spawned.length, 1, 'a stopped proxy is not restarted');
});

t.test('a proxy stopped while its restart is being prepared is not started', async (t) => {
  const s = await setup(t);
  // restart timers fire only when the test says so
  const timers: Array<() => void> = [];
  const real = createClock();
  const clock: Clock = {
    now: () => real.now(),
    setTimeout: (fn) => {
      timers.push(fn);
      return timers.length as unknown as NodeJS.Timeout;
    },
    clearTimeout: () => undefined,
  };
  const sup = s.make(clock);
  await sup.listen();
  t.teardown(() => sup.close());
  await sup.ensure('api-1');
  await waitFor('connected', () => sup.status('api-1')?.connected);
  s.crash(sup.status('api-1')!.pid!);
  t.equal(sup.status('api-1')!.state, 'backoff');
  // the restart timer fires (spawning begins, awaiting its directory), and the instance is
  // stopped in the same tick — as when an agent stops right after a proxy died
  timers.at(-1)!();
  await sup.stop('api-1');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(s.spawned.length, 1, 'no second proxy was started');
  t.equal(sup.status('api-1'), null, 'the instance is gone');
});

t.test(
  'a handover hands the instance to a successor once it is ready; the old proxy drains',
  async (t) => {
    const { s, sup, oldPid } = await servingApi(t);
    const r = await sup.handover('api-1', 100);
    t.match(r, { instance: 'api-1', ok: true, oldPid, newPid: oldPid + 1 });
    t.equal(s.spawned[1]!.takeover, true, 'the successor is started to share the ports');
    t.same(s.proxies[1]!.snapshots, [2], 'the successor got the snapshot, as the next version');
    t.match(sup.status('api-1'), { pid: oldPid + 1, ready: true, state: 'running', restarts: 0 });
    t.same(s.ready, [['api-1', true]], 'the instance never stopped being ready');
    await waitFor('the old proxy asked to drain', () => s.proxies[0]!.drains.length === 1);
    t.same(s.proxies[0]!.drains, [100]);
    await waitFor('the old proxy gone', () => !s.alive.has(oldPid), 5000);
    t.equal(s.spawned.length, 2, 'its exit is not taken for a crash');
    await writesSettled();
    const pidFile = JSON.parse(await readFile(s.paths.proxyPid('api-1'), 'utf8')) as {
      pid: number;
    };
    t.equal(pidFile.pid, oldPid + 1, 'the next agent adopts the successor');
  },
);

t.test('a successor that cannot take the ports is stopped; the old proxy serves on', async (t) => {
  const { s, sup, oldPid } = await servingApi(t);
  s.successors.mode = 'refuse';
  const r = await sup.handover('api-1', 100);
  t.match(r, {
    ok: false,
    oldPid,
    newPid: oldPid,
    error: { code: 'REMORA_E_AGENT_PROXY_HANDOVER_FAILED' },
  });
  t.match(r.error!.message, /refused the snapshot: REMORA_E_PROXY_LISTEN_FAILED/);
  t.match(r.error!.message, /stop and start its instance instead/);
  t.match(r.error!.message, new RegExp(`pid ${oldPid} keeps serving`));
  t.notOk(s.alive.has(oldPid + 1), 'the successor was stopped');
  t.match(sup.status('api-1'), { pid: oldPid, ready: true });
  t.same(s.proxies[0]!.drains, [], 'the old proxy was not asked to drain');
  t.same(s.ready, [['api-1', true]]);
});

t.test('a successor that never connects is given up after the timeout', async (t) => {
  const { s, sup } = await servingApi(t);
  s.successors.mode = 'silent';
  const r = await sup.handover('api-1', 100, 200);
  t.match(r.error?.message, /the new proxy was not ready within 200 ms/);
  t.notOk(s.alive.has(r.oldPid! + 1), 'the successor was stopped');
  t.equal(sup.status('api-1')!.pid, r.oldPid);
});

t.test('a handover is refused without a ready proxy, and one at a time', async (t) => {
  const s = await setup(t);
  const sup = s.make();
  await sup.listen();
  t.teardown(() => sup.close());
  t.match(await sup.handover('nope', 100), {
    ok: false,
    error: { message: /no proxy runs for it on this host/ },
  });
  await sup.ensure('api-1');
  await waitFor('ready', () => sup.status('api-1')?.ready);
  s.successors.mode = 'silent';
  const first = sup.handover('api-1', 100, 300);
  t.match(await sup.handover('api-1', 100), {
    ok: false,
    error: { message: /a restart of this proxy is already under way/ },
  });
  t.equal((await first).ok, false);
});
