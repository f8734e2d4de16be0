// Consistent hashing (Consul's `ring_hash` and `maglev` policies): each request is hashed on
// what its upstream's hash policies pick (a header, a cookie, a query parameter, the caller's
// address), and goes to the first eligible endpoint clockwise from that hash on a ring where
// each endpoint holds points in proportion to its weight. The same value reaches the same
// instance while it is eligible; when one leaves, only its share of values moves.
import { randomBytes } from 'node:crypto';
import type { HashPolicy } from '../../lib/proxy-api/index.ts';
import type { EndpointState } from './endpoints.ts';

/**
 * Ring points per unit of weight. An endpoint's points depend on its own ID and weight alone, so
 * an endpoint leaving or joining moves only the values of its own points.
 */
export const POINTS_PER_WEIGHT = 64;
/** Weights above this count as this much on the ring (bounds its size). */
export const MAX_RING_WEIGHT = 256;

/** 32-bit FNV-1a of a string, then murmur3's finalizer so that near strings spread apart. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

interface Ring {
  points: Uint32Array;
  owners: EndpointState[];
}

function buildRing(eps: readonly EndpointState[]): Ring {
  const entries: { point: number; ep: EndpointState }[] = [];
  for (const e of eps) {
    const n = POINTS_PER_WEIGHT * Math.min(Math.max(1, e.weight), MAX_RING_WEIGHT);
    // points follow the instance's ID, so every proxy builds the same ring
    for (let i = 0; i < n; i++) entries.push({ point: hash32(`${e.id}#${i}`), ep: e });
  }
  entries.sort((a, b) => a.point - b.point);
  return {
    points: Uint32Array.from(entries, (x) => x.point),
    owners: entries.map((x) => x.ep),
  };
}

/**
 * A ring over a cluster's endpoints, rebuilt when their list or weights change. `pick` walks
 * clockwise from `hash` to the first endpoint among `eligible` (those not ejected, not tried).
 */
export function createHashRing(): (
  all: readonly EndpointState[],
  eligible: readonly EndpointState[],
  hash: number,
) => EndpointState | undefined {
  let seen: readonly EndpointState[] | null = null;
  let key = '';
  let ring: Ring | null = null;
  return (all, eligible, hash) => {
    // the list is replaced when endpoints change: compare its contents only then
    if (all !== seen) {
      seen = all;
      const k = all.map((e) => `${e.id}:${e.weight}`).join(',');
      if (ring === null || k !== key) {
        key = k;
        ring = buildRing(all);
      }
    }
    ring ??= buildRing(all);
    const { points, owners } = ring;
    if (points.length === 0) return undefined;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < hash) lo = mid + 1;
      else hi = mid;
    }
    // every endpoint eligible (the usual case): the first point clockwise is the answer
    if (eligible.length === all.length) return owners[lo % points.length];
    const ok = new Set(eligible);
    for (let i = 0; i < points.length; i++) {
      const ep = owners[(lo + i) % points.length]!;
      if (ok.has(ep)) return ep;
    }
    return undefined;
  };
}

/** Where a request's hash inputs are read (each read only if a policy asks for it). */
export interface HashInputs {
  header(name: string): string | undefined;
  cookie(name: string): string | undefined;
  query(name: string): string | undefined;
  sourceIp(): string | undefined;
  /**
   * For a cookie policy with `cookie` settings whose cookie the request lacks: makes one up and
   * returns its value (the caller sets it in the answer). Absent where no cookie can be set (TCP).
   */
  newCookie?(policy: HashPolicy): string;
}

/**
 * The request's hash under `policies`, as Envoy combines them (the running hash rotated left by
 * one, then xor the next); undefined when no policy found a value (the caller then picks at
 * random).
 */
export function requestHash(
  policies: readonly HashPolicy[],
  inputs: HashInputs,
): number | undefined {
  let hash: number | undefined;
  for (const p of policies) {
    const v = p.sourceIp
      ? inputs.sourceIp()
      : p.field === 'header'
        ? inputs.header(p.fieldValue!.toLowerCase())
        : p.field === 'cookie'
          ? (inputs.cookie(p.fieldValue!) ??
            (p.cookie !== undefined ? inputs.newCookie?.(p) : undefined))
          : inputs.query(p.fieldValue!);
    if (v === undefined) continue;
    const h = hash32(v);
    hash = hash === undefined ? h : (((hash << 1) | (hash >>> 31)) ^ h) >>> 0;
    if (p.terminal) break;
  }
  return hash;
}

/**
 * A made-up value for a cookie policy's cookie, and the `Set-Cookie` value that hands it to the
 * caller: `HttpOnly`, with `Max-Age` unless it is a session cookie, and the policy's `Path`.
 */
export function newHashCookie(policy: HashPolicy): { value: string; setCookie: string } {
  const value = randomBytes(8).toString('hex');
  const c = policy.cookie!;
  const attrs = [`${policy.fieldValue}=${value}`];
  if (c.ttlSeconds > 0) attrs.push(`Max-Age=${c.ttlSeconds}`);
  if (c.path !== undefined) attrs.push(`Path=${c.path}`);
  attrs.push('HttpOnly');
  return { value, setCookie: attrs.join('; ') };
}

/** A cookie's value in a `Cookie` header (`a=1; b=2`), or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** A query parameter's (first) value in a request target, decoded; undefined when absent. */
export function queryValue(target: string, name: string): string | undefined {
  const q = target.indexOf('?');
  if (q === -1) return undefined;
  const v = new URLSearchParams(target.slice(q + 1)).get(name);
  return v ?? undefined;
}
