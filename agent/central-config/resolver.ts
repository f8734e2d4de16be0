// A destination's `service-resolver` entry, as every caller applies it: `ConnectTimeout`,
// `RequestTimeout` and `LoadBalancer` (which win over what callers set, as Consul's resolver
// does), its `Subsets` and `DefaultSubset`, and where its calls go instead: `Redirect`, or
// `Failover` when their target has no endpoint. What Remora cannot apply is reported and left out.
import {
  LOAD_BALANCER_POLICIES,
  type HashPolicy,
  type LoadBalancerPolicy,
} from '../../lib/proxy-api/index.ts';
import type { ConfigEntry } from '../ports.ts';
import { isLayer, resolverDuration, type Layer } from './entry.ts';
import { cookieConfigOf, hashPoliciesOf } from './hash-policies.ts';
import { SUBSET_NAME, subsetFilter } from './subsets.ts';

/** What a destination's service-resolver sets for every caller; absent keys are not set. */
export interface ResolverSettings {
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  loadBalancer?: LoadBalancerPolicy;
  /** With ring_hash or maglev: what each call is hashed on (`LoadBalancer.HashPolicies`). */
  hashPolicies?: HashPolicy[];
  /**
   * Named subsets of the service's instances, by their `Filter` (Consul's filter language over a
   * health entry; empty: every instance). Every filter here compiles.
   */
  subsets?: Record<string, string>;
  /** The subset that calls naming no subset go to; always one of `subsets`. */
  defaultSubset?: string;
  /**
   * Where every call for the service goes instead (`Redirect`): another service (its default
   * subset unless `subset` is named), or a subset of this one. Other settings of the entry are
   * then not used: the target's own resolver decides.
   */
  redirect?: ResolverTarget;
  /**
   * Where calls go, the first that has an endpoint, when their target has none to take
   * (`Failover`): by the target's subset name, `*` for any other (a call naming no subset, or
   * the default subset, meets the default subset's name, then `*`).
   */
  failover?: Record<string, ResolverTarget[]>;
}

/** A service, or a subset of it, as a resolver's `Redirect` or `Failover` names it. */
export interface ResolverTarget {
  service: string;
  subset?: string;
}

/**
 * The filter of `r`'s subset `name`, or undefined when it defines none by that name (own keys
 * only: a subset named `constructor` is not Object's).
 */
export function subsetExpr(
  r: ResolverSettings | null | undefined,
  name: string | undefined,
): string | undefined {
  const subsets = r?.subsets;
  return subsets && name !== undefined && Object.hasOwn(subsets, name) ? subsets[name] : undefined;
}

/** Consul's policies that Remora's proxies implement, by Consul's name. */
const RESOLVER_POLICIES: Record<string, LoadBalancerPolicy> = {
  round_robin: 'round_robin',
  least_request: 'least_request',
  ring_hash: 'ring_hash',
  maglev: 'maglev',
};

/** Resolver fields Remora does not implement: reported, so nobody relies on them unknowingly. */
const UNSUPPORTED_RESOLVER_FIELDS = ['PrioritizeByLocality'] as const;

/**
 * Fields of a `Redirect` or failover target that reach past this datacenter, namespace or
 * partition, which Remora's agents do not follow (`default` is the one Remora has).
 */
const REMOTE_TARGET_FIELDS = ['Datacenter', 'Peer', 'Namespace', 'Partition', 'SamenessGroup'];

/** Failover targets kept per subset, at most (the snapshot's own bound). */
const MAX_FAILOVER_TARGETS = 16;

/** The longest timeouts a resolver may set (a route's `RequestTimeout` has the same bound). */
export const TIMEOUT_LIMITS_MS = {
  connectTimeoutMs: 600_000,
  requestTimeoutMs: 3_600_000,
} as const;

/**
 * A service-resolver entry's settings, with each part Remora cannot apply reported in `found`
 * (by a key per field) and left out. `remora explain` reads entries with it too. `datacenter` is
 * the reader's own: a redirect or failover target naming it stays in this datacenter.
 */
export function resolverSettings(
  e: ConfigEntry,
  found: Map<string, string>,
  datacenter?: string,
): ResolverSettings | null {
  const where = `service-resolver of ${e.Name}`;
  const out: ResolverSettings = {};
  const fields = [
    ['ConnectTimeout', 'connectTimeoutMs'],
    ['RequestTimeout', 'requestTimeoutMs'],
  ] as const;
  for (const [field, key] of fields) {
    const raw = e[field];
    const ms = resolverDuration(raw);
    const max = TIMEOUT_LIMITS_MS[key];
    if (ms === null || (ms !== undefined && ms > max))
      found.set(
        `r/${e.Name}/${field}`,
        `${where}: ${field} ${JSON.stringify(raw)} is not a duration from 1ms to ${max / 1000}s; callers keep their own`,
      );
    else if (ms !== undefined) out[key] = ms;
  }
  const lb = e.LoadBalancer;
  if (lb !== undefined && lb !== null) {
    const policy = isLayer(lb) ? lb.Policy : undefined;
    const mapped = typeof policy === 'string' ? RESOLVER_POLICIES[policy] : undefined;
    if (!isLayer(lb) || (policy !== undefined && policy !== '' && mapped === undefined))
      found.set(
        `r/${e.Name}/LoadBalancer`,
        `${where}: LoadBalancer.Policy ${JSON.stringify(policy ?? lb)} is not one Remora's proxies implement (${Object.keys(RESOLVER_POLICIES).join(', ')}); callers keep their own`,
      );
    else if (mapped) out.loadBalancer = mapped;
    const hashing = mapped === 'ring_hash' || mapped === 'maglev';
    if (isLayer(lb) && lb.HashPolicies !== undefined && lb.HashPolicies !== null) {
      if (!hashing)
        found.set(
          `r/${e.Name}/HashPolicies`,
          `${where}: LoadBalancer.HashPolicies apply to ring_hash or maglev only, not ${JSON.stringify(policy ?? '')}; they are ignored`,
        );
      else {
        const policies = hashPoliciesOf(lb.HashPolicies, where, found, `r/${e.Name}`);
        if (policies.length > 0) out.hashPolicies = policies;
      }
    }
    const choices =
      isLayer(lb) && isLayer(lb.LeastRequestConfig) ? lb.LeastRequestConfig.ChoiceCount : undefined;
    if (mapped === 'least_request' && choices !== undefined && choices !== 2)
      found.set(
        `r/${e.Name}/ChoiceCount`,
        `${where}: LeastRequestConfig.ChoiceCount ${JSON.stringify(choices)} is not supported; Remora's proxies compare 2 instances`,
      );
  }
  resolverSubsets(e, out, found);
  resolverRedirect(e, out, found, datacenter);
  resolverFailover(e, out, found, datacenter);
  for (const field of UNSUPPORTED_RESOLVER_FIELDS) {
    const v = e[field];
    if (v === undefined || v === null || v === '' || (isLayer(v) && Object.keys(v).length === 0))
      continue;
    found.set(
      `r/${e.Name}/${field}`,
      `${where}: ${field} is not implemented by Remora's agents; it is ignored, and calls go to every healthy instance of ${e.Name}`,
    );
  }
  return Object.keys(out).length > 0 ? out : null;
}

/**
 * A service-resolver's `Subsets` and `DefaultSubset` into `out`: each subset whose name is a DNS
 * label and whose `Filter` compiles (a bad one is reported and left out: calls for it go to every
 * healthy instance), and the default subset when it names one of them.
 */
function resolverSubsets(e: ConfigEntry, out: ResolverSettings, found: Map<string, string>): void {
  const where = `service-resolver of ${e.Name}`;
  const raw = e.Subsets;
  const subsets: Record<string, string> = {};
  if (raw !== undefined && raw !== null && !isLayer(raw))
    found.set(
      `r/${e.Name}/Subsets`,
      `${where}: Subsets must be a map of subset names to { Filter, OnlyPassing }; it is ignored`,
    );
  for (const [name, def] of Object.entries(isLayer(raw) ? raw : {})) {
    const at = `${where}: subset ${JSON.stringify(name)}`;
    const bad = (why: string) =>
      found.set(
        `r/${e.Name}/Subsets/${name}`,
        `${at} ${why}; the subset is ignored, and calls for it go to every healthy instance of ${e.Name}`,
      );
    if (!SUBSET_NAME.test(name)) {
      bad('is not a valid name (a DNS label: lower-case letters, digits and dashes)');
      continue;
    }
    const expr: unknown = isLayer(def) ? (def.Filter ?? '') : undefined;
    if (typeof expr !== 'string') {
      bad('must be an object whose Filter is a string');
      continue;
    }
    try {
      subsetFilter(expr);
    } catch (err) {
      bad(`has a bad Filter (${(err as Error).message})`);
      continue;
    }
    subsets[name] = expr;
  }
  if (Object.keys(subsets).length > 0) out.subsets = subsets;
  const d = e.DefaultSubset;
  if (d === undefined || d === null || d === '') return;
  if (typeof d === 'string' && Object.hasOwn(subsets, d)) out.defaultSubset = d;
  else
    found.set(
      `r/${e.Name}/DefaultSubset`,
      `${where}: DefaultSubset ${JSON.stringify(d)} is not one of its subsets (${Object.keys(subsets).join(', ') || 'none'}); calls go to every healthy instance of ${e.Name}`,
    );
}

/**
 * A `Redirect` or failover target of `e`'s resolver as Consul reads it (`Service` defaults to
 * the entry's own, `ServiceSubset` to none), or a reason it cannot apply: a field that reaches
 * past this datacenter (Remora does not follow those), or a subset of the entry's own service
 * that it does not define.
 */
function resolverTarget(
  e: ConfigEntry,
  v: Layer,
  subsets: Readonly<Record<string, string>> | undefined,
  datacenter: string | undefined,
): ResolverTarget | string {
  for (const field of REMOTE_TARGET_FIELDS) {
    const x = v[field];
    if (x === undefined || x === null || x === '') continue;
    if (field === 'Datacenter' ? x === datacenter : x === 'default') continue;
    return `its ${field} ${JSON.stringify(x)} is not followed by Remora's agents, which resolve services in their own datacenter, namespace and partition`;
  }
  const svc: unknown = v.Service ?? '';
  const sub: unknown = v.ServiceSubset ?? '';
  if (typeof svc !== 'string' || typeof sub !== 'string' || svc.includes('/'))
    return 'its Service and ServiceSubset must be names';
  const service = svc === '' ? e.Name : svc;
  if (sub === '') return { service };
  if (!SUBSET_NAME.test(sub))
    return `its ServiceSubset ${JSON.stringify(sub)} is not a subset name`;
  if (service === e.Name && !(subsets && Object.hasOwn(subsets, sub)))
    return `its ServiceSubset ${JSON.stringify(sub)} is not one of ${e.Name}'s subsets`;
  return { service, subset: sub };
}

/** A service-resolver's `Redirect` into `out`, or the reason it does not apply into `found`. */
function resolverRedirect(
  e: ConfigEntry,
  out: ResolverSettings,
  found: Map<string, string>,
  datacenter: string | undefined,
): void {
  const raw = e.Redirect;
  if (raw === undefined || raw === null) return;
  const where = `service-resolver of ${e.Name}: Redirect`;
  const ignored = `it is ignored, and calls go to ${e.Name}`;
  const t = isLayer(raw) ? resolverTarget(e, raw, out.subsets, datacenter) : 'it must be an object';
  if (typeof t === 'string') found.set(`r/${e.Name}/Redirect`, `${where}: ${t}; ${ignored}`);
  else if (isLayer(e.Failover) && Object.keys(e.Failover).length > 0)
    found.set(
      `r/${e.Name}/Redirect`,
      `${where}: Redirect and Failover cannot both be set (Consul refuses it); ${ignored}`,
    );
  else if (t.service !== e.Name || t.subset !== undefined) out.redirect = t;
}

/**
 * A service-resolver's `Failover` into `out`: by subset name (or `*`), the targets of its
 * `Service`/`ServiceSubset` or of its `Targets`, in order. What Remora cannot follow (another
 * datacenter, peer, namespace or partition) is reported and left out; a subset key the entry
 * does not define is reported and ignored.
 */
function resolverFailover(
  e: ConfigEntry,
  out: ResolverSettings,
  found: Map<string, string>,
  datacenter: string | undefined,
): void {
  const raw = e.Failover;
  if (raw === undefined || raw === null || out.redirect !== undefined) return;
  const where = `service-resolver of ${e.Name}: Failover`;
  if (!isLayer(raw)) {
    found.set(
      `r/${e.Name}/Failover`,
      `${where} must be a map of subset names to failovers; it is ignored`,
    );
    return;
  }
  const failover: Record<string, ResolverTarget[]> = {};
  for (const [key, def] of Object.entries(raw)) {
    const at = `${where}[${JSON.stringify(key)}]`;
    const report = (id: string, why: string) =>
      found.set(`r/${e.Name}/Failover/${key}${id}`, `${at}${why}`);
    if (key !== '*' && subsetExpr(out, key) === undefined) {
      report('', ` names no subset of ${e.Name}; it is ignored`);
      continue;
    }
    if (!isLayer(def)) {
      report('', ' must be an object; it is ignored');
      continue;
    }
    const list: Layer[] = [];
    if (Array.isArray(def.Targets) && def.Targets.length > 0) {
      for (const [i, x] of def.Targets.entries())
        if (isLayer(x)) list.push(x);
        else report(`/${i}`, `.Targets[${i}] must be an object; it is left out`);
    } else if (Array.isArray(def.Datacenters) && def.Datacenters.length > 0) {
      // the service (or subset) in each datacenter named: only this one's can be followed
      const remote = def.Datacenters.filter((dc: unknown) => dc !== datacenter);
      if (remote.length > 0)
        report(
          '',
          `: Datacenters ${JSON.stringify(remote)} are not followed by Remora's agents, which resolve services in their own datacenter; ${remote.length < def.Datacenters.length ? 'they are left out' : 'it is ignored'}`,
        );
      if (remote.length === def.Datacenters.length) continue;
      const { Datacenters: _dcs, ...local } = def;
      list.push(local);
    } else list.push(def);
    const targets: ResolverTarget[] = [];
    list.forEach((x, i) => {
      const t = resolverTarget(e, x, out.subsets, datacenter);
      const which = list.length > 1 || def.Targets !== undefined ? `.Targets[${i}]` : '';
      if (typeof t === 'string') report(`/${i}`, `${which}: ${t}; that target is left out`);
      else if (targets.length < MAX_FAILOVER_TARGETS) targets.push(t);
      else report(`/${i}`, `${which}: more than ${MAX_FAILOVER_TARGETS} targets; it is left out`);
    });
    if (targets.length > 0) failover[key] = targets;
  }
  if (Object.keys(failover).length > 0) out.failover = failover;
}

/** Keeps only well-formed settings (a cache file is trusted no more than Consul). */
export function checkedResolver(v: unknown): ResolverSettings | null {
  if (!isLayer(v)) return null;
  const out: ResolverSettings = {};
  for (const key of ['connectTimeoutMs', 'requestTimeoutMs'] as const) {
    const ms = v[key];
    if (Number.isInteger(ms) && (ms as number) >= 1 && (ms as number) <= TIMEOUT_LIMITS_MS[key])
      out[key] = ms as number;
  }
  if ((LOAD_BALANCER_POLICIES as readonly unknown[]).includes(v.loadBalancer))
    out.loadBalancer = v.loadBalancer as LoadBalancerPolicy;
  if (
    (out.loadBalancer === 'ring_hash' || out.loadBalancer === 'maglev') &&
    Array.isArray(v.hashPolicies)
  ) {
    const back = (v.hashPolicies as unknown[]).map((h) =>
      isLayer(h)
        ? {
            Field: h.field,
            FieldValue: h.fieldValue,
            SourceIP: h.sourceIp,
            Terminal: h.terminal,
            CookieConfig: isLayer(h.cookie) ? cookieConfigOf(h.cookie) : undefined,
          }
        : h,
    );
    const policies = hashPoliciesOf(back, '', new Map(), '');
    if (policies.length > 0) out.hashPolicies = policies;
  }
  const subsets: Record<string, string> = {};
  for (const [name, expr] of Object.entries(isLayer(v.subsets) ? v.subsets : {})) {
    try {
      if (SUBSET_NAME.test(name) && typeof expr === 'string') {
        subsetFilter(expr);
        subsets[name] = expr;
      }
    } catch {
      // a filter that no longer compiles is dropped, as Consul's answer would have been reported
    }
  }
  if (Object.keys(subsets).length > 0) out.subsets = subsets;
  if (typeof v.defaultSubset === 'string' && Object.hasOwn(subsets, v.defaultSubset))
    out.defaultSubset = v.defaultSubset;
  const redirect = cachedTarget(v.redirect);
  if (redirect) out.redirect = redirect;
  const failover: Record<string, ResolverTarget[]> = {};
  for (const [key, list] of Object.entries(isLayer(v.failover) ? v.failover : {})) {
    if (key !== '*' && !SUBSET_NAME.test(key)) continue;
    if (!Array.isArray(list) || list.length === 0 || list.length > MAX_FAILOVER_TARGETS) continue;
    const targets = list.map(cachedTarget);
    if (targets.every((x) => x !== null)) failover[key] = targets;
  }
  if (Object.keys(failover).length > 0) out.failover = failover;
  return Object.keys(out).length > 0 ? out : null;
}

/** A cached redirect or failover target, or null when it is not well-formed. */
function cachedTarget(v: unknown): ResolverTarget | null {
  if (!isLayer(v) || typeof v.service !== 'string' || v.service === '' || v.service.includes('/'))
    return null;
  if (v.subset === undefined) return { service: v.service };
  return typeof v.subset === 'string' && SUBSET_NAME.test(v.subset)
    ? { service: v.service, subset: v.subset }
    : null;
}
