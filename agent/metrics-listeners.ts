// Public /metrics listeners (`envoy_prometheus_bind_addr`; docs/agent.md): the one each
// instance's proxy serves, from its definition or proxy-defaults, unless its port is taken.
import type { MetricsListener } from '../lib/proxy-api/index.ts';
import type { CentralConfig } from './central-config.ts';
import { wantedExpose } from './exposed-paths.ts';
import type { Instance, KeepWarning } from './instance.ts';
import type { ListenerPorts } from './listener-ports.ts';
import type { Registration } from './registration.ts';
import type { Supervisor } from './supervisor.ts';

/** The /metrics listener an instance asks for: its definition's, else proxy-defaults'. */
export function wantedMetrics(
  central: Pick<CentralConfig, 'metricsBind'>,
  inst: Instance,
): MetricsListener | null {
  const sc = inst.def.sidecar;
  return sc ? (sc.metrics ?? central.metricsBind()) : null;
}

export interface MetricsListenersContext {
  instances: ReadonlyMap<string, Instance>;
  central: Pick<CentralConfig, 'metricsBind' | 'expose'>;
  ports: Pick<ListenerPorts, 'reservedPorts' | 'checkListenerPorts'>;
  keepWarning: KeepWarning;
  supervisor: Pick<Supervisor, 'push'>;
  /** Registers again the instances whose exposed paths or checks changed. */
  registration: Pick<Registration, 'reregisterExposed'>;
}

export interface MetricsListeners {
  /** The snapshot's /metrics listener, unless its port is taken (the instance then says why). */
  metricsField(inst: Instance): { metrics?: MetricsListener };
  /** After instances came or went: those whose listeners may change get a new snapshot. */
  checkMetricsAll(): void;
}

export function createMetricsListeners(ctx: MetricsListenersContext): MetricsListeners {
  const { instances, central, ports, keepWarning, supervisor } = ctx;

  /**
   * The instance's /metrics listener, unless its port is one the host's sidecars, upstream
   * listeners, exposed paths or check listeners use, or one an instance with an earlier ID asks
   * for too (a prox-defaults setting on a host of several instances): two listeners cannot share
   * a port, so that instance serves none and says why.
   */
  function metricsField(inst: Instance): { metrics?: MetricsListener } {
    const want = wantedMetrics(central, inst);
    let problem: string | null = null;
    if (want) {
      const where = `${inst.def.id}: envoy_prometheus_bind_addr ${want.bindAddress}:${want.bindPort}`;
      const taken = ports.reservedPorts(false);
      for (const i of instances.values())
        for (const p of ports.checkListenerPorts(i)) if (p !== null) taken.add(p);
      const earlier = [...instances.values()]
        .filter((o) => o !== inst && !o.stopping && o.def.id < inst.def.id)
        .find((o) => wantedMetrics(central, o)?.bindPort === want.bindPort);
      if (taken.has(want.bindPort))
        problem = `${where}: port ${want.bindPort} is already a listener of this host's sidecars (a sidecar port, an upstream, an exposed path or check); its proxy serves /metrics on its loopback admin API only. Set another port in its proxy config (or in proxy-defaults' Config)`;
      else if (earlier)
        problem = `${where}: ${earlier.def.id} on this host serves /metrics on port ${want.bindPort} already; ${inst.def.id}'s proxy serves it on its loopback admin API only. Give each instance its own port in its definition's proxy config`;
    }
    inst.metricsWarning = keepWarning(
      inst.metricsWarning,
      'REMORA_E_AGENT_METRICS_PORT_TAKEN',
      problem,
      { instance: inst.def.id, port: want?.bindPort },
    );
    return want && problem === null ? { metrics: want } : {};
  }

  /**
   * After instances came or went: those whose /metrics listener may now be granted or taken
   * get a new snapshot.
   */
  function checkMetricsAll(): void {
    for (const inst of instances.values())
      if (
        !inst.stopping &&
        (wantedMetrics(central, inst) || inst.metricsWarning || exposesFromEntries(inst))
      )
        supervisor.push(inst.def.id);
    ctx.registration.reregisterExposed();
  }

  /** True when Consul's entries give the instance exposed paths (whose ports may clash). */
  function exposesFromEntries(inst: Instance): boolean {
    const from = wantedExpose(central, inst.def).pathsFrom;
    return from === 'service-defaults' || from === 'proxy-defaults' || inst.exposeWarning !== null;
  }

  return { metricsField, checkMetricsAll };
}
