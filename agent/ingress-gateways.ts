// Ingress gateways (docs/gateways.md): each gateway's listeners and services from its
// `ingress-gateway` config entry, the services followed in discovery as upstreams without
// listeners of their own, and the DNS names its certificate covers.
import { RemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { ingressDnsSans } from '../lib/consul/ingress-sans.ts';
import {
  DEFAULT_PROTOCOL,
  DEFAULT_RESILIENCE,
  defaultLoadBalancer,
  type IngressConfig,
  type Protocol,
} from '../lib/proxy-api/index.ts';
import type { AgentSettings } from './agent.ts';
import type { CatalogServices } from './catalog-services.ts';
import type { CentralConfig } from './central-config.ts';
import { layeredResilience, type UpstreamDefinition } from './definitions.ts';
import type { Discovery } from './discovery.ts';
import { watchGatewayEntries } from './gateway-entries.ts';
import type { IdentityManager } from './identity.ts';
import {
  decodeIngressEntry,
  INGRESS_GATEWAY,
  planIngress,
  type IngressProblem,
  type PlannedListener,
} from './ingress.ts';
import { follow, gatewayBindAddress, type Instance } from './instance.ts';
import type { ConsulPort } from './ports.ts';
import type { Protocols } from './protocols.ts';
import type { Supervisor } from './supervisor.ts';

/** Discovery user of a gateway's services. */
function ingressUser(id: string): string {
  return `${id}/ingress`;
}

export interface IngressGatewaysContext {
  settings: Pick<AgentSettings, 'datacenter' | 'consulDnsDomains' | 'proxyBindAddress'>;
  consul: Pick<ConsulPort, 'watchConfigEntries'>;
  logger: Logger;
  instances: ReadonlyMap<string, Instance>;
  central: Pick<CentralConfig, 'protocol' | 'upstreamLayers'>;
  discovery: Pick<Discovery, 'acquire' | 'release' | 'listed'>;
  identity: Pick<IdentityManager, 'namesChanged'>;
  supervisor: Pick<Supervisor, 'push'>;
  protocols: Pick<Protocols, 'destinationProtocol' | 'withResolver'>;
  catalog: Pick<CatalogServices, 'services'>;
  isStopped(): boolean;
}

export interface IngressGateways {
  /** The watch of the entries runs while the agent runs a gateway. */
  sync(): void;
  /** Sends each gateway a new snapshot (its entry, or the catalog, changed). */
  push(): void;
  /** True once the entries are known: a gateway's listeners are not guessed before. */
  known(): boolean;
  /** The DNS names a gateway's certificate covers; [] for any other instance, null while unknown. */
  dnsNames(id: string): string[] | null;
  /** A gateway's services as upstreams without listeners of their own, followed in discovery. */
  upstreams(inst: Instance): UpstreamDefinition[];
  /** The snapshot's listeners: those of the plan whose services made it into the upstreams. */
  field(inst: Instance, upstreams: UpstreamDefinition[]): IngressConfig;
  /** Stops following a gateway's services (it is stopping). */
  release(inst: Instance): void;
  /** Stops the watch of the entries (the agent stops). */
  stop(): void;
}

export function createIngressGateways(o: IngressGatewaysContext): IngressGateways {
  const { settings, consul, logger, instances, central, discovery, identity, supervisor } = o;
  const { protocols, catalog } = o;

  /** The `ingress-gateway` entries by name. */
  const entries = watchGatewayEntries({
    consul,
    logger,
    instances,
    kind: INGRESS_GATEWAY,
    keeps: 'listeners',
    isStopped: () => o.isStopped(),
    onChange: push,
  });

  function push(): void {
    for (const inst of instances.values())
      if (inst.def.kind === INGRESS_GATEWAY) {
        // a changed entry may change the names its certificate must cover
        identity.namesChanged(inst.def.id);
        supervisor.push(inst.def.id);
      }
  }

  /**
   * The DNS names a gateway's certificate covers (docs/gateways.md, "TLS"): derived from its
   * entry as control derives them; [] for any other instance, null while the entry is unknown.
   */
  function dnsNames(id: string): string[] | null {
    const inst = instances.get(id);
    if (inst?.def.kind !== INGRESS_GATEWAY) return [];
    const known = entries.current();
    if (known === null) return null;
    const raw = known.get(inst.def.name);
    if (raw === undefined) return [];
    return ingressDnsSans(raw, {
      datacenter: settings.datacenter,
      domains: settings.consulDnsDomains ?? ['consul'],
    });
  }

  /**
   * A gateway's listeners from its entry, as far as they apply; what does not is reported once
   * per change (REMORA_E_AGENT_INGRESS_NOT_APPLIED) and listed by `remora status`.
   */
  function ingressPlan(inst: Instance): PlannedListener[] {
    const known = entries.current();
    const raw = known?.get(inst.def.name);
    const problems: IngressProblem[] = [];
    const notApplied = (message: string): IngressProblem => ({
      code: 'REMORA_E_AGENT_INGRESS_NOT_APPLIED',
      message,
      field: '',
    });
    let listeners: PlannedListener[] = [];
    if (known !== null && raw === undefined)
      problems.push(
        notApplied(
          `ingress gateway ${inst.def.id} has no ingress-gateway config entry named ${inst.def.name}, so it has no listener; write one (consul config write), docs/gateways.md`,
        ),
      );
    if (raw !== undefined) {
      const d = decodeIngressEntry(raw);
      const p = planIngress(d.entry, {
        gateway: inst.def.name,
        protocolOf: (n) => protocols.destinationProtocol(n),
        wildcardProtocolOf: (n) => central.protocol(n) ?? DEFAULT_PROTOCOL,
        catalog: catalog.services(),
      });
      problems.push(...d.coded, ...[...d.problems, ...p.problems].map(notApplied));
      listeners = p.listeners;
    }
    const was = inst.ingressProblems;
    for (const m of problems)
      if (!was.some((w) => w.code === m.code && w.message === m.message))
        logError(
          logger,
          new RemoraError(m.code, m.message, {
            instance: inst.def.id,
            ...(m.field ? { field: m.field } : {}),
          }),
          undefined,
          'warn',
        );
    inst.ingressProblems = problems;
    return listeners;
  }

  /** A gateway's services as upstreams without listeners of their own, followed in discovery. */
  function gatewayUpstreams(inst: Instance): UpstreamDefinition[] {
    const planned = ingressPlan(inst);
    const services = new Map<
      string,
      { protocol: Protocol; limits: PlannedListener['services'][number]['limits'] }
    >();
    for (const l of planned)
      for (const svc of l.services)
        if (!services.has(svc.name))
          services.set(svc.name, { protocol: l.protocol, limits: svc.limits });
    const names = [...services.keys()].sort();
    if (!inst.stopping && follow(discovery, inst.ingress, names, ingressUser(inst.def.id)))
      inst.ingress = names;
    const out: UpstreamDefinition[] = [];
    for (const [name, { protocol, limits }] of services) {
      // a wildcard's services are reached once Consul lists a sidecar of theirs
      if (!discovery.listed(name) && !isNamed(inst, name)) continue;
      const layers = central.upstreamLayers(inst.def.name, name);
      const base = layers.length === 0 ? DEFAULT_RESILIENCE : layeredResilience(layers);
      out.push(
        protocols.withResolver({
          destinationName: name,
          localBindAddress: '127.0.0.1',
          localBindPort: 0,
          protocol,
          protocolGiven: true,
          loadBalancer: defaultLoadBalancer(protocol),
          loadBalancerGiven: false,
          resilience: {
            ...base,
            circuitBreaker: {
              maxConnections: limits.maxConnections ?? base.circuitBreaker.maxConnections,
              maxPendingRequests:
                limits.maxPendingRequests ?? base.circuitBreaker.maxPendingRequests,
              maxRequests: limits.maxConcurrentRequests ?? base.circuitBreaker.maxRequests,
            },
          },
          config: null,
        }),
      );
    }
    return out.sort((a, b) => (a.destinationName < b.destinationName ? -1 : 1));
  }

  /** True when the gateway's entry names `service` itself (not only through `*`). */
  function isNamed(inst: Instance, service: string): boolean {
    const raw = entries.current()?.get(inst.def.name);
    if (raw === undefined) return false;
    return decodeIngressEntry(raw).entry.listeners.some((l) =>
      l.services.some((x) => x.name === service),
    );
  }

  /** The snapshot's listeners: those of the plan whose services made it into the upstreams. */
  function field(inst: Instance, upstreams: UpstreamDefinition[]): IngressConfig {
    const have = new Set(upstreams.map((u) => u.destinationName));
    const bindAddress = gatewayBindAddress(inst, settings.proxyBindAddress);
    const listeners = ingressPlan(inst)
      .map((l) => ({
        bindAddress,
        bindPort: l.port,
        protocol: l.protocol,
        services: l.services
          .filter((x) => have.has(x.name))
          .map((x) => ({
            upstream: x.name,
            hosts: x.hosts,
            ...(x.requestHeaders ? { requestHeaders: x.requestHeaders } : {}),
            ...(x.responseHeaders ? { responseHeaders: x.responseHeaders } : {}),
          })),
        ...(l.tls ? { tls: l.tls } : {}),
      }))
      .filter((l) => l.services.length > 0);
    return { listeners };
  }

  function release(inst: Instance): void {
    for (const name of inst.ingress) discovery.release(name, ingressUser(inst.def.id));
    inst.ingress = [];
  }

  return {
    sync: () => entries.sync(),
    push,
    known: () => entries.current() !== null,
    dnsNames,
    upstreams: gatewayUpstreams,
    field,
    release,
    stop: () => entries.stop(),
  };
}
