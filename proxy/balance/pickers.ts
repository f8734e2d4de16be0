// Load balancers over the eligible endpoints: smooth weighted round robin, least-request
// power-of-two-choices, and peak-EWMA power-of-two-choices (latency × load / weight).
import type { LoadBalancerPolicy } from '../../lib/proxy-api/index.ts';
import type { EndpointState } from './endpoints.ts';

export type Picker = (eps: readonly EndpointState[], now: number) => EndpointState | undefined;

/** nginx's smooth weighted round robin: deterministic, spreads weights evenly. */
export function createRoundRobinPicker(): Picker {
  return (eps) => {
    if (eps.length <= 1) return eps[0];
    let total = 0;
    let best: EndpointState | undefined;
    for (const e of eps) {
      e.rrCurrent += e.weight;
      total += e.weight;
      if (best === undefined || e.rrCurrent > best.rrCurrent) best = e;
    }
    best!.rrCurrent -= total;
    return best;
  };
}

function twoDistinct(n: number, random: () => number): [number, number] {
  const a = Math.floor(random() * n);
  let b = Math.floor(random() * (n - 1));
  if (b >= a) b++;
  return [a, b];
}

/** P2C: two random endpoints, the one with fewer in-flight requests per unit of weight wins. */
export function createLeastRequestPicker(random: () => number): Picker {
  return (eps) => {
    if (eps.length <= 1) return eps[0];
    const [i, j] = twoDistinct(eps.length, random);
    const a = eps[i]!;
    const b = eps[j]!;
    return (a.active + 1) / a.weight <= (b.active + 1) / b.weight ? a : b;
  };
}

/** Extra cost of an endpoint with no latency sample yet, in ms (makes it likely but not certain to be tried). */
const UNKNOWN_LATENCY_MS = 1;

/** P2C on peak-EWMA cost: (latency estimate) × (in-flight + 1) / weight. */
export function createPeakEwmaPicker(random: () => number): Picker {
  return (eps) => {
    if (eps.length <= 1) return eps[0];
    const [i, j] = twoDistinct(eps.length, random);
    const a = eps[i]!;
    const b = eps[j]!;
    const ca = ((a.ewmaMs || UNKNOWN_LATENCY_MS) * (a.active + 1)) / a.weight;
    const cb = ((b.ewmaMs || UNKNOWN_LATENCY_MS) * (b.active + 1)) / b.weight;
    return ca <= cb ? a : b;
  };
}

/** Any eligible endpoint, at random (what consistent hashing does for a request without a hash). */
export function createRandomPicker(random: () => number): Picker {
  return (eps) => eps[Math.floor(random() * eps.length)];
}

export function createPicker(policy: LoadBalancerPolicy, random: () => number): Picker {
  switch (policy) {
    case 'ring_hash':
    case 'maglev':
      return createRandomPicker(random);
    case 'round_robin':
      return createRoundRobinPicker();
    case 'least_request':
      return createLeastRequestPicker(random);
    case 'peak_ewma':
      return createPeakEwmaPicker(random);
  }
}
