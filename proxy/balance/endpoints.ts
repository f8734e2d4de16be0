// Endpoint state shared by balancing and outlier detection. Pure data plus pure functions of
// `now`; the cluster owns the objects and keeps them across snapshots (matched by id).
import type { Endpoint } from '../../lib/proxy-api/index.ts';

export interface EndpointState {
  readonly id: string;
  address: string;
  port: number;
  weight: number;
  node: string;
  /** The SNI sent to it instead of the destination's (a terminating gateway's subset). */
  readonly sni: string | undefined;
  /** Requests (or connections, for TCP) in flight. */
  active: number;
  /** Peak-EWMA of latency in ms; starts at 0 (unknown endpoints look fast and get tried). */
  ewmaMs: number;
  ewmaAt: number;
  /** Smooth weighted round robin state. */
  rrCurrent: number;
  consecutiveFailures: number;
  /** Ejected until this time (ms); 0 when not ejected. */
  ejectedUntil: number;
  /** Times ejected so far (drives the backoff). */
  ejections: number;
  /** True after an ejection expires, until the first success: one failure re-ejects. */
  probing: boolean;
  successes: number;
  failures: number;
}

export function newEndpointState(e: Endpoint): EndpointState {
  return {
    id: e.id,
    address: e.address,
    port: e.port,
    weight: e.weight,
    node: e.node,
    sni: e.sni,
    active: 0,
    ewmaMs: 0,
    ewmaAt: 0,
    rrCurrent: 0,
    consecutiveFailures: 0,
    ejectedUntil: 0,
    ejections: 0,
    probing: false,
    successes: 0,
    failures: 0,
  };
}

/**
 * Reconciles endpoint states with a new list, keeping the state of endpoints that stay; an
 * endpoint whose address, port or SNI changed gets a new state (and its owner new connections).
 */
export function reconcileEndpoints(
  old: readonly EndpointState[],
  next: readonly Endpoint[],
): EndpointState[] {
  const byId = new Map(old.map((e) => [e.id, e]));
  return next.map((e) => {
    const s = byId.get(e.id);
    if (!s || s.address !== e.address || s.port !== e.port || s.sni !== e.sni)
      return newEndpointState(e);
    s.weight = e.weight;
    s.node = e.node;
    return s;
  });
}

/** Decay window of the peak-EWMA latency estimate. */
export const EWMA_DECAY_MS = 10_000;

/** Records a latency sample: peaks are taken immediately, then decay exponentially. */
export function observeLatency(e: EndpointState, ms: number, now: number): void {
  if (ms > e.ewmaMs) {
    e.ewmaMs = ms;
  } else {
    const dt = Math.max(0, now - e.ewmaAt);
    const w = Math.exp(-dt / EWMA_DECAY_MS);
    e.ewmaMs = e.ewmaMs * w + ms * (1 - w);
  }
  e.ewmaAt = now;
}
