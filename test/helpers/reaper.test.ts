// The reaper: whatever ends a test process — tap's timeout (SIGALRM, then SIGKILL), SIGTERM or a
// normal exit — the processes it recorded do not survive it, and processes it did not record are
// left alone.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../../lib/util/index.ts';

const FIXTURE = new URL('./fixtures/reaped-parent.ts', import.meta.url).pathname;

interface Started {
  reaped: Record<string, number>;
  unrecorded: number;
  watchdog: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function startParent(
  t: Test,
  mode: 'wait' | 'exit' = 'wait',
): Promise<{ pid: number; started: Started; endInput(): void }> {
  const dir = await mkdtemp(join(tmpdir(), 'remora-reaper-'));
  const parent = spawn(process.execPath, [FIXTURE, dir, mode], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '' },
  });
  let out = '';
  let err = '';
  parent.stdout.on('data', (d: Buffer) => (out += d.toString()));
  parent.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const line = await waitFor(
    'the stand-in test process to start its children',
    () => (parent.exitCode !== null ? Promise.reject(new Error(err)) : /^\{.*\}$/m.exec(out)?.[0]),
    30_000,
  );
  const started = JSON.parse(line) as Started;
  t.teardown(async () => {
    for (const pid of [parent.pid!, started.unrecorded, ...Object.values(started.reaped)])
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });
  for (const [what, pid] of Object.entries(started.reaped)) t.ok(alive(pid), `${what} runs`);
  return { pid: parent.pid!, started, endInput: () => parent.stdin.end() };
}

for (const signal of ['SIGKILL', 'SIGALRM', 'SIGTERM'] as const) {
  t.test(`a test process ended by ${signal} leaves none of its processes behind`, async (t) => {
    const { pid, started } = await startParent(t);
    process.kill(pid, signal);
    await waitFor(
      'every recorded process to be gone',
      () => Object.values(started.reaped).every((p) => !alive(p)),
      15_000,
    );
    for (const what of Object.keys(started.reaped)) t.pass(`${what} is gone`);
    await waitFor('the watchdog to exit', () => !alive(started.watchdog), 15_000);
    t.ok(alive(started.unrecorded), 'a process it did not record still runs');
  });
}

t.test('a test process that exits without stopping its processes takes them along', async (t) => {
  const parent = await startParent(t, 'exit');
  const { started } = parent;
  parent.endInput();
  await waitFor(
    'every recorded process to be gone',
    () => Object.values(started.reaped).every((p) => !alive(p)),
    15_000,
  );
  for (const what of Object.keys(started.reaped)) t.pass(`${what} is gone`);
  t.ok(alive(started.unrecorded), 'a process it did not record still runs');
});
