import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createIntentionsMirror, createRootsMirror } from '../../agent/control-state.ts';
import type { IntentionsSnapshot } from '../../lib/intentions/types.ts';
import type { TrustBundle } from '../../agent/ports.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { waitFor } from '../../lib/util/index.ts';
import { createFakeClock } from './fakes.ts';

const snap = (revision: number): IntentionsSnapshot => ({
  revision,
  defaultPolicy: 'deny',
  auditMode: false,
  intentions: [{ source: 'web', destination: 'api', action: 'allow' }],
});

async function tmp(t: { teardown(fn: () => unknown): void }) {
  const d = await mkdtemp(join(tmpdir(), 'remora-mirror-'));
  t.teardown(() => rm(d, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 }));
  return d;
}

t.test('intentions apply only a higher revision, from messages and re-fetches', async (t) => {
  const d = await tmp(t);
  const clock = createFakeClock();
  let served = snap(5);
  const seen: number[] = [];
  const m = createIntentionsMirror({
    clock,
    random: () => 0.5,
    logger: createSilentLogger(),
    fetch: async () => served,
    cachePath: join(d, 'intentions.json'),
    refreshMs: 60_000,
    onChange: (s) => seen.push(s.revision),
  });
  t.teardown(() => m.stop());
  await m.start();
  await waitFor('the first fetch', () => m.current());
  m.offer(snap(4));
  m.offer(snap(7));
  m.offer(snap(6));
  t.same(seen, [5, 7], 'older revisions are ignored');
  served = snap(9);
  clock.advance(60_000);
  await waitFor('the periodic re-fetch', () => m.current()?.revision === 9);
  t.same(seen, [5, 7, 9]);
});

t.test('a restarted agent starts from the cached intentions while control is down', async (t) => {
  const d = await tmp(t);
  const clock = createFakeClock();
  const opts = {
    clock,
    random: () => 0.5,
    logger: createSilentLogger(),
    cachePath: join(d, 'intentions.json'),
    refreshMs: 60_000,
    onChange: () => undefined,
  };
  const first = createIntentionsMirror({ ...opts, fetch: async () => snap(3) });
  await first.start();
  await waitFor('the cache file', async () => {
    const { readFile } = await import('node:fs/promises');
    return readFile(opts.cachePath, 'utf8').catch(() => null);
  });
  first.stop();
  const second = createIntentionsMirror({
    ...opts,
    fetch: async () => {
      throw new Error('no responders');
    },
  });
  t.teardown(() => second.stop());
  await second.start();
  t.equal(second.current()?.revision, 3);
  await waitFor('the failed fetch to be recorded', () => second.status().lastError);
  t.equal(second.status().lastError?.code, 'REMORA_E_AGENT_CONTROL_UNAVAILABLE');
  t.equal(second.status().live, false);
});

t.test('a new active root is reported as a rotation; an added root is not', async (t) => {
  const d = await tmp(t);
  const bundle = (active: string, ids: string[]): TrustBundle => ({
    trustDomain: 'x.remora',
    activeRootId: active,
    roots: ids.map((id) => ({ id, pem: id, notAfter: '2030-01-01T00:00:00Z' })),
  });
  const changes: [string, boolean][] = [];
  const m = createRootsMirror({
    clock: createFakeClock(),
    random: () => 0.5,
    logger: createSilentLogger(),
    fetch: async () => bundle('r1', ['r1']),
    cachePath: join(d, 'roots.json'),
    refreshMs: 60_000,
    onChange: (b, rotated) => changes.push([b.activeRootId, rotated]),
  });
  t.teardown(() => m.stop());
  await m.start();
  await waitFor('the first fetch', () => m.current());
  m.offer(bundle('r1', ['r1']));
  m.offer(bundle('r1', ['r1', 'r2']));
  m.offer(bundle('r2', ['r1', 'r2']));
  t.same(changes, [
    ['r1', false],
    ['r1', false],
    ['r2', true],
  ]);
});
