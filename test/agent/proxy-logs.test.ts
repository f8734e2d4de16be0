// Proxy logs stay bounded: a real process that looks like a proxy (its command line names
// `proxy --instance <id>`, its output appended to proxy.log as the agent's spawner does) writes
// numbered lines in tight bursts, 1 ms apart, while the rotator cuts its log every 64 KiB. Every line it wrote must be
// found once, whole, in order, in the files kept.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createProxyLogRotator, pauseProxy, resumeProxies } from '../../agent/proxy-logs.ts';
import { createLogger, createSilentLogger, type Logger } from '../../lib/log/index.ts';
import { createClock, waitFor } from '../../lib/util/index.ts';

const LINES = 30_000;

/** A data dir with one instance directory; returns both. */
function dataDir(t: Test, id: string): { root: string; inst: string } {
  const root = mkdtempSync(join(tmpdir(), 'remora-logs-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const inst = join(root, 'instances', id);
  mkdirSync(inst, { recursive: true });
  return { root, inst };
}

/** A logger whose lines land in `lines`. */
function linesInto(lines: string[]): Logger {
  return createLogger({
    component: 'agent',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    }),
  });
}

/** The pid file as the agent's supervisor writes it. */
function writePidFile(inst: string, pid: number, instance: string): void {
  writeFileSync(
    join(inst, 'proxy.pid'),
    JSON.stringify({ pid, instance, adminPort: 0, startedAt: new Date().toISOString() }),
  );
}

/**
 * Starts the fake proxy: LINES numbered lines to its stdout (proxy.log, O_APPEND), then it
 * creates `<inst>/written` and, with `stay`, lives on (as a proxy does) until killed, else exits.
 */
function startWriter(
  inst: string,
  id: string,
  stay = false,
): Promise<number | null> & { pid: number; kill(): void } {
  const fd = openSync(join(inst, 'proxy.log'), 'a', 0o600);
  const script = `const fs = require('node:fs');
    const pad = 'x'.repeat(40);
    let i = 0;
    const burst = () => {
      for (let n = 0; n < 50 && i < ${LINES}; n++, i++) fs.writeSync(1, JSON.stringify({ seq: i, pad }) + '\\n');
      if (i < ${LINES}) return void setTimeout(burst, 1); // ~0.6 s of writing: many cuts
      fs.writeFileSync(${JSON.stringify(join(inst, 'written'))}, '');
      if (${stay}) setInterval(() => {}, 1000);
    };
    burst();`;
  const child = spawn(process.execPath, ['-e', script, 'proxy', '--instance', id], {
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  writePidFile(inst, child.pid!, id);
  const done = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return Object.assign(done, { pid: child.pid!, kill: () => child.kill('SIGKILL') });
}

/** Sequence numbers of the lines of the kept files, oldest first; throws on a line not whole. */
function keptSequence(inst: string, files: number): { seqs: number[]; kept: string[] } {
  const names = [
    ...Array.from({ length: files }, (_, i) => `proxy.log.${files - i}`),
    'proxy.log',
  ].filter((n) => existsSync(join(inst, n)));
  const seqs: number[] = [];
  for (const n of names) {
    const text = readFileSync(join(inst, n), 'utf8');
    for (const line of text.split('\n').slice(0, -1))
      seqs.push((JSON.parse(line) as { seq: number }).seq);
    if (!text.endsWith('\n') && text !== '') throw new Error(`${n} ends inside a line`);
  }
  return { seqs, kept: names };
}

t.test('a proxy writing flat out loses no line and splits none across rotations', async (t) => {
  const { root, inst } = dataDir(t, 'api-1');
  const logs: string[] = [];
  const rotator = createProxyLogRotator({
    dataDir: root,
    maxBytes: 64 * 1024,
    files: 3,
    intervalMs: 5,
    clock: createClock(),
    logger: linesInto(logs),
    pause: (id) => pauseProxy(join(root, 'instances', id, 'proxy.pid'), id),
  });
  t.teardown(() => rotator.stop());
  // the writer lives on once done, as a proxy does: the last cut below pauses it too
  const writer = startWriter(inst, 'api-1', true);
  t.teardown(() => writer.kill());
  await waitFor('the writer to finish', () => existsSync(join(inst, 'written')), 120_000);
  rotator.stop();
  await rotator.check();
  writer.kill();
  await writer;
  const rotations = logs.filter((l) => l.includes('rotated the proxy log of api-1'));
  t.ok(rotations.length >= 3, `the log was rotated while written (${rotations.length} times)`);
  t.ok(
    rotations.every((l) => (JSON.parse(l) as { paused: boolean }).paused),
    'the writer was paused for each cut',
  );
  const { seqs, kept } = keptSequence(inst, 3);
  t.same(kept, ['proxy.log.3', 'proxy.log.2', 'proxy.log.1', 'proxy.log'], 'three copies kept');
  t.equal(seqs.at(-1), LINES - 1, 'the last line written is there');
  const gaps = seqs.filter((s, i) => i > 0 && s !== seqs[i - 1]! + 1);
  t.same(gaps, [], `no line lost or repeated from ${seqs[0]} to ${LINES - 1}`);
  for (const n of kept.slice(0, -1))
    t.equal(statSync(join(inst, n)).mode & 0o777, 0o600, `${n} is 0600`);
  t.ok(statSync(join(inst, 'proxy.log')).size <= 64 * 1024, 'proxy.log is back under the bound');
});

t.test('a process that is not the instance’s proxy is never paused', async (t) => {
  const { inst } = dataDir(t, 'api-1');
  const writer = startWriter(inst, 'other-1'); // its command line names another instance
  t.equal(pauseProxy(join(inst, 'proxy.pid'), 'api-1'), null, 'no pause for a recycled pid');
  t.equal(pauseProxy(join(inst, 'no-such.pid'), 'api-1'), null, 'nor without a pid file');
  t.equal(await writer, 0);
});

t.test('resumeProxies wakes a proxy left paused by an agent that died mid-rotation', async (t) => {
  const { root, inst } = dataDir(t, 'api-1');
  const child = spawn(
    process.execPath,
    ['-e', 'setTimeout(() => {}, 60000)', 'proxy', '--instance', 'api-1'],
    { stdio: 'ignore' },
  );
  t.teardown(() => child.kill('SIGKILL'));
  writePidFile(inst, child.pid!, 'api-1');
  const state = () => {
    const s = readFileSync(`/proc/${child.pid}/stat`, 'latin1');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  };
  const resume = pauseProxy(join(inst, 'proxy.pid'), 'api-1');
  t.ok(resume, 'paused');
  t.equal(state(), 'T', 'stopped');
  await resumeProxies(root); // what a starting agent does; `resume` is never called
  for (let i = 0; i < 100 && state() === 'T'; i++) await new Promise((r) => setTimeout(r, 10));
  t.not(state(), 'T', 'running again');
});

t.test(
  'a log that cannot be rotated is reported once, and the next passes stay quiet',
  async (t) => {
    const { root, inst } = dataDir(t, 'api-1');
    writeFileSync(join(inst, 'proxy.log'), 'x'.repeat(2048));
    mkdirSync(join(inst, 'proxy.log.1')); // in the way of the copy
    const logs: string[] = [];
    const rotator = createProxyLogRotator({
      dataDir: root,
      maxBytes: 1024,
      files: 1,
      intervalMs: 60_000,
      clock: createClock(),
      logger: linesInto(logs),
    });
    t.teardown(() => rotator.stop());
    await rotator.check();
    await rotator.check();
    const reports = logs.filter((l) => l.includes('REMORA_E_AGENT_PROXY_LOG_ROTATION'));
    t.equal(reports.length, 1, 'one report');
    t.match(reports[0], /cannot rotate .*proxy\.log.*free disk space/);
    t.equal(statSync(join(inst, 'proxy.log')).size, 2048, 'the log is left whole');
  },
);

t.test('maxBytes 0 leaves logs alone', async (t) => {
  const { root, inst } = dataDir(t, 'api-1');
  writeFileSync(join(inst, 'proxy.log'), 'x'.repeat(4096));
  const rotator = createProxyLogRotator({
    dataDir: root,
    maxBytes: 0,
    files: 2,
    intervalMs: 5,
    clock: createClock(),
    logger: createSilentLogger(),
  });
  t.teardown(() => rotator.stop());
  await rotator.check();
  t.notOk(existsSync(join(inst, 'proxy.log.1')));
  t.equal(statSync(join(inst, 'proxy.log')).size, 4096);
});
