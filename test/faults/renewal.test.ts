// Every certificate renewed by expiry under load: control issues one-minute leaves
// (leafTtlSeconds 60), so each agent renews each instance's certificate at 60–90 % of its
// lifetime while GET+POST load runs through the proxies; nothing may fail or be duplicated.
import t from 'tap';
import { waitFor } from '../../lib/util/index.ts';
import { LONG, startLoad } from './load.ts';
import { checkScenario, startFaultMesh } from './setup.ts';

t.setTimeout(LONG ? 900_000 : 300_000);
const fm = await startFaultMesh(t, [], {}, { REMORA_CONTROL_LEAF_TTL_SECONDS: '60' });
const { mesh } = fm;

async function notAfters(): Promise<Record<string, string | null>> {
  const s = await mesh.status();
  return Object.fromEntries(s.instances.map((i) => [i.id, i.certificate?.notAfter ?? null]));
}

t.test('one-minute certificates are renewed by expiry under load', async (t) => {
  const first = await notAfters();
  t.equal(Object.keys(first).length, 3, 'three instances hold certificates');
  const left = (await mesh.status()).instances.map(
    (i) => Date.parse(i.certificate!.notAfter!) - Date.now(),
  );
  t.ok(
    left.every((ms) => ms > 0 && ms <= 60_000),
    'control issued one-minute leaves',
  );
  const load = startLoad({ url: fm.url, scenario: 'renewed-by-expiry', maxMs: 200_000 });
  await load.okMore(20, 'requests before the renewals');
  // each leaf lives 60 s after issue and is renewed 12–48 s after it, here under load
  const seen: Record<string, Set<string>> = {};
  await waitFor(
    'every instance to be renewed',
    async () => {
      const now = await notAfters();
      for (const [id, na] of Object.entries(now))
        if (na) (seen[id] ??= new Set([first[id]!])).add(na);
      return Object.keys(first).every((id) => (seen[id]?.size ?? 0) >= 2) || null;
    },
    120_000,
    500,
  );
  await load.okMore(20, 'requests after the renewals');
  await checkScenario(t, 'renewed-by-expiry', await load.stop(), fm);
  t.match(fm.agent.output(), /"reason":"renewal due"/, 'the agent renewed because the time came');
  for (const id of Object.keys(first))
    t.ok(seen[id]!.size >= 2, `${id}: ${seen[id]!.size - 1} renewal(s) under load`);
});
