// Transparent interception (docs/transparent.md): the iptables rules that steer an instance's
// app's calls to its proxy, the proxy's listeners for them, and the warnings about what such
// rules do on a host shared with other instances or processes.
import type { ProxySnapshot } from '../lib/proxy-api/index.ts';
import type { AgentSettings } from './agent.ts';
import type { CentralConfig } from './central-config.ts';
import type { Discovery } from './discovery.ts';
import type { Instance, KeepWarning } from './instance.ts';
import type { ListenerPorts } from './listener-ports.ts';
import { listenerKey } from './protocols.ts';
import type { RedirectTarget, TransparentManager, TransparentPlan } from './transparent/index.ts';
import type { Upstreams } from './upstreams.ts';

export interface InterceptionContext {
  settings: Pick<AgentSettings, 'transparentProxyUid'>;
  instances: ReadonlyMap<string, Instance>;
  transparent: Pick<TransparentManager, 'ipv6' | 'apply'>;
  discovery: Pick<Discovery, 'targets'>;
  central: Pick<CentralConfig, 'meshDestinationsOnly'>;
  ports: Pick<ListenerPorts, 'httpListenerPort' | 'upstreamPort'>;
  upstreams: Pick<Upstreams, 'upstreamsOf'>;
  keepWarning: KeepWarning;
  isStopped(): boolean;
}

export interface Interception {
  /** The proxy's transparent listeners (the snapshot's `transparent`). */
  snapshotField(inst: Instance): Pick<ProxySnapshot, 'transparent'>;
  /** Installs or updates an instance's rules once its proxy has been ready. */
  sync(inst: Instance): void;
  /** Checks each instance for others intercepting in the same namespace (instances changed). */
  checkSharedAll(): void;
}

export function createInterception(o: InterceptionContext): Interception {
  const { settings, instances, transparent, discovery, central, ports, keepWarning } = o;

  /**
   * The proxy's transparent listeners. IPv4 rules redirect to 127.0.0.1, IPv6 rules to ::1: with
   * IPv6 rules, each Host-routing listener has a twin on ::1, and so has each other upstream's
   * listener (a `forward` listener handing connections to it).
   */
  function transparentSnapshot(inst: Instance): Pick<ProxySnapshot, 'transparent'> {
    const sc = inst.def.sidecar;
    if (!sc?.transparent) return {};
    const addresses = transparent.ipv6 ? ['127.0.0.1', '::1'] : ['127.0.0.1'];
    const upstreams = o.upstreams.upstreamsOf(inst);
    const http = upstreams
      .filter((u) => u.protocol === 'http')
      .flatMap((u) => {
        const port = ports.httpListenerPort(inst, u.destinationName);
        if (port === null) return [];
        return addresses.map((a) => ({
          bindAddress: a,
          bindPort: port,
          upstream: u.destinationName,
        }));
      });
    const forward = !transparent.ipv6
      ? []
      : upstreams
          // an upstream listening on IPv6 already (`local_bind_address` ::1 or ::) needs no twin
          .filter((u) => u.protocol !== 'http' && !u.localBindAddress.includes(':'))
          .flatMap((u) => {
            const port = ports.upstreamPort(inst, u.destinationName, u.localBindPort);
            return port === 0
              ? []
              : [{ bindAddress: '::1', bindPort: port, upstream: u.destinationName }];
          });
    if (http.length === 0 && forward.length === 0) return {};
    return { transparent: forward.length === 0 ? { http } : { http, forward } };
  }

  function transparentPlan(inst: Instance): TransparentPlan | null {
    const sc = inst.def.sidecar;
    if (!sc?.transparent || inst.sidecarPort === null) return null;
    const targets: RedirectTarget[] = [];
    for (const u of o.upstreams.upstreamsOf(inst)) {
      // a new upstream's addresses are redirected once the proxy listens for it
      if (inst.listening && !inst.listening.has(listenerKey(u))) continue;
      const toPort =
        u.protocol === 'http'
          ? ports.httpListenerPort(inst, u.destinationName)
          : ports.upstreamPort(inst, u.destinationName, u.localBindPort);
      if (!toPort) continue;
      for (const t of discovery.targets(u.destinationName))
        targets.push({ service: u.destinationName, address: t.address, port: t.port, toPort });
    }
    return {
      instanceId: inst.def.id,
      // an excluded app port keeps taking plain traffic (e.g. a port published to the outside)
      appPort: sc.excludeInboundPorts.includes(inst.def.port) ? 0 : inst.def.port,
      sidecarPort: inst.sidecarPort,
      proxyUid: settings.transparentProxyUid ?? process.getuid?.() ?? 0,
      ...(sc.appUid === null ? {} : { appUid: sc.appUid }),
      targets,
      // the mesh entry's TransparentProxy.MeshDestinationsOnly: the app reaches only the mesh
      ...(central.meshDestinationsOnly() ? { meshDestinationsOnly: true } : {}),
    };
  }

  /**
   * Transparent instances of one agent share its network namespace, and rules match by
   * destination: unless each redirects only its own app's user, a call to a service several of
   * them reach is carried by whichever chain comes first, with that instance's identity.
   */
  function checkShared(inst: Instance): void {
    const others = [...instances.values()].filter(
      (i) => i !== inst && !i.stopping && i.def.sidecar?.transparent,
    );
    const uid = inst.def.sidecar?.appUid ?? null;
    const clash =
      !inst.def.sidecar?.transparent || inst.stopping
        ? []
        : others.filter(
            (i) =>
              uid === null ||
              (i.def.sidecar?.appUid ?? null) === null ||
              i.def.sidecar?.appUid === uid,
          );
    const message =
      clash.length === 0
        ? null
        : `${inst.def.id} and ${clash.map((i) => i.def.id).join(', ')} intercept calls in one network namespace without each its own proxy.config.app_user: a call to a service more than one of them reaches is carried by whichever chain comes first, with that instance's identity; set app_user to the user each app runs as (docs/transparent.md)`;
    inst.sharedWarning = keepWarning(
      inst.sharedWarning,
      'REMORA_E_AGENT_TRANSPARENT_SHARED',
      message,
      { instance: inst.def.id },
    );
  }

  /** The shared-namespace check depends only on the instances and their definitions. */
  function checkSharedAll(): void {
    for (const i of instances.values()) checkShared(i);
  }

  /** Installs or updates an instance's rules once its proxy has been ready. */
  function syncTransparent(inst: Instance): void {
    if (o.isStopped() || inst.stopping || !inst.transparentArmed) return;
    const plan = transparentPlan(inst);
    if (plan) void transparent.apply(plan);
    checkConfined(inst, plan);
  }

  /**
   * Without `app_user`, an instance's rules hold every user of the host but the proxies': with
   * MeshDestinationsOnly, a Consul agent, package updates or monitoring on the host can then
   * reach only mesh services. Said (once per change), as it is rarely meant on a shared host.
   */
  function checkConfined(inst: Instance, plan: TransparentPlan | null): void {
    const confined = plan?.meshDestinationsOnly === true && plan.appUid === undefined;
    inst.confinedWarning = keepWarning(
      inst.confinedWarning,
      'REMORA_E_AGENT_TRANSPARENT_HOST_CONFINED',
      confined
        ? `${inst.def.id} has no proxy.config.app_user while the mesh entry sets TransparentProxy.MeshDestinationsOnly: every process of this host but the proxies (a Consul agent, package updates, monitoring) can open TCP connections only to mesh services; set app_user to the user the app runs as (docs/transparent.md)`
        : null,
      { instance: inst.def.id },
    );
  }

  return { snapshotField: transparentSnapshot, sync: syncTransparent, checkSharedAll };
}
