// Routes and traffic splits (docs/agent.md, "Routes and traffic splits"; "Redirect and
// failover"): where an upstream's calls go by Consul's service-resolver, service-router and
// service-splitter entries, the endpoints each target reaches, and the snapshot fields that say so.
import { formatSpiffeId, meshSni } from '../lib/identity/index.ts';
import { RemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Endpoint, UpstreamConfig } from '../lib/proxy-api/index.ts';
import {
  failoverTargets,
  flattenSplits,
  isWhole,
  parseTargetName,
  resolveShares,
  resolveTarget,
  subsetExpr,
  subsetFilter,
  targetName,
  type CentralConfig,
  type RouteEntry,
  type Share,
} from './central-config.ts';
import type { UpstreamDefinition } from './definitions.ts';
import type { Discovery } from './discovery.ts';
import { follow, type Instance } from './instance.ts';
import { hashPoliciesField, type Protocols } from './protocols.ts';

/**
 * Where an upstream's calls go by Consul's service-router and service-splitter: each route
 * with its shares (percent by target, with a split's header changes), and the shares of the calls no route matches (null: all
 * to the upstream's destination).
 */
interface Traffic {
  routes: Array<Omit<RouteEntry, 'service' | 'subset'> & { shares: Share[] }>;
  shares: Share[] | null;
}

/**
 * What an upstream's calls reach by Consul's discovery-chain entries. Target names are
 * `targetName`s; the upstream's own name stands for `main`.
 */
export interface Plan {
  /** The target the upstream's own cluster serves: its service, or where its resolver redirects. */
  main: string;
  traffic: Traffic | null;
  /** The upstream's failover targets, in order. */
  failover: string[];
  /** Every other target its routes, shares and failovers name, with the target's own failover. */
  targets: Map<string, string[]>;
}

/** Discovery user of an instance's route and split targets (kept apart from its upstreams). */
function targetUser(id: string): string {
  return `${id}/targets`;
}

export interface TrafficPlanContext {
  datacenter: string;
  logger: Logger;
  central: Pick<CentralConfig, 'resolver' | 'router' | 'splitter'>;
  discovery: Pick<Discovery, 'acquire' | 'release' | 'endpoints' | 'select' | 'behindGateway'>;
  protocols: Pick<Protocols, 'resolverOf' | 'withResolver'>;
}

export interface TrafficPlan {
  /**
   * Where `u`'s calls go: the target its own cluster serves (after its resolver's redirects),
   * its routes and shares, and the failover targets of each.
   */
  planOf(inst: Instance, u: UpstreamDefinition): Plan;
  /** The endpoints calls for `service` (its `subset`, or its resolver's default one) reach. */
  endpointsOf(service: string, subset?: string, trustDomain?: string): Endpoint[];
  /** Follows the services the instance's redirects, routes, splits and failovers call. */
  followTargets(inst: Instance, plans: Map<string, Plan>): void;
  /** The snapshot fields of `u`'s routes, split and failover, and each other target's settings. */
  trafficFields(
    u: UpstreamDefinition,
    plan: Plan,
    trustDomain: string,
  ): Partial<Pick<UpstreamConfig, 'routes' | 'splits' | 'targets' | 'failover'>>;
  /** Stops following the instance's targets (it is stopping). */
  release(inst: Instance): void;
}

export function createTrafficPlan(o: TrafficPlanContext): TrafficPlan {
  const { datacenter, logger, central, discovery, protocols } = o;
  const { resolverOf } = protocols;

  /** Instance/destination pairs whose router or splitter was reported as not applying. */
  const trafficIgnored = new Set<string>();

  /**
   * Where `u`'s calls go: the target its own cluster serves (after its resolver's redirects),
   * its routes and shares, and the failover targets of each (docs/agent.md, "Redirect and
   * failover").
   */
  function planOf(inst: Instance, u: UpstreamDefinition): Plan {
    const dest = u.destinationName;
    const main = resolveTarget(dest, undefined, resolverOf);
    const alias = (n: string) => (n === main ? dest : n);
    const traffic = trafficOf(inst, u, alias);
    const failoverOf = (n: string) =>
      failoverTargets(n === dest ? main : n, resolverOf)
        .map(alias)
        .filter((x) => x !== n);
    const targets = new Map<string, string[]>();
    for (const sh of traffic?.shares ?? []) targets.set(sh.target, []);
    for (const r of traffic?.routes ?? []) for (const sh of r.shares) targets.set(sh.target, []);
    targets.delete(dest);
    for (const n of targets.keys()) targets.set(n, failoverOf(n));
    const failover = failoverOf(dest);
    // failover targets that are no share's: reached only by failing over, they do not fail over
    for (const n of [...failover, ...[...targets.values()].flat()])
      if (n !== dest && !targets.has(n)) targets.set(n, []);
    return { main, traffic, failover, targets };
  }

  /**
   * Where calls to `u` go by Consul's service-router and service-splitter entries: each route
   * with the shares of its service (that service's splitter, flattened), and the shares of the
   * calls no route matches, each target named by `alias` (the upstream's own target by its
   * name). Null when every call goes to `u` itself, or when `u` is a tcp upstream, whose calls
   * carry no request to route (reported once).
   */
  function trafficOf(
    inst: Instance,
    u: UpstreamDefinition,
    alias: (target: string) => string,
  ): Traffic | null {
    const dest = u.destinationName;
    const router = central.router(dest);
    const kinds = [router && 'service-router', central.splitter(dest) && 'service-splitter'];
    const named = kinds.filter(Boolean).join(' and ');
    if (named === '') return null;
    const key = `${inst.def.id}/${dest}`;
    if (u.protocol === 'tcp') {
      if (!trafficIgnored.has(key)) {
        trafficIgnored.add(key);
        logError(
          logger,
          new RemoraError(
            'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
            `${named} of ${dest} does not apply to ${inst.def.id}'s calls: its upstream ${dest} is tcp, and only http, http2 and grpc calls can be routed or split; set the protocol in ${dest}'s service-defaults`,
            { instance: inst.def.id, upstream: dest },
          ),
          undefined,
          'warn',
        );
      }
      return null;
    }
    trafficIgnored.delete(key);
    const splitter = (n: string) => central.splitter(n);
    const resolved = (shares: readonly Share[]) =>
      resolveShares(shares, resolverOf).map((sh) => ({ ...sh, target: alias(sh.target) }));
    const routes = (router ?? []).map(({ service, subset, ...r }) => ({
      ...r,
      // a route naming a subset goes to it past the service's splitter, as in Consul
      shares: resolved(
        (subset === undefined ? flattenSplits(service, splitter) : null) ?? [
          { target: targetName(service, subset), weight: 100 },
        ],
      ),
    }));
    const flat = flattenSplits(dest, splitter);
    const shares = flat && resolved(flat);
    const whole = shares !== null && isWhole(shares, dest);
    return routes.length === 0 && (shares === null || whole)
      ? null
      : { routes, shares: whole ? null : shares };
  }

  /**
   * The endpoints calls for `service` reach: those of `subset` (or of the resolver's default
   * subset) when its resolver defines it, else every healthy instance. A service linked by
   * terminating gateways is reached through them: the gateway applies the subset's filter to the
   * instances outside the mesh, asked for by the subset's SNI (`trustDomain` given), as Consul's
   * callers do.
   */
  function endpointsOf(service: string, subset?: string, trustDomain?: string): Endpoint[] {
    const r = central.resolver(service);
    const name = subset ?? r?.defaultSubset;
    const expr = subsetExpr(r, name);
    if (expr === undefined) return discovery.endpoints(service);
    if (!discovery.behindGateway(service)) return discovery.select(service, subsetFilter(expr));
    const gateways = discovery.endpoints(service);
    if (trustDomain === undefined) return gateways;
    const spiffeId = formatSpiffeId({ trustDomain, datacenter: datacenter, service });
    const sni = `${name}.${meshSni(spiffeId)}`;
    return gateways.map((e) => ({ ...e, sni }));
  }

  /**
   * Follows (in discovery) the services the instance's redirects, routes, splits and failovers
   * send calls to.
   */
  function followTargets(inst: Instance, plans: Map<string, Plan>): void {
    const next = new Set<string>();
    for (const [dest, plan] of plans) {
      const main = parseTargetName(plan.main).service;
      if (main !== dest) next.add(main);
      for (const n of plan.targets.keys()) next.add(parseTargetName(n).service);
    }
    const sorted = [...next].sort();
    if (follow(discovery, inst.targets, sorted, targetUser(inst.def.id))) inst.targets = sorted;
  }

  /**
   * The snapshot fields of `u`'s routes, split and failover, and each other target's settings.
   */
  function trafficFields(
    u: UpstreamDefinition,
    plan: Plan,
    trustDomain: string,
  ): Partial<Pick<UpstreamConfig, 'routes' | 'splits' | 'targets' | 'failover'>> {
    const t = plan.traffic;
    const failover = plan.failover.length > 0 ? { failover: plan.failover } : {};
    if (t === null && plan.targets.size === 0) return failover;
    const toSplits = (shares: Share[]) =>
      shares.map(({ target, ...rest }) => ({ service: target, ...rest }));
    return {
      ...(t !== null && t.routes.length > 0
        ? {
            routes: t.routes.map(({ shares, ...r }) => ({ ...r, splits: toSplits(shares) })),
          }
        : {}),
      ...(t?.shares ? { splits: toSplits(t.shares) } : {}),
      ...failover,
      targets: [...plan.targets.keys()].sort().map((n) => {
        const { service, subset } = parseTargetName(n);
        // the caller's settings, with the target's own service-resolver over them
        const r = protocols.withResolver({ ...u, destinationName: service });
        const fo = plan.targets.get(n)!;
        return {
          destinationName: n,
          destinationSpiffeId: formatSpiffeId({ trustDomain, datacenter: datacenter, service }),
          loadBalancer: r.loadBalancer,
          ...hashPoliciesField(r),
          resilience: r.resilience,
          endpoints: endpointsOf(service, subset, trustDomain),
          ...(fo.length > 0 ? { failover: fo } : {}),
        };
      }),
    };
  }

  function release(inst: Instance): void {
    for (const name of inst.targets) discovery.release(name, targetUser(inst.def.id));
    inst.targets = [];
  }

  return { planOf, endpointsOf, followTargets, trafficFields, release };
}
