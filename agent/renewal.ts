// Certificate renewal and retry timing as pure functions of their inputs (DESIGN §3).
import { backoffDelay } from '../lib/util/index.ts';

export const RENEW_MIN_SHARE = 0.6;
export const RENEW_MAX_SHARE = 0.9;
export const SIGN_RETRY_BASE_MS = 500;
export const SIGN_RETRY_MAX_MS = 30_000;

/**
 * When to renew a certificate: a uniformly random point between 60 % and 90 % of its lifetime.
 * `random` is a number in [0, 1).
 */
export function renewalTime(notBefore: number, notAfter: number, random: number): number {
  const life = Math.max(0, notAfter - notBefore);
  const share = RENEW_MIN_SHARE + (RENEW_MAX_SHARE - RENEW_MIN_SHARE) * random;
  return notBefore + Math.floor(life * share);
}

/** Delay before the next signing attempt after `attempt` failures (0 = first retry). */
export function signRetryDelay(attempt: number, random: () => number): number {
  return backoffDelay(attempt, { baseMs: SIGN_RETRY_BASE_MS, maxMs: SIGN_RETRY_MAX_MS, random });
}
