// The CA document kept in Consul KV (`<prefix>ca`): the trust domain and every root still
// trusted, with their keys. Rotation adds a root and keeps the old one trusted until the last
// leaf it can have signed has expired. All rules are pure functions of `now`.
import { createTrustDomain } from '../lib/identity/index.ts';
import { createRootCa } from '../lib/pki/index.ts';
import type { RootsV1 } from '../lib/nats/index.ts';

export interface StoredRoot {
  id: string;
  certPem: string;
  /** PKCS#8 PEM. Lives in Consul KV: protect `remora/` with ACLs in production. */
  keyPem: string;
  notBefore: string;
  notAfter: string;
  /** Set when rotated out: this root signs nothing after this instant. */
  retiredAt?: string;
  /** Set when rotated out: trusted until this instant (last possible leaf expiry). */
  trustUntil?: string;
}

export interface CaState {
  v: 1;
  trustDomain: string;
  activeRootId: string;
  roots: StoredRoot[];
}

const MAX_ROOTS = 8;

function str(o: Record<string, unknown>, k: string): string {
  const v = o[k];
  if (typeof v !== 'string' || v === '') throw new Error(`field ${k} is missing or not a string`);
  return v;
}

/** Decodes the KV document; throws a plain Error that kv-state turns into STATE_CORRUPT. */
export function decodeCaState(raw: unknown): CaState {
  if (typeof raw !== 'object' || raw === null) throw new Error('not an object');
  const o = raw as Record<string, unknown>;
  if (o.v !== 1) throw new Error(`unsupported version ${JSON.stringify(o.v)}`);
  if (!Array.isArray(o.roots) || o.roots.length === 0) throw new Error('roots missing');
  const roots = o.roots.map((r) => {
    const ro = r as Record<string, unknown>;
    const root: StoredRoot = {
      id: str(ro, 'id'),
      certPem: str(ro, 'certPem'),
      keyPem: str(ro, 'keyPem'),
      notBefore: str(ro, 'notBefore'),
      notAfter: str(ro, 'notAfter'),
    };
    if (ro.retiredAt !== undefined) root.retiredAt = str(ro, 'retiredAt');
    if (ro.trustUntil !== undefined) root.trustUntil = str(ro, 'trustUntil');
    return root;
  });
  const state: CaState = {
    v: 1,
    trustDomain: str(o, 'trustDomain'),
    activeRootId: str(o, 'activeRootId'),
    roots,
  };
  if (!roots.some((r) => r.id === state.activeRootId)) throw new Error('active root missing');
  return state;
}

function storedRoot(trustDomain: string, now: number, rootTtlMs: number): StoredRoot {
  const root = createRootCa({ trustDomain, ttlMs: rootTtlMs, now });
  return {
    id: root.id,
    certPem: root.certPem,
    keyPem: root.keyPem,
    notBefore: root.notBefore.toISOString(),
    notAfter: root.notAfter.toISOString(),
  };
}

/** A brand-new CA with a fresh trust domain `<uuid>.remora`. */
export function createCaState(
  now: number,
  rootTtlMs: number,
  trustDomain = createTrustDomain(),
): CaState {
  const root = storedRoot(trustDomain, now, rootTtlMs);
  return { v: 1, trustDomain, activeRootId: root.id, roots: [root] };
}

export function activeRoot(state: CaState): StoredRoot {
  return state.roots.find((r) => r.id === state.activeRootId)!;
}

/** Roots still trusted at `now`: the active one and retired ones whose overlap has not ended. */
export function trustedRoots(state: CaState, now: number): StoredRoot[] {
  return state.roots.filter(
    (r) =>
      r.id === state.activeRootId ||
      ((r.trustUntil === undefined || Date.parse(r.trustUntil) > now) &&
        Date.parse(r.notAfter) > now),
  );
}

/**
 * Adds a new active root. The previous active root is retired now and stays trusted until
 * `now + leafTtlMs + marginMs` (no leaf it signed can outlive that; the margin covers replicas
 * that have not yet reloaded the CA), capped at its own expiry. Roots whose overlap ended are
 * dropped.
 */
export function rotateCaState(
  state: CaState,
  options: { now: number; rootTtlMs: number; leafTtlMs: number; marginMs: number },
): CaState {
  const { now } = options;
  const fresh = storedRoot(state.trustDomain, now, options.rootTtlMs);
  const kept = trustedRoots(state, now).map((r) => {
    if (r.id !== state.activeRootId) return r;
    const trustUntil = Math.min(now + options.leafTtlMs + options.marginMs, Date.parse(r.notAfter));
    return {
      ...r,
      retiredAt: new Date(now).toISOString(),
      trustUntil: new Date(trustUntil).toISOString(),
    };
  });
  const roots = [fresh, ...kept].slice(0, MAX_ROOTS);
  return { v: 1, trustDomain: state.trustDomain, activeRootId: fresh.id, roots };
}

/** The public view (`ca.roots` reply, `ca.roots.changed` body): no keys. */
export function rootsMessage(state: CaState, now: number): RootsV1 {
  return {
    v: 1,
    trustDomain: state.trustDomain,
    activeRootId: state.activeRootId,
    roots: trustedRoots(state, now).map((r) => ({
      id: r.id,
      pem: r.certPem,
      notAfter: r.notAfter,
    })),
  };
}
