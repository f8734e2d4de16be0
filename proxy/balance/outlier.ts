// Passive outlier ejection (Envoy's consecutive-5xx detector, simplified): an endpoint with N
// consecutive failures is ejected for base × 2^(ejections−1) (capped), never more than the max
// ejected share at once; when the ejection ends it returns on probation — one failure re-ejects
// it with a longer backoff, one success clears its record.
import type { EndpointState } from './endpoints.ts';

export interface OutlierPolicy {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionPercent: number;
}

/** Longest ejection, as a multiple of the base. */
export const MAX_EJECTION_MULTIPLIER = 16;

export function ejectionDurationMs(p: OutlierPolicy, ejections: number): number {
  return p.baseEjectionMs * Math.min(MAX_EJECTION_MULTIPLIER, 2 ** Math.max(0, ejections - 1));
}

export function isEjected(e: EndpointState, now: number): boolean {
  if (e.ejectedUntil === 0) return false;
  if (now < e.ejectedUntil) return true;
  // ejection over: back on probation
  e.ejectedUntil = 0;
  e.probing = true;
  return false;
}

/** Records a success; returns nothing. */
export function recordSuccess(e: EndpointState): void {
  e.successes++;
  e.consecutiveFailures = 0;
  if (e.probing) {
    e.probing = false;
  }
}

/**
 * Records a failure; returns true when the endpoint was ejected by it. `all` is the whole set
 * (to respect the max ejected share).
 */
export function recordFailure(
  e: EndpointState,
  all: readonly EndpointState[],
  p: OutlierPolicy,
  now: number,
): boolean {
  e.failures++;
  e.consecutiveFailures++;
  if (e.ejectedUntil > now) return false;
  if (!e.probing && e.consecutiveFailures < p.consecutiveFailures) return false;
  const ejected = all.filter((x) => x !== e && x.ejectedUntil > now).length;
  // as Envoy does, one endpoint may always be ejected (unless the share is 0): a lone endpoint
  // that keeps failing is then known as such, and its calls can fail over
  const maxEjected =
    p.maxEjectionPercent > 0
      ? Math.max(1, Math.floor((all.length * p.maxEjectionPercent) / 100))
      : 0;
  if (ejected + 1 > maxEjected) return false;
  e.ejections++;
  e.ejectedUntil = now + ejectionDurationMs(p, e.ejections);
  e.probing = false;
  e.consecutiveFailures = 0;
  return true;
}

/** Endpoints that may receive traffic now; when all are ejected, all of them (panic mode). */
export function eligibleEndpoints(
  all: readonly EndpointState[],
  now: number,
): readonly EndpointState[] {
  let out: EndpointState[] | null = null;
  for (let i = 0; i < all.length; i++) {
    const e = all[i]!;
    if (isEjected(e, now)) {
      out ??= all.slice(0, i);
    } else if (out !== null) out.push(e);
  }
  if (out === null) return all;
  return out.length > 0 ? out : all;
}
