// Fakes for the agent's unit tests only.
import type { Clock } from '../../lib/util/index.ts';
import {
  createCsr,
  createRootCa,
  generateKeyPair,
  issueLeaf,
  inspectCsr,
} from '../../lib/pki/index.ts';
import type { SignedCert, TrustBundle } from '../../agent/ports.ts';

export interface FakeClock extends Clock {
  advance(ms: number): void;
  pending(): number;
}

/** A clock whose timers fire only when the test advances time. */
export function createFakeClock(start = Date.UTC(2026, 10, 27)): FakeClock {
  let now = start;
  let seq = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = ++seq;
      timers.set(id, { at: now + Math.max(0, ms), fn });
      return id as unknown as NodeJS.Timeout;
    },
    clearTimeout(h) {
      timers.delete(h as unknown as number);
    },
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let next: [number, { at: number; fn: () => void }] | undefined;
        for (const e of timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
        if (!next) break;
        timers.delete(next[0]);
        now = next[1].at;
        next[1].fn();
      }
      now = end;
    },
    pending: () => timers.size,
  };
}

/** A CA that signs like control does (no token checks). */
export function createFakeCa(
  now: number,
  trustDomain = '11111111-2222-3333-4444-555555555555.remora',
) {
  const ca = createRootCa({ trustDomain, ttlMs: 365 * 86400_000, now: now - 3600_000 });
  const bundle: TrustBundle = {
    trustDomain,
    activeRootId: ca.id,
    roots: [{ id: ca.id, pem: ca.certPem, notAfter: ca.notAfter.toISOString() }],
  };
  return {
    ca,
    bundle,
    sign(csr: string, at: number, ttlMs = 72 * 3600_000): SignedCert {
      const spiffeId = inspectCsr(csr).uris[0]!;
      const leaf = issueLeaf({ ca, csrPem: csr, spiffeId, ttlMs, now: at });
      return {
        cert: leaf.certPem,
        chain: [ca.certPem],
        serial: leaf.serial,
        notBefore: leaf.notBefore.toISOString(),
        notAfter: leaf.notAfter.toISOString(),
        spiffeId,
      };
    },
  };
}

export { createCsr, generateKeyPair };

/** Lets pending promise callbacks run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}
