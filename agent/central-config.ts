// A service's protocol from Consul's configuration entries, as Consul's own proxies read it:
// `service-defaults` of the service (`Protocol`), else `proxy-defaults` (`Config.protocol` of the
// entry named `global`). A definition's own `proxy.config.protocol` wins over both (the agent
// decides that, docs/agent.md "Protocols"). Also the caller's upstream settings from its
// service-defaults `UpstreamConfig` (`Defaults`, `Overrides` by destination name), which the
// agent layers under each upstream's own `config`. And a destination's `service-resolver`:
// `ConnectTimeout`, `RequestTimeout` and `LoadBalancer.Policy`, which win over what callers set (as
// Consul's resolver does), and its `Subsets` (instances picked by a filter) and `DefaultSubset`.
// And a destination's `service-router` (which requests go to which service or subset) and
// `service-splitter` (the share of its calls that goes to each, with header changes). Five
// blocking watches, one per kind, serve every instance on the host (and the `jwt-provider`
// entries, agent/jwt-providers.ts); the last answer is cached in
// the data directory so a restarted agent builds the same snapshots before Consul answers.
//
// This module is what the rest of Remora imports; the parts live in agent/central-config/:
// watch.ts (the watches: `createCentralConfig`), cache.ts (what they keep, and the cache file read
// back), a module per entry kind or part of one (resolver.ts with hash-policies.ts, splitter.ts,
// router.ts, mesh.ts, mutual-tls.ts, service-defaults.ts with rate-limits.ts, access-logs.ts),
// chain.ts (the discovery chain built from resolvers, splitters and routers), and what they share
// (entry.ts, subsets.ts, headers.ts).

export { subsetFilter } from './central-config/subsets.ts';
export { headerModifiers } from './central-config/headers.ts';
export { resolverSettings, subsetExpr } from './central-config/resolver.ts';
export type { ResolverSettings, ResolverTarget } from './central-config/resolver.ts';
export { splitterShares } from './central-config/splitter.ts';
export type { SplitShare } from './central-config/splitter.ts';
export { routerRoutes } from './central-config/router.ts';
export type { RouteEntry } from './central-config/router.ts';
export {
  danglingSubsets,
  failoverTargets,
  flattenSplits,
  followRedirects,
  isWhole,
  parseTargetName,
  redirectLoop,
  resolveShares,
  resolveTarget,
  targetName,
} from './central-config/chain.ts';
export type { Share } from './central-config/chain.ts';
export { resolveMutualTlsMode } from './central-config/mutual-tls.ts';
export type { MutualTlsResolution, MutualTlsSource } from './central-config/mutual-tls.ts';
export {
  createCentralConfig,
  MESH,
  PROXY_DEFAULTS,
  SERVICE_DEFAULTS,
  SERVICE_RESOLVER,
  SERVICE_ROUTER,
  SERVICE_SPLITTER,
} from './central-config/watch.ts';
export type { CentralConfig } from './central-config/watch.ts';
