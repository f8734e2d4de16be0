// A destination's discovery chain, as Consul's chain compiler builds it from the entries: target
// names (a service, or a subset of one), the splitters' shares flattened, each target resolved
// through its resolvers' redirects, the failover targets of a target without endpoints, and what
// of the chain cannot apply (subsets no resolver defines, redirect loops).
import type { HeaderModifiers } from '../../lib/proxy-api/index.ts';
import { own } from './entry.ts';
import { subsetExpr, type ResolverSettings, type ResolverTarget } from './resolver.ts';
import type { RouteEntry } from './router.ts';
import type { SplitShare } from './splitter.ts';

/**
 * The name of a route or split target: the service, or one subset of it (`api/v2`). Neither a
 * service name nor a subset name holds a `/` (names travel in Consul's URL paths; subsets are
 * DNS labels), so the name is read back unambiguously.
 */
export function targetName(service: string, subset?: string): string {
  return subset === undefined ? service : `${service}/${subset}`;
}

/** The service and subset of a `targetName`. */
export function parseTargetName(name: string): { service: string; subset?: string } {
  const i = name.lastIndexOf('/');
  return i < 0 ? { service: name } : { service: name.slice(0, i), subset: name.slice(i + 1) };
}

/** Redirects followed from one service at most (a longer chain is treated as a loop). */
const MAX_REDIRECTS = 16;

/**
 * One share of the calls after flattening: `weight` percent go to `target` (a service, or a
 * subset of one: `targetName`), with the header changes of the split that named it.
 */
export interface Share {
  target: string;
  weight: number;
  requestHeaders?: HeaderModifiers;
  responseHeaders?: HeaderModifiers;
}

/**
 * The shares of the calls to `destination` by service-splitter entries (`splitter` gives a
 * service's shares): a share for another service follows that service's splitter too, once per
 * path, and a share naming a subset goes to that subset directly, as Consul flattens them. Each
 * share keeps the header changes of the split that named its target (those of a split that
 * leads to another splitter are not carried through, as in Consul). Null when every call goes
 * to `destination` itself, unchanged.
 */
export function flattenSplits(
  destination: string,
  splitter: (service: string) => readonly SplitShare[] | null,
): Share[] | null {
  if (splitter(destination) === null) return null;
  const out: Share[] = [];
  const add = (target: string, weight: number, part?: SplitShare) =>
    out.push({
      target,
      weight,
      ...(part?.requestHeaders ? { requestHeaders: part.requestHeaders } : {}),
      ...(part?.responseHeaders ? { responseHeaders: part.responseHeaders } : {}),
    });
  const walk = (service: string, share: number, seen: ReadonlySet<string>, via?: SplitShare) => {
    const sp = seen.has(service) ? null : splitter(service);
    if (sp === null) return void add(service, share, via);
    const next = new Set(seen).add(service);
    for (const part of sp) {
      const w = (share * part.weight) / 100;
      if (w <= 0) continue;
      if (part.subset !== undefined) add(targetName(part.service, part.subset), w, part);
      else if (part.service === service) add(service, w, part);
      else walk(part.service, w, next, part);
    }
  };
  walk(destination, 100, new Set());
  const merged = mergeShares(out);
  return isWhole(merged, destination) ? null : merged;
}

/** True when `shares` send every call to `destination`, unchanged. */
export function isWhole(shares: readonly Share[], destination: string): boolean {
  const [only] = shares;
  return (
    shares.length === 1 &&
    only!.target === destination &&
    only!.requestHeaders === undefined &&
    only!.responseHeaders === undefined
  );
}

/** Shares of one target with the same header changes added up, in first-seen order. */
function mergeShares(shares: readonly Share[]): Share[] {
  const byKey = new Map<string, Share>();
  for (const sh of shares) {
    const key = JSON.stringify([sh.target, sh.requestHeaders, sh.responseHeaders]);
    const cur = byKey.get(key);
    if (cur) cur.weight += sh.weight;
    else byKey.set(key, { ...sh });
  }
  return [...byKey.values()];
}

/**
 * The target a call for `service` (and `subset`, when named) goes to, by the service's resolver:
 * the service itself for its default subset (or no subset), `service/<subset>` for another of
 * its subsets. A subset the resolver does not define (reported by the central config) is the
 * service itself.
 */
export function resolveTarget(
  service: string,
  subset: string | undefined,
  resolver: (service: string) => ResolverSettings | null,
): string {
  const to = followRedirects(service, subset, resolver);
  if (to.subset === undefined) return to.service;
  const r = resolver(to.service);
  if (subsetExpr(r, to.subset) === undefined || r?.defaultSubset === to.subset) return to.service;
  return targetName(to.service, to.subset);
}

/**
 * Where a call for `service` (and `subset`) ends after its resolvers' redirects, as Consul's
 * chain compiler follows them: a redirect to another service drops the subset unless it names
 * one, a redirect to the same target changes nothing. `loop` lists the targets of a chain that
 * comes back to one of them (or runs past MAX_REDIRECTS); the call then stays where it was.
 */
export function followRedirects(
  service: string,
  subset: string | undefined,
  resolver: (service: string) => ResolverSettings | null,
): ResolverTarget & { loop: string[] | null } {
  const start: ResolverTarget = subset === undefined ? { service } : { service, subset };
  let at = start;
  const path = [targetName(service, subset)];
  for (;;) {
    const red = resolver(at.service)?.redirect;
    if (!red) return { ...at, loop: null };
    const sub = red.service !== at.service ? red.subset : (red.subset ?? at.subset);
    const next: ResolverTarget =
      sub === undefined ? { service: red.service } : { service: red.service, subset: sub };
    const name = targetName(next.service, next.subset);
    if (name === path[path.length - 1]) return { ...at, loop: null };
    if (path.includes(name) || path.length > MAX_REDIRECTS)
      return { ...start, loop: [...path, name] };
    path.push(name);
    at = next;
  }
}

/**
 * The targets a call for `target` (a `targetName`, already resolved) goes to, the first that has
 * an endpoint, when it has none: its service's resolver's `Failover` for its subset (the
 * default subset for the service itself), else for `*`, each target resolved, without `target`
 * and repeats. Failover targets do not fail over further, as in Consul.
 */
export function failoverTargets(
  target: string,
  resolver: (service: string) => ResolverSettings | null,
): string[] {
  const { service, subset } = parseTargetName(target);
  const r = resolver(service);
  if (!r?.failover) return [];
  const key = subset ?? r.defaultSubset;
  const list = (key !== undefined ? own(r.failover, key) : null) ?? own(r.failover, '*') ?? [];
  const out: string[] = [];
  for (const t of list) {
    const n = resolveTarget(t.service, t.subset, resolver);
    if (n !== target && !out.includes(n)) out.push(n);
  }
  return out;
}

/** `shares` with each target resolved (`resolveTarget`), equal shares of one target added up. */
export function resolveShares(
  shares: readonly Share[],
  resolver: (service: string) => ResolverSettings | null,
): Share[] {
  return mergeShares(
    shares.map((sh) => {
      const { service, subset } = parseTargetName(sh.target);
      return { ...sh, target: resolveTarget(service, subset, resolver) };
    }),
  );
}

/** Why `where`'s `subset` of `service` cannot apply (its resolver lacks it), or null. */
function subsetProblem(
  where: string,
  service: string,
  subset: string | undefined,
  resolver: (service: string) => ResolverSettings | null,
): string | null {
  if (subset === undefined || subsetExpr(resolver(service), subset) !== undefined) return null;
  return `${where} names subset ${JSON.stringify(subset)} of ${service}, which ${service}'s service-resolver does not define; those calls go to every healthy instance of ${service} until it does`;
}

/**
 * The subsets that `name`'s splitter shares and router routes name but their service's resolver
 * does not define, by report key: Consul refuses such entries when it can, and an agent sends
 * those calls to every healthy instance. `remora explain` prints them too.
 */
export function danglingSubsets(
  name: string,
  splits: readonly SplitShare[] | null,
  routes: readonly RouteEntry[] | null,
  resolver: (service: string) => ResolverSettings | null,
): Map<string, string> {
  const found = new Map<string, string>();
  const check = (key: string, where: string, service: string, subset: string | undefined) => {
    const problem = subsetProblem(where, service, subset, resolver);
    if (problem !== null) found.set(key, problem);
  };
  (splits ?? []).forEach((sh, i) =>
    check(`x/p/${name}/${i}`, `service-splitter of ${name}: Splits[${i}]`, sh.service, sh.subset),
  );
  (routes ?? []).forEach((r, i) =>
    check(`x/o/${name}/${i}`, `service-router of ${name}: Routes[${i}]`, r.service, r.subset),
  );
  return found;
}

/**
 * The redirect chain from `name`'s resolver that loops, reported by key, or an empty map;
 * `remora explain` prints it too.
 */
export function redirectLoop(
  name: string,
  resolver: (service: string) => ResolverSettings | null,
): Map<string, string> {
  const loop = followRedirects(name, undefined, resolver).loop;
  const found = new Map<string, string>();
  if (loop !== null)
    found.set(
      `x/r/${name}`,
      `service-resolver of ${name}: its Redirect leads to a loop (${loop.join(' → ')}); calls for ${name} go to ${name} itself until one of these redirects changes`,
    );
  return found;
}
