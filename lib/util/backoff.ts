export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  /** A number in [0, 1) — pass Math.random in production, a constant in tests. */
  random: () => number;
}

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(max, base·2^attempt)], never
 * below base/2 so retries do not spin. `attempt` starts at 0.
 */
export function backoffDelay(attempt: number, o: BackoffOptions): number {
  const cap = Math.min(o.maxMs, o.baseMs * 2 ** Math.min(attempt, 30));
  return Math.max(o.baseMs / 2, Math.floor(o.random() * cap));
}
