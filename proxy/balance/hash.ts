// Consistent hashing (Consul's `ring_hash` and `maglev` policies): each request is hashed on
// what its upstream's hash policies pick (a header, a cookie, a query parameter, the caller's
// address), and goes to the endpoint its hash lands on: the first one clockwise on a ring where
// each endpoint holds points in proportion to its weight (`ring_hash`), or the owner of its slot
// in Maglev's lookup table (`maglev`). Both are placed by instance ID and weight alone, so every
// proxy sends a value to the same instance, and it stays there while that one is eligible. When
// an instance leaves, only its values move on the ring, and mostly its values in the table.
import { randomBytes } from 'node:crypto';
import type { HashPolicy, LoadBalancerPolicy } from '../../lib/proxy-api/index.ts';
import type { EndpointState } from './endpoints.ts';

/**
 * Ring points per unit of weight. An endpoint's points depend on its own ID and weight alone, so
 * an endpoint leaving or joining moves only the values of its own points.
 */
export const POINTS_PER_WEIGHT = 64;
/** Weights above this count as this much on the ring (bounds its size). */
export const MAX_RING_WEIGHT = 256;

/**
 * Slots in Maglev's table (Envoy's default). A prime, so that every skip from 1 to size − 1
 * visits every slot; large next to the endpoint count, so that weights are followed closely
 * and an endpoint leaving takes few slots of the others along.
 */
export const MAGLEV_TABLE_SIZE = 65537;

/**
 * Slots a Maglev lookup walks forward from its own, looking for an eligible endpoint, before it
 * takes any eligible one. Owners of neighbouring slots are mixed, so even with 9 endpoints in
 * 10 ineligible a walk this long misses with a chance near 0.9^256 ≈ 2·10^-12.
 */
export const MAGLEV_MAX_WALK = 256;

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

/**
 * The endpoint for a request's `hash` among `eligible` (those of `all`, the cluster's whole
 * list, that are not ejected and not yet tried by the request); undefined when `all` is empty.
 */
export type HashBalancer = (
  all: readonly EndpointState[],
  eligible: readonly EndpointState[],
  hash: number,
) => EndpointState | undefined;

/** Where hashes land: endpoint indexes that a lookup reads from where its hash lands, forward. */
interface Placement {
  /**
   * Indexes into the endpoint list, read against the current one (same IDs and weights in the
   * same order): an endpoint replaced under its ID (a new address) is reached as it is now.
   */
  owners: Uint16Array | Uint32Array;
  /** The position in `owners` where `hash` lands. */
  at(hash: number): number;
  /** Positions a lookup tries before it takes any eligible endpoint. */
  walk: number;
}

function ringPlacement(all: readonly EndpointState[]): Placement {
  const entries: { point: number; index: number }[] = [];
  all.forEach((e, index) => {
    const n = POINTS_PER_WEIGHT * Math.min(Math.max(1, e.weight), MAX_RING_WEIGHT);
    // points follow the instance's ID, so every proxy builds the same ring
    for (let i = 0; i < n; i++) entries.push({ point: hash32(`${e.id}#${i}`), index });
  });
  entries.sort((a, b) => a.point - b.point);
  const points = Uint32Array.from(entries, (x) => x.point);
  return {
    owners: Uint32Array.from(entries, (x) => x.index),
    // the whole ring: its next eligible point clockwise, however far
    walk: points.length,
    at(hash) {
      let lo = 0;
      let hi = points.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (points[mid]! < hash) lo = mid + 1;
        else hi = mid;
      }
      return lo % points.length;
    },
  };
}

/** An endpoint while Maglev's table is filled. */
interface Filler {
  index: number;
  weight: number;
  /** Its preferred slot, until it takes it or finds it taken. */
  slot: number;
  /** The step to its next preferred slot, from 1 to size − 1. */
  skip: number;
  /** Turns taken so far. */
  turns: number;
  /** The round of its next turn (the first is 1). */
  round: number;
  /** Its place in the order of the IDs: who goes first within a round. */
  rank: number;
}

/** Whose turn comes first: the earlier round, then the earlier ID. */
function before(a: Filler, b: Filler): boolean {
  return a.round < b.round || (a.round === b.round && a.rank < b.rank);
}

/** Moves the heap's root down to its place after its turn pushed its round back. */
function siftDown(heap: Filler[]): void {
  const f = heap[0]!;
  let i = 0;
  for (;;) {
    let c = 2 * i + 1;
    if (c >= heap.length) break;
    if (c + 1 < heap.length && before(heap[c + 1]!, heap[c]!)) c++;
    if (!before(heap[c]!, f)) break;
    heap[i] = heap[c]!;
    i = c;
  }
  heap[i] = f;
}

/**
 * Maglev's lookup table (Eisenbud et al., NSDI 2016), as endpoint indexes into `all`. Each
 * endpoint prefers the slots in the order offset, offset + skip, offset + 2·skip, … (modulo
 * the prime size), both numbers hashed from its instance ID; the endpoints take turns, each
 * taking its next preferred slot still empty, until every slot is taken. Weights as in Envoy:
 * in rounds, the heaviest endpoints take a turn every round and one of weight w every
 * top/w rounds (each at least one, in the first round), so slots follow weights. Within a
 * round turns go in the order of the IDs, so the table depends on the instances and their
 * weights, not on the list's order. A heap on (round, ID order) hands out the turns, so lopsided
 * weights cost no more than even ones (rounds of every endpoint would be 65,537 rounds of 1,000
 * for one endpoint weighing 1,000,000 next to 999 weighing 1).
 */
export function maglevTable(
  all: readonly EndpointState[],
  size = MAGLEV_TABLE_SIZE,
): Uint16Array | Uint32Array {
  // the largest index marks an empty slot
  const table = all.length < 0xffff ? new Uint16Array(size) : new Uint32Array(size);
  const empty = all.length < 0xffff ? 0xffff : 0xffffffff;
  table.fill(empty);
  if (all.length === 0) return table;
  // in the order of the IDs, all in round 1: a heap already
  const heap: Filler[] = all
    .map((e, index) => ({ id: e.id, weight: Math.max(1, e.weight), index }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map(({ id, weight, index }, rank) => ({
      index,
      weight,
      slot: hash32(`${id}#offset`) % size,
      skip: (hash32(`${id}#skip`) % (size - 1)) + 1,
      turns: 0,
      round: 1,
      rank,
    }));
  const top = heap.reduce((m, f) => Math.max(m, f.weight), 0);
  for (let filled = 0; filled < size; filled++) {
    const f = heap[0]!;
    let slot = f.slot;
    while (table[slot] !== empty) {
      slot += f.skip;
      if (slot >= size) slot -= size;
    }
    table[slot] = f.index;
    f.slot = slot;
    f.turns++;
    // after k turns, the next comes in the first round r with r·w/top > k
    f.round = Math.floor((f.turns * top) / f.weight) + 1;
    siftDown(heap);
  }
  return table;
}

function maglevPlacement(all: readonly EndpointState[]): Placement {
  const owners = maglevTable(all);
  return {
    owners,
    at: (hash) => hash % owners.length,
    walk: Math.min(MAGLEV_MAX_WALK, owners.length),
  };
}

/**
 * `build` over a cluster's endpoints, run again only when their IDs or weights changed (the
 * cluster replaces its list then: its contents are compared only when it is another list).
 */
function rebuiltOnChange(
  build: (all: readonly EndpointState[]) => Placement,
): (all: readonly EndpointState[]) => Placement {
  let seen: readonly EndpointState[] | null = null;
  let key = '';
  let placement: Placement | undefined;
  return (all) => {
    if (all === seen && placement !== undefined) return placement;
    seen = all;
    const k = all.map((e) => `${e.id}:${e.weight}`).join(',');
    if (placement === undefined || k !== key) {
      key = k;
      placement = build(all);
    }
    return placement;
  };
}

/**
 * A balancer over `build`'s placement: the endpoint where the hash lands, else the first
 * eligible one forward from there within the placement's walk, else any eligible one.
 */
function hashBalancer(build: (all: readonly EndpointState[]) => Placement): HashBalancer {
  const placed = rebuiltOnChange(build);
  return (all, eligible, hash) => {
    if (all.length === 0) return undefined;
    const placement = placed(all);
    const { owners, walk } = placement;
    const at = placement.at(hash);
    // every endpoint eligible (the usual case): where the hash lands is the answer
    if (eligible.length === all.length) return all[owners[at]!];
    const ok = new Set(eligible);
    for (let i = 0; i < walk; i++) {
      const ep = all[owners[(at + i) % owners.length]!]!;
      if (ok.has(ep)) return ep;
    }
    return eligible[hash % eligible.length];
  };
}

/**
 * A ring over a cluster's endpoints (`ring_hash`), rebuilt when their list or weights change.
 * A lookup walks clockwise from `hash` to the first endpoint among `eligible`.
 */
export function createHashRing(): HashBalancer {
  return hashBalancer(ringPlacement);
}

/**
 * Maglev's table over a cluster's endpoints (`maglev`), rebuilt when their list or weights
 * change; a lookup reads the slot `hash % size`, and for an ineligible owner walks forward.
 */
export function createMaglev(): HashBalancer {
  return hashBalancer(maglevPlacement);
}

/** The balancer for requests with a hash under `policy`: Maglev's table for `maglev`, else the ring. */
export function createHashBalancer(policy: LoadBalancerPolicy): HashBalancer {
  return policy === 'maglev' ? createMaglev() : createHashRing();
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
