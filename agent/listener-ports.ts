// The ports of the listeners the agent opens for this host's proxies besides the ones
// definitions name: upstream and Host-routing listeners (docs/transparent.md), exposed check
// listeners (docs/agent.md, "Exposed checks") and sidecar ports. Each is kept clear of every
// port an instance of the host asks for, and stays the same while the agent runs.
import type { AgentSettings } from './agent.ts';
import type { CentralConfig } from './central-config.ts';
import type { ServiceDefinition } from './definitions.ts';
import { DEFAULT_EXPOSE_PORT_MAX, DEFAULT_EXPOSE_PORT_MIN, wantedExpose } from './exposed-paths.ts';
import type { Instance } from './instance.ts';
import { wantedMetrics } from './metrics-listeners.ts';
import { createPortAllocator } from './transparent/index.ts';

/** Default range of the transparent listeners' ports on 127.0.0.1 (docs/transparent.md). */
export const DEFAULT_TRANSPARENT_PORT_MIN = 15001;
export const DEFAULT_TRANSPARENT_PORT_MAX = 15999;

export interface ListenerPortsContext {
  settings: Pick<
    AgentSettings,
    | 'transparentPortMin'
    | 'transparentPortMax'
    | 'exposePortMin'
    | 'exposePortMax'
    | 'sidecarPortMin'
    | 'sidecarPortMax'
  >;
  instances: ReadonlyMap<string, Instance>;
  central: Pick<CentralConfig, 'expose' | 'metricsBind'>;
}

export interface ListenerPorts {
  /** Ports no listener the agent allocates may take (with `withMetrics`, /metrics ones too). */
  reservedPorts(withMetrics?: boolean): Set<number>;
  /** The upstream's listener port: its `local_bind_port`, or one the agent allocates. */
  upstreamPort(inst: Instance, destination: string, given: number): number;
  /** The definition with the allocated upstream ports filled in (Consul wants a nonzero port). */
  withUpstreamPorts(inst: Instance): ServiceDefinition;
  /** Port of the Host-routing listener of a transparent instance's HTTP upstream. */
  httpListenerPort(inst: Instance, destination: string): number | null;
  /** The listener port of each of the instance's exposed check paths; null: the range is full. */
  checkListenerPorts(inst: Instance): (number | null)[];
  /** Ports of upstreams that are gone go back to the range. */
  retainPorts(inst: Instance): void;
  /** The port the definition's sidecar listens on: its own, or a free one of the range. */
  allocateSidecarPort(def: ServiceDefinition): number | null;
  /** Every port allocated for the instance goes back to its range (it stopped). */
  release(id: string): void;
}

export function createListenerPorts(o: ListenerPortsContext): ListenerPorts {
  const { settings, instances, central } = o;
  const transparentPorts = createPortAllocator(
    settings.transparentPortMin ?? DEFAULT_TRANSPARENT_PORT_MIN,
    settings.transparentPortMax ?? DEFAULT_TRANSPARENT_PORT_MAX,
  );
  const exposePorts = createPortAllocator(
    settings.exposePortMin ?? DEFAULT_EXPOSE_PORT_MIN,
    settings.exposePortMax ?? DEFAULT_EXPOSE_PORT_MAX,
  );

  /**
   * Ports no listener the agent allocates may take: sidecar ports, explicit upstream listeners,
   * exposed paths and (with `withMetrics`) the public /metrics listeners asked for.
   */
  function reservedPorts(withMetrics = true): Set<number> {
    const out = new Set<number>();
    for (const i of instances.values()) {
      if (i.sidecarPort !== null) out.add(i.sidecarPort);
      for (const u of i.def.sidecar?.upstreams ?? []) if (u.localBindPort) out.add(u.localBindPort);
      for (const p of wantedExpose(central, i.def).paths) out.add(p.listenerPort);
      const m = withMetrics ? wantedMetrics(central, i) : null;
      if (m) out.add(m.bindPort);
    }
    return out;
  }

  /** The upstream's listener port: its `local_bind_port`, or one the agent allocates. */
  function upstreamPort(inst: Instance, destination: string, given: number): number {
    if (given !== 0) return given;
    return transparentPorts.get(`${inst.def.id}/upstream/${destination}`, reservedPorts()) ?? 0;
  }

  /** The definition with the allocated upstream ports filled in (Consul wants a nonzero port). */
  function withUpstreamPorts(inst: Instance): ServiceDefinition {
    const sc = inst.def.sidecar;
    if (!sc?.upstreams.some((u) => u.localBindPort === 0)) return inst.def;
    return {
      ...inst.def,
      sidecar: {
        ...sc,
        upstreams: sc.upstreams.map((u) => ({
          ...u,
          localBindPort: upstreamPort(inst, u.destinationName, u.localBindPort),
        })),
      },
    };
  }

  /** Port of the Host-routing listener of a transparent instance's HTTP upstream. */
  function httpListenerPort(inst: Instance, destination: string): number | null {
    return transparentPorts.get(`${inst.def.id}/http/${destination}`, reservedPorts());
  }

  /**
   * The listener port of each of the instance's exposed check paths (`expose.checks`): the port
   * of an explicit path serving the same, or one from `exposePortMin`–`exposePortMax` (stable
   * while the agent runs); null when that range is full.
   */
  function checkListenerPorts(inst: Instance): (number | null)[] {
    const wanted = wantedExpose(central, inst.def);
    if (wanted.checks.length === 0) return [];
    const keep = new Set<string>();
    const ports = wanted.checks.map((e) => {
      const explicit = wanted.paths.find(
        (p) =>
          p.path === e.path && p.localPathPort === e.localPathPort && p.protocol === e.protocol,
      );
      if (explicit) return explicit.listenerPort;
      const key = `${inst.def.id}/${e.protocol}/${e.localPathPort}${e.path}`;
      keep.add(key);
      return exposePorts.get(key, reservedPorts());
    });
    exposePorts.retain(`${inst.def.id}/`, keep);
    return ports;
  }

  /** Ports of upstreams that are gone go back to the range. */
  function retainPorts(inst: Instance): void {
    const id = inst.def.id;
    const names = [
      ...(inst.def.sidecar?.upstreams ?? []).map((u) => u.destinationName),
      ...inst.derived,
    ];
    transparentPorts.retain(
      `${id}/`,
      new Set(names.flatMap((n) => [`${id}/upstream/${n}`, `${id}/http/${n}`])),
    );
  }

  function allocateSidecarPort(def: ServiceDefinition): number | null {
    if (!def.sidecar) return null;
    if (def.sidecar.port !== null) return def.sidecar.port;
    const used = new Set([...instances.values()].map((i) => i.sidecarPort));
    for (const inst of instances.values()) {
      if (inst.def.sidecar?.port) used.add(inst.def.sidecar.port);
      const m = wantedMetrics(central, inst);
      if (m) used.add(m.bindPort);
      for (const p of wantedExpose(central, inst.def).paths) used.add(p.listenerPort);
      for (const p of checkListenerPorts(inst)) if (p !== null) used.add(p);
    }
    for (const p of wantedExpose(central, def).paths) used.add(p.listenerPort);
    if (def.sidecar.metrics) used.add(def.sidecar.metrics.bindPort);
    for (let p = settings.sidecarPortMin; p <= settings.sidecarPortMax; p++)
      if (!used.has(p)) return p;
    return null;
  }

  return {
    reservedPorts,
    upstreamPort,
    withUpstreamPorts,
    httpListenerPort,
    checkListenerPorts,
    retainPorts,
    allocateSidecarPort,
    release(id) {
      transparentPorts.release(`${id}/`);
      exposePorts.release(`${id}/`);
    },
  };
}
