import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConfigDir } from '../../agent/config-dir.ts';
import type { DecodeResult } from '../../agent/definitions.ts';
import { waitFor } from '../../lib/util/index.ts';

async function dir(t: { teardown(fn: () => unknown): void }) {
  const d = await mkdtemp(join(tmpdir(), 'remora-cfg-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

const svc = (name: string, port: number) => JSON.stringify({ service: { name, port } });

t.test('every json file is read in name order and other files are ignored', async (t) => {
  const d = await dir(t);
  await writeFile(join(d, 'b.json'), svc('b', 2));
  await writeFile(join(d, 'a.json'), svc('a', 1));
  await writeFile(join(d, 'notes.txt'), 'not a definition');
  const cd = createConfigDir({ dir: d, onLoad: () => undefined });
  const r = await cd.load();
  t.same(
    r.services.map((s) => s.id),
    ['a', 'b'],
  );
  t.same(r.problems, []);
});

t.test(
  'a file that turns bad keeps its previous services; a removed file drops them',
  async (t) => {
    const d = await dir(t);
    await writeFile(join(d, 'a.json'), svc('a', 1));
    await writeFile(join(d, 'b.json'), svc('b', 2));
    const cd = createConfigDir({ dir: d, onLoad: () => undefined });
    await cd.load();
    await writeFile(join(d, 'a.json'), '{"service": {"name": "a", "port": ');
    let r = await cd.load();
    t.same(r.services.map((s) => s.id).sort(), ['a', 'b'], 'a is kept from its last good version');
    t.equal(r.problems[0]!.code, 'REMORA_E_AGENT_DEFINITION_UNREADABLE');
    t.equal(r.problems[0]!.details.file, join(d, 'a.json'));
    await rm(join(d, 'a.json'));
    r = await cd.load();
    t.same(
      r.services.map((s) => s.id),
      ['b'],
    );
    t.same(r.problems, []);
  },
);

t.test('a new file is picked up by the directory watch', async (t) => {
  const d = await dir(t);
  const loads: DecodeResult[] = [];
  const cd = createConfigDir({ dir: d, debounceMs: 20, onLoad: (r) => loads.push(r) });
  t.teardown(() => cd.close());
  await cd.load();
  cd.watch();
  await writeFile(join(d, 'new.json'), svc('fresh', 3));
  await waitFor('the watch to load the new file', () =>
    loads.at(-1)?.services.some((s) => s.id === 'fresh'),
  );
  t.pass('loaded without an explicit reload');
});

t.test('an unreadable directory is reported and keeps what was loaded', async (t) => {
  const d = await dir(t);
  await writeFile(join(d, 'a.json'), svc('a', 1));
  const cd = createConfigDir({ dir: d, onLoad: () => undefined });
  await cd.load();
  await rm(d, { recursive: true, force: true });
  const r = await cd.load();
  t.same(
    r.services.map((s) => s.id),
    ['a'],
  );
  t.equal(r.problems[0]!.code, 'REMORA_E_AGENT_DEFINITION_UNREADABLE');
});
