// Protocols (docs/agent.md, "Protocols"): what an instance serves and what its upstreams speak,
// from its definition, its destinations' sidecars or Consul's config entries, and the settings
// a destination's service-resolver puts over whatever its callers set.
import {
  DEFAULT_PROTOCOL,
  defaultLoadBalancer,
  type HashPolicy,
  type Protocol,
} from '../lib/proxy-api/index.ts';
import {
  parseTargetName,
  resolveTarget,
  type CentralConfig,
  type ResolverSettings,
} from './central-config.ts';
import { layeredResilience, type UpstreamDefinition } from './definitions.ts';
import type { Discovery } from './discovery.ts';
import type { Instance } from './instance.ts';

export interface ProtocolsContext {
  central: Pick<CentralConfig, 'protocol' | 'resolver' | 'upstreamLayers'>;
  discovery: Pick<Discovery, 'protocol'>;
}

export interface Protocols {
  /** The service-resolver of `service`, as Consul's entries give it (null: none); a value to pass. */
  resolverOf: (service: string) => ResolverSettings | null;
  /**
   * The protocol of calls to `service` when the caller names none: what its sidecars were
   * registered with, else Consul's service-defaults or proxy-defaults, else `tcp`.
   */
  destinationProtocol(service: string): Protocol;
  /** The instance's own protocol: its definition's, else Consul's config entries', else `tcp`. */
  inboundProtocol(inst: Instance): Protocol;
  /** An upstream with its protocol (and the balancer that follows from it) resolved. */
  resolved(source: string, u: UpstreamDefinition): UpstreamDefinition;
  /**
   * The destination's service-resolver over whatever the caller set: its timeouts and balancing
   * policy apply to every caller, as Consul's resolver does.
   */
  withResolver(u: UpstreamDefinition): UpstreamDefinition;
}

/**
 * What the proxy listens on for an upstream: an HTTP one on the Host-routing listener, others
 * on their own port, so a protocol change moves the rules only once the proxy has acked it.
 */
export function listenerKey(u: { destinationName: string; protocol: string }): string {
  return `${u.destinationName}/${u.protocol === 'http' ? 'http' : 'port'}`;
}

/** What calls are hashed on, for an upstream or target balanced by consistent hashing. */
export function hashPoliciesField(u: UpstreamDefinition): { hashPolicies?: HashPolicy[] } {
  const hashing = u.loadBalancer === 'ring_hash' || u.loadBalancer === 'maglev';
  return hashing && u.hashPolicies ? { hashPolicies: u.hashPolicies } : {};
}

export function createProtocols(o: ProtocolsContext): Protocols {
  const { central, discovery } = o;

  const resolverOf = (n: string) => central.resolver(n);

  function destinationProtocol(service: string): Protocol {
    return discovery.protocol(service) ?? central.protocol(service) ?? DEFAULT_PROTOCOL;
  }

  function inboundProtocol(inst: Instance): Protocol {
    const sc = inst.def.sidecar;
    if (sc?.protocolGiven) return sc.protocol;
    return central.protocol(inst.def.name) ?? DEFAULT_PROTOCOL;
  }

  function resolved(source: string, u: UpstreamDefinition): UpstreamDefinition {
    // the caller's service-defaults UpstreamConfig, under the upstream's own `config`
    const layers = central.upstreamLayers(source, u.destinationName);
    let out =
      layers.length === 0
        ? u
        : { ...u, resilience: layeredResilience(u.config ? [...layers, u.config] : layers) };
    const protocol = u.protocolGiven ? u.protocol : destinationProtocol(u.destinationName);
    if (protocol !== u.protocol)
      out = {
        ...out,
        protocol,
        loadBalancer: u.loadBalancerGiven ? u.loadBalancer : defaultLoadBalancer(protocol),
      };
    return withResolver(out);
  }

  function withResolver(u: UpstreamDefinition): UpstreamDefinition {
    // a redirected service's calls take the settings of the resolver they end at, as in Consul
    const to = parseTargetName(resolveTarget(u.destinationName, undefined, resolverOf)).service;
    const r = central.resolver(to);
    if (!r) return u;
    return {
      ...u,
      ...(r.loadBalancer ? { loadBalancer: r.loadBalancer } : {}),
      ...(r.hashPolicies ? { hashPolicies: r.hashPolicies } : {}),
      resilience: {
        ...u.resilience,
        ...(r.connectTimeoutMs ? { connectTimeoutMs: r.connectTimeoutMs } : {}),
        ...(r.requestTimeoutMs ? { requestTimeoutMs: r.requestTimeoutMs } : {}),
      },
    };
  }

  return { resolverOf, destinationProtocol, inboundProtocol, resolved, withResolver };
}
