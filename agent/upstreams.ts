// An instance's upstreams (docs/agent.md, docs/transparent.md): those its definition names,
// with their protocols and settings resolved, then those derived from intentions for a
// transparent instance (the services its intentions let it call, up to transparentDerivedMax
// for the whole host); an ingress gateway's are its entry's services.
import type { Logger } from '../lib/log/index.ts';
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import { DEFAULT_RESILIENCE, defaultLoadBalancer } from '../lib/proxy-api/index.ts';
import type { AgentSettings } from './agent.ts';
import type { CatalogServices } from './catalog-services.ts';
import type { CentralConfig } from './central-config.ts';
import type { Mirror } from './control-state.ts';
import { layeredResilience, type UpstreamDefinition } from './definitions.ts';
import type { Discovery } from './discovery.ts';
import { INGRESS_GATEWAY } from './ingress.ts';
import type { IngressGateways } from './ingress-gateways.ts';
import { follow, type Instance, type KeepWarning } from './instance.ts';
import type { ListenerPorts } from './listener-ports.ts';
import type { Protocols } from './protocols.ts';
import type { Supervisor } from './supervisor.ts';
import { derivedDestinations } from './transparent/derive.ts';

/** Default cap on the derived upstreams of all transparent instances (docs/transparent.md). */
export const DEFAULT_TRANSPARENT_DERIVED_MAX = 128;

/** Discovery user of an instance's derived upstreams (kept apart from its explicit ones). */
function derivedUser(id: string): string {
  return `${id}/derived`;
}

export interface UpstreamsContext {
  settings: Pick<AgentSettings, 'transparentDerivedMax'>;
  logger: Logger;
  instances: ReadonlyMap<string, Instance>;
  intentions: Pick<Mirror<IntentionsSnapshot>, 'current'>;
  discovery: Pick<Discovery, 'acquire' | 'release' | 'listed'>;
  central: Pick<CentralConfig, 'upstreamLayers'>;
  protocols: Pick<Protocols, 'resolved' | 'destinationProtocol' | 'withResolver'>;
  catalog: Pick<CatalogServices, 'services' | 'leaving'>;
  ingress: Pick<IngressGateways, 'upstreams'>;
  ports: Pick<ListenerPorts, 'retainPorts'>;
  supervisor: Pick<Supervisor, 'push'>;
  keepWarning: KeepWarning;
  /** Rebuilds the instance's transparent rules (its derived upstreams changed). */
  syncTransparent(inst: Instance): void;
}

export interface Upstreams {
  /** Explicit upstreams, then the derived ones whose sidecars Consul has listed. */
  upstreamsOf(inst: Instance): UpstreamDefinition[];
  /** Recomputes the services an instance calls by its intentions; `push`: reconfigure it. */
  refreshDerived(inst: Instance, push: boolean): void;
  /** Stops following the instance's upstreams, explicit and derived (it is stopping). */
  release(inst: Instance): void;
}

export function createUpstreams(o: UpstreamsContext): Upstreams {
  const { settings, logger, instances, intentions, discovery, central, protocols } = o;
  const { catalog, ingress, ports, supervisor, keepWarning } = o;

  /** Explicit upstreams, then the derived ones whose sidecars Consul has listed. */
  function upstreamsOf(inst: Instance): UpstreamDefinition[] {
    if (inst.def.kind === INGRESS_GATEWAY) return ingress.upstreams(inst);
    const source = inst.def.name;
    const explicit = (inst.def.sidecar?.upstreams ?? []).map((u) => protocols.resolved(source, u));
    const derived: UpstreamDefinition[] = [];
    for (const name of inst.derived) {
      if (!discovery.listed(name)) continue;
      const protocol = protocols.destinationProtocol(name);
      const layers = central.upstreamLayers(source, name);
      derived.push(
        protocols.withResolver({
          destinationName: name,
          localBindAddress: '127.0.0.1',
          localBindPort: 0,
          protocol,
          protocolGiven: false,
          loadBalancer: defaultLoadBalancer(protocol),
          loadBalancerGiven: false,
          resilience: layers.length === 0 ? DEFAULT_RESILIENCE : layeredResilience(layers),
          config: null,
        }),
      );
    }
    return derived.length === 0 ? explicit : [...explicit, ...derived];
  }

  /**
   * Recomputes the services an instance calls by its intentions and follows them in discovery.
   * Until both the intentions and the service list are known, the instance keeps what it has.
   */
  function refreshDerived(inst: Instance, push: boolean): void {
    const sc = inst.def.sidecar;
    const policy = intentions.current();
    const services = catalog.services();
    let next: string[];
    if (!sc?.deriveUpstreams || inst.stopping) {
      next = [];
      inst.derivedLimit = null;
    } else if (!policy || services === null) return;
    else
      next = withinDerivedLimit(
        inst,
        derivedDestinations({
          source: inst.def.name,
          explicit: new Set(sc.upstreams.map((u) => u.destinationName)),
          services: [...services, ...catalog.leaving()],
          policy,
        }),
      );
    const id = inst.def.id;
    if (!follow(discovery, inst.derived, next, derivedUser(id))) return;
    inst.derived = next;
    logger.info(
      { instance: id, derived: next },
      `${id} calls ${next.length === 0 ? 'no service' : next.join(', ')} by its intentions`,
    );
    ports.retainPorts(inst);
    if (push) {
      supervisor.push(id);
      o.syncTransparent(inst);
    }
  }

  /**
   * The first of `wanted` (sorted) that fit under `transparentDerivedMax`, all instances
   * together: a service another instance derives already costs nothing more. The rest is
   * reported once per change, and in `remora status`.
   */
  function withinDerivedLimit(inst: Instance, wanted: string[]): string[] {
    const max = settings.transparentDerivedMax ?? DEFAULT_TRANSPARENT_DERIVED_MAX;
    const others = new Set<string>();
    for (const i of instances.values()) if (i !== inst) for (const n of i.derived) others.add(n);
    let room = Math.max(0, max - others.size);
    const kept: string[] = [];
    const left: string[] = [];
    for (const name of wanted) {
      if (others.has(name)) kept.push(name);
      else if (room > 0) {
        kept.push(name);
        room -= 1;
      } else left.push(name);
    }
    const message =
      left.length === 0
        ? null
        : `${inst.def.id}: intentions allow ${wanted.length} services but transparentDerivedMax (${max}) leaves room for ${kept.length}; not intercepted: ${left.slice(0, 10).join(', ')}${left.length > 10 ? `, … (${left.length} in all)` : ''}`;
    inst.derivedLimit = keepWarning(inst.derivedLimit, 'REMORA_E_AGENT_DERIVED_LIMIT', message, {
      instance: inst.def.id,
      left: left.length,
    });
    return kept;
  }

  function release(inst: Instance): void {
    const id = inst.def.id;
    for (const u of inst.def.sidecar?.upstreams ?? []) discovery.release(u.destinationName, id);
    for (const name of inst.derived) discovery.release(name, derivedUser(id));
    inst.derived = [];
  }

  return { upstreamsOf, refreshDerived, release };
}
