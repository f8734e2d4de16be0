import type { LoadBalancerPolicy, Protocol, ResilienceConfig } from './types.ts';

/** Resilience settings an agent puts in a snapshot when the service definition sets none. */
export const DEFAULT_RESILIENCE: ResilienceConfig = Object.freeze({
  connectTimeoutMs: 5_000,
  requestTimeoutMs: 15_000,
  idleTimeoutMs: 60_000,
  maxRetries: 2,
  retryBudgetRatio: 0.2,
  retryBudgetMinPerSec: 10,
  maxBufferedBodyBytes: 64 * 1024,
  outlier: Object.freeze({
    consecutiveFailures: 5,
    baseEjectionMs: 30_000,
    maxEjectionPercent: 50,
  }),
  circuitBreaker: Object.freeze({
    maxConnections: 1024,
    maxPendingRequests: 1024,
    maxRequests: 1024,
  }),
});

/** Consul's default protocol for a service without `protocol` config. */
export const DEFAULT_PROTOCOL: Protocol = 'tcp';

/** Connect timeout to the local app when nothing sets `local_connect_timeout_ms` (Consul's default). */
export const DEFAULT_LOCAL_CONNECT_TIMEOUT_MS = 5000;

/** Upper bounds of the inbound settings (an hour; a million connections). */
export const INBOUND_LIMITS = {
  localConnectTimeoutMs: 3_600_000,
  localRequestTimeoutMs: 3_600_000,
  maxInboundConnections: 1_000_000,
} as const;

/** The balancer used when the definition names none: peak-EWMA for HTTP-family, round robin for TCP. */
export function defaultLoadBalancer(protocol: Protocol): LoadBalancerPolicy {
  return protocol === 'tcp' ? 'round_robin' : 'peak_ewma';
}

/**
 * Node options of every proxy process (docs/proxy.md, "Performance notes"):
 * - under load V8 grows the young generation to 2 × 16 MB; capped at 2 MB per semi-space, a
 *   proxy's peak RSS stays in the 80s MB, for 0–5 % more CPU per request and no worse tail
 *   latency in A/B runs (third to fifth rounds);
 * - after each full collection V8 lets the old generation grow up to four times what survived
 *   before the next one; an HTTP/2 proxy under load promotes node:http2's short-lived stream
 *   objects, and its heap reached 45 MB for 10 MB of live objects. Growing by half keeps its
 *   peak near 92 MB instead of 116–120 MB, with the same CPU per request (eleventh round).
 * V8 reads these only at start, so whatever launches a proxy (the agent, the bench) puts them
 * on the node command line.
 */
export const PROXY_NODE_OPTIONS: readonly string[] = [
  '--max-semi-space-size=2',
  '--heap-growing-percent=50',
];
