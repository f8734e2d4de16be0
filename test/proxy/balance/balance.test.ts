import t from 'tap';
import {
  newEndpointState,
  observeLatency,
  reconcileEndpoints,
  type EndpointState,
} from '../../../proxy/balance/endpoints.ts';
import {
  createLeastRequestPicker,
  createPeakEwmaPicker,
  createRoundRobinPicker,
} from '../../../proxy/balance/pickers.ts';
import {
  eligibleEndpoints,
  ejectionDurationMs,
  recordFailure,
  recordSuccess,
} from '../../../proxy/balance/outlier.ts';

function eps(weights: number[]): EndpointState[] {
  return weights.map((weight, i) =>
    newEndpointState({ id: `e${i}`, address: '127.0.0.1', port: 1000 + i, weight, node: 'n' }),
  );
}

function seq(values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

t.test('weighted round robin spreads picks in proportion to weight, smoothly', async (t) => {
  const e = eps([5, 1, 1]);
  const pick = createRoundRobinPicker();
  const picks = Array.from({ length: 7 }, () => pick(e, 0)!.id);
  t.same(picks, ['e0', 'e0', 'e1', 'e0', 'e2', 'e0', 'e0']);
});

t.test(
  'least-request P2C prefers the endpoint with fewer requests in flight per weight',
  async (t) => {
    const e = eps([1, 1]);
    e[0]!.active = 5;
    const pick = createLeastRequestPicker(seq([0, 0]));
    t.equal(pick(e, 0)!.id, 'e1');
    e[1]!.active = 20;
    e[1]!.weight = 2;
    t.equal(pick(e, 0)!.id, 'e0');
  },
);

t.test('peak-EWMA P2C avoids a slow endpoint and forgets a peak over time', async (t) => {
  const e = eps([1, 1]);
  observeLatency(e[0]!, 100, 0);
  observeLatency(e[1]!, 5, 0);
  const pick = createPeakEwmaPicker(seq([0, 0]));
  t.equal(pick(e, 0)!.id, 'e1');
  observeLatency(e[0]!, 1, 60_000); // a minute later the peak has decayed
  t.ok(e[0]!.ewmaMs < 5);
  t.equal(pick(e, 60_000)!.id, 'e0');
});

t.test(
  'endpoint state survives a snapshot for endpoints that stay, and resets when the address changes',
  async (t) => {
    const e = eps([1, 1]);
    e[0]!.ejections = 2;
    const next = reconcileEndpoints(e, [
      { id: 'e0', address: '127.0.0.1', port: 1000, weight: 3, node: 'n' },
      { id: 'e1', address: '127.0.0.2', port: 1001, weight: 1, node: 'n' },
    ]);
    t.equal(next[0], e[0]);
    t.equal(next[0]!.weight, 3);
    t.not(next[1], e[1]);
    const viaSubset = reconcileEndpoints(next, [
      { id: 'e0', address: '127.0.0.1', port: 1000, weight: 3, node: 'n', sni: 'v2.api.x' },
    ]);
    t.not(viaSubset[0], next[0], 'another SNI: a new state (and new connections)');
    t.equal(viaSubset[0]!.sni, 'v2.api.x');
  },
);

const policy = { consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionPercent: 50 };

t.test(
  'consecutive failures eject with backoff; probation re-ejects on one failure and clears on success',
  async (t) => {
    const e = eps([1, 1, 1, 1]);
    const a = e[0]!;
    t.notOk(recordFailure(a, e, policy, 0));
    recordSuccess(a);
    t.notOk(recordFailure(a, e, policy, 0));
    t.notOk(recordFailure(a, e, policy, 0));
    t.ok(recordFailure(a, e, policy, 0), 'third failure in a row ejects');
    t.equal(a.ejectedUntil, 1000);
    t.same(
      eligibleEndpoints(e, 500).map((x) => x.id),
      ['e1', 'e2', 'e3'],
    );
    t.equal(eligibleEndpoints(e, 1000).length, 4, 'back after the ejection');
    t.ok(a.probing);
    t.ok(recordFailure(a, e, policy, 1000), 'one failure on probation ejects again');
    t.equal(a.ejectedUntil, 1000 + ejectionDurationMs(policy, 2));
    t.equal(ejectionDurationMs(policy, 2), 2000);
    t.equal(ejectionDurationMs(policy, 10), 16_000, 'capped');
    recordSuccess(a);
    t.equal(a.consecutiveFailures, 0);
  },
);

t.test(
  'no more than the max ejected share is ejected; all-ejected falls back to everyone',
  async (t) => {
    const e = eps([1, 1]);
    for (let i = 0; i < 3; i++) recordFailure(e[0]!, e, policy, 0);
    for (let i = 0; i < 3; i++) recordFailure(e[1]!, e, policy, 0);
    t.ok(e[0]!.ejectedUntil > 0);
    t.equal(e[1]!.ejectedUntil, 0, 'the second would exceed 50 %');
    // one endpoint may always be ejected, as in Envoy (a lone one too), unless the share is 0
    const one = eps([1]);
    const outcomes = [0, 1, 2].map(() => recordFailure(one[0]!, one, policy, 0));
    t.same(outcomes, [false, false, true], 'a lone endpoint is ejected at the threshold');
    t.same(eligibleEndpoints(one, 1), one, 'and still used: there is no other');
    const never = eps([1]);
    for (let i = 0; i < 5; i++)
      t.notOk(recordFailure(never[0]!, never, { ...policy, maxEjectionPercent: 0 }, 0));
    const all = eps([1, 1]);
    all[0]!.ejectedUntil = 10;
    all[1]!.ejectedUntil = 10;
    t.equal(eligibleEndpoints(all, 5).length, 2, 'panic mode');
  },
);
