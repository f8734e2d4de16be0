// What Maglev's lookup table costs and keeps (docs/proxy.md, "Balancing"): the time to build
// the 65,537-slot table of 3, 100 and 1,000 endpoints, equal weights, weights 1 to 10 and one
// endpoint weighing 1,000,000; one lookup with every endpoint eligible; and the share of the
// other endpoints' slots that move when one endpoint leaves (the worst of the first 3 leaving).
// Bounded loops; run by hand:
//   node bench/dataplane/maglev-build.ts
import { performance } from 'node:perf_hooks';
import { newEndpointState, type EndpointState } from '../../proxy/balance/endpoints.ts';
import { createMaglev, hash32, maglevTable } from '../../proxy/balance/hash.ts';

const BUILDS = 20;
const LOOKUPS = 1_000_000;

const endpoints = (n: number, weight: (i: number) => number): EndpointState[] =>
  Array.from({ length: n }, (_, i) =>
    newEndpointState({
      id: `api-${i + 1}`,
      address: '10.0.0.1',
      port: 21000 + i,
      weight: weight(i),
      node: 'n',
    }),
  );

/** Median of `BUILDS` builds, in ms (after one to warm up). */
function buildMs(all: EndpointState[]): number {
  maglevTable(all);
  const times = Array.from({ length: BUILDS }, () => {
    const t0 = performance.now();
    maglevTable(all);
    return performance.now() - t0;
  });
  times.sort((a, b) => a - b);
  return Math.round(times[BUILDS >> 1]! * 100) / 100;
}

function lookupNs(all: EndpointState[]): number {
  const maglev = createMaglev();
  const hashes = Uint32Array.from({ length: 4096 }, (_, i) => hash32(`user-${i}`));
  maglev(all, all, 0);
  const t0 = performance.now();
  for (let i = 0; i < LOOKUPS; i++) maglev(all, all, hashes[i & 4095]!);
  return Math.round(((performance.now() - t0) * 1e6) / LOOKUPS);
}

/** The largest share, in percent, of the other endpoints' slots moved by one of the first 3 leaving. */
function othersMovedPct(all: EndpointState[]): number {
  const ids = (eps: EndpointState[]) => Array.from(maglevTable(eps), (i) => eps[i]!.id);
  const before = ids(all);
  let worst = 0;
  for (const gone of all.slice(0, 3)) {
    const after = ids(all.filter((e) => e !== gone));
    const others = before.filter((id) => id !== gone.id).length;
    const moved = before.filter((id, s) => id !== gone.id && after[s] !== id).length;
    worst = Math.max(worst, (moved * 100) / others);
  }
  return Math.round(worst * 1000) / 1000;
}

for (const n of [3, 100, 1000]) {
  const equal = endpoints(n, () => 1);
  process.stdout.write(
    `${JSON.stringify({
      endpoints: n,
      buildMsEqualWeights: buildMs(equal),
      buildMsWeights1To10: buildMs(endpoints(n, (i) => (i % 10) + 1)),
      buildMsOneHeavy: buildMs(endpoints(n, (i) => (i === 0 ? 1_000_000 : 1))),
      lookupNs: lookupNs(equal),
      othersMovedPct: othersMovedPct(equal),
    })}\n`,
  );
}
