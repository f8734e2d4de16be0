import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { createFakeConsul } from './fake-consul.ts';
import { loadOrCreateDoc, updateDoc } from '../../control/kv-state.ts';
import {
  createCaState,
  rotateCaState,
  rootsMessage,
  trustedRoots,
} from '../../control/ca-state.ts';
import { decodeCaState } from '../../control/ca-state.ts';
import { hasCode } from '../../lib/errors/index.ts';

const asNumber = (raw: unknown) => {
  if (typeof raw !== 'number') throw new Error('not a number');
  return raw;
};

t.test('concurrent creators agree on the first document written', async (t) => {
  const consul = createFakeConsul();
  let made = 0;
  const results = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      loadOrCreateDoc(consul.kv, 'remora/x', asNumber, () => {
        made += 1;
        return i;
      }),
    ),
  );
  const values = new Set(results.map((r) => r.value));
  t.equal(values.size, 1, 'one value everywhere');
  t.equal(results.filter((r) => r.created).length, 1, 'exactly one creator');
  t.ok(made >= 1);
});

t.test('updateDoc retries a lost check-and-set and gives up with KV_CONFLICT', async (t) => {
  const consul = createFakeConsul();
  await consul.kv.put('remora/n', '1', { cas: 0 });
  const realPut = consul.kv.put.bind(consul.kv);
  let sabotage = 2;
  consul.kv.put = async (key, value, o) => {
    if (sabotage-- > 0)
      await realPut(key, String(Number(JSON.parse((await consul.kv.get(key))!.value)) + 100), {});
    return realPut(key, value, o);
  };
  const next = await updateDoc(consul.kv, 'remora/n', asNumber, (n) => (n ?? 0) + 1);
  t.equal(next, 202, 'applied on top of the concurrent writes');
  consul.kv.put = async () => false;
  try {
    await updateDoc(consul.kv, 'remora/n', asNumber, (n) => (n ?? 0) + 1, 3);
    t.fail('should give up');
  } catch (err) {
    t.ok(hasCode(err, 'REMORA_E_CONTROL_KV_CONFLICT'));
  }
});

t.test('a corrupt document and an unreachable Consul are coded', async (t) => {
  const consul = createFakeConsul();
  await consul.kv.put('remora/ca', '{not json', { cas: 0 });
  await t.rejects(
    loadOrCreateDoc(consul.kv, 'remora/ca', decodeCaState, () => createCaState(0, 1)),
    {
      code: 'REMORA_E_CONTROL_STATE_CORRUPT',
    },
  );
  await consul.kv.put('remora/ca', '{"v":2}', {});
  await t.rejects(
    loadOrCreateDoc(consul.kv, 'remora/ca', decodeCaState, () => createCaState(0, 1)),
    {
      code: 'REMORA_E_CONTROL_STATE_CORRUPT',
    },
  );
  consul.down = true;
  await t.rejects(
    updateDoc(consul.kv, 'remora/ca', asNumber, () => 1),
    {
      code: 'REMORA_E_CONTROL_CONSUL_UNAVAILABLE',
    },
  );
});

t.test(
  'rotation: the retired root is trusted until now + leaf TTL + margin, never past its own expiry',
  async (t) => {
    const now = Date.parse('2030-01-01T00:00:00Z');
    const day = 86400_000;
    const ca = createCaState(now, 3650 * day);
    const r1 = rotateCaState(ca, {
      now: now + day,
      rootTtlMs: 3650 * day,
      leafTtlMs: 3 * day,
      marginMs: 60_000,
    });
    t.equal(r1.trustDomain, ca.trustDomain);
    t.equal(r1.roots.length, 2);
    const retired = r1.roots.find((r) => r.id === ca.activeRootId)!;
    t.equal(retired.trustUntil, new Date(now + 4 * day + 60_000).toISOString());
    t.same(rootsMessage(r1, now + 4 * day).roots.length, 2, 'both trusted during the overlap');
    t.same(
      rootsMessage(r1, now + 4 * day + 60_001).roots.map((r) => r.id),
      [r1.activeRootId],
      'then only the new one',
    );
    const r2 = rotateCaState(r1, {
      now: now + 5 * day,
      rootTtlMs: 3650 * day,
      leafTtlMs: 3 * day,
      marginMs: 0,
    });
    t.equal(r2.roots.length, 2, 'expired retired roots are pruned at the next rotation');
    const shortLived = createCaState(now, 2 * day);
    const r3 = rotateCaState(shortLived, {
      now,
      rootTtlMs: 3650 * day,
      leafTtlMs: 30 * day,
      marginMs: 0,
    });
    t.equal(
      r3.roots.find((r) => r.id === shortLived.activeRootId)!.trustUntil,
      new X509Certificate(shortLived.roots[0]!.certPem).validToDate.toISOString(),
      'capped at the retired root notAfter',
    );
    t.equal(trustedRoots(r3, now + 3 * day).length, 1);
  },
);
