import t from 'tap';
import { Writable } from 'node:stream';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createAccessLog, MAX_PENDING_BYTES, pathOf } from '../../proxy/access-log.ts';

const entry = {
  direction: 'inbound' as const,
  source: 'web',
  destination: 'api',
  protocol: 'HTTP/1.1' as const,
  status: 200,
  durationMs: 1,
};

/** A stdout that keeps what it is given, or holds it (a reader that does not read). */
function sink(o: { hold?: boolean } = {}) {
  const got: string[] = [];
  const w = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      got.push(chunk.toString());
      if (!o.hold) cb();
    },
  });
  return { w, got };
}

/** An access log to `stdout` that counts what it drops. */
function logTo(stdout: Writable) {
  const log = Object.assign(
    createAccessLog({ logger: createSilentLogger(), onDrop: () => log.drops++, stdout }),
    { drops: 0 },
  );
  return log;
}

t.test('pathOf leaves the query string out', async (t) => {
  t.equal(pathOf('/a/b?token=x'), '/a/b');
  t.equal(pathOf('/a'), '/a');
});

t.test('off until configured; one JSON line per entry to stdout', async (t) => {
  const out = sink();
  const log = logTo(out.w);
  log.write(entry);
  t.equal(log.enabled, false);
  log.configure({ type: 'stdout' });
  t.equal(log.enabled, true);
  log.write(entry);
  log.write(entry);
  await new Promise((r) => setImmediate(r));
  t.equal(out.got.length, 1, "one turn's lines leave in one write");
  t.equal(out.got[0]!.split('\n').length, 3);
  t.match(JSON.parse(out.got[0]!.split('\n')[0]!), { log: 'access', ...entry });
  log.configure(undefined);
  log.write(entry);
  await new Promise((r) => setImmediate(r));
  t.same([out.got.length, log.drops], [1, 0], 'nothing written once off, nothing counted');
});

t.test('a reader that falls 1 MiB behind loses lines, counted', async (t) => {
  const out = sink({ hold: true });
  const log = logTo(out.w);
  log.configure({ type: 'stdout' });
  const big = { ...entry, path: '/'.padEnd(64 * 1024, 'x') };
  for (let i = 0; i < 40; i++) log.write(big);
  t.ok(log.drops > 0 && log.drops < 40, `${log.drops} of 40 lines dropped`);
  await new Promise((r) => setImmediate(r));
  t.ok(out.w.writableLength <= MAX_PENDING_BYTES + 70 * 1024, 'the backlog stays bounded');
});

t.test('a broken standard output drops lines and does not throw', async (t) => {
  const out = sink();
  const log = logTo(out.w);
  log.configure({ type: 'stdout' });
  out.w.emit('error', Object.assign(new Error('EPIPE'), { code: 'EPIPE' }));
  log.write(entry);
  t.equal(log.drops, 1);
});

t.test(
  'a format from the next snapshot shapes the lines; dropping it brings back the own line',
  async (t) => {
    const out = sink();
    const log = logTo(out.w);
    log.configure({ type: 'stdout', textFormat: '%RESPONSE_CODE% %UPSTREAM_HOST%' });
    t.equal(log.detailed, true, 'callers pass the detail a format reads');
    log.write(entry, { upstream: { address: '127.0.0.1', port: 8080 } });
    log.configure({ type: 'stdout', jsonFormat: '{"code":"%RESPONSE_CODE%"}' });
    log.write(entry);
    log.configure({ type: 'stdout' });
    t.equal(log.detailed, false);
    log.write(entry);
    await new Promise((r) => setImmediate(r));
    const lines = out.got.join('').split('\n');
    t.equal(lines[0], '200 127.0.0.1:8080');
    t.equal(lines[1], '{"code":200}');
    t.match(JSON.parse(lines[2]!), { log: 'access', ...entry });
    t.equal(lines.length, 4);
  },
);
