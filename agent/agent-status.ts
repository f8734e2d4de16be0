// What the agent reports (`remora status`, docs/agent.md): each instance with its proxy,
// certificate, upstreams, warnings and gateway listeners, the problems of its definitions and
// Consul's entries, and — logged once per change — what the agent is still waiting for.
import { RemoraError } from '../lib/errors/index.ts';
import type { Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import type { AgentSettings, AgentStatus } from './agent.ts';
import {
  failoverTargets,
  parseTargetName,
  resolveTarget,
  type CentralConfig,
} from './central-config.ts';
import type { Mirror } from './control-state.ts';
import type { Discovery } from './discovery.ts';
import type { IdentityManager } from './identity.ts';
import { INGRESS_GATEWAY } from './ingress.ts';
import type { IngressGateways } from './ingress-gateways.ts';
import type { InstanceLifecycle } from './instance-lifecycle.ts';
import type { Instance } from './instance.ts';
import type { JwksKeeper } from './jwt-providers.ts';
import type { TrustBundle } from './ports.ts';
import type { Protocols } from './protocols.ts';
import type { ProxySnapshots } from './proxy-snapshot.ts';
import type { Supervisor } from './supervisor.ts';
import { TERMINATING_GATEWAY } from './terminating.ts';
import type { TerminatingGateways } from './terminating-gateways.ts';
import type { TrafficPlan } from './traffic-plan.ts';
import type { TransparentManager } from './transparent/index.ts';
import type { Upstreams } from './upstreams.ts';

export interface AgentStatusContext {
  settings: Pick<AgentSettings, 'node' | 'datacenter'>;
  clock: Clock;
  logger: Logger;
  /** When the agent was created (ISO 8601). */
  startedAt: string;
  instances: ReadonlyMap<string, Instance>;
  roots: Pick<Mirror<TrustBundle>, 'status'>;
  intentions: Pick<Mirror<IntentionsSnapshot>, 'status' | 'current'>;
  identity: Pick<IdentityManager, 'get' | 'status'>;
  discovery: Pick<Discovery, 'status'>;
  central: Pick<CentralConfig, 'synced' | 'settled' | 'problems'>;
  jwks: Pick<JwksKeeper, 'problems'>;
  supervisor: Pick<Supervisor, 'status'>;
  transparent: Pick<TransparentManager, 'status'>;
  protocols: Pick<Protocols, 'inboundProtocol' | 'resolverOf'>;
  traffic: Pick<TrafficPlan, 'endpointsOf'>;
  upstreams: Pick<Upstreams, 'upstreamsOf'>;
  ingress: Pick<IngressGateways, 'field'>;
  terminating: Pick<TerminatingGateways, 'linkedStatus'>;
  snapshots: Pick<ProxySnapshots, 'mutualTlsOf'>;
  lifecycle: Pick<InstanceLifecycle, 'problems'>;
  isStopped(): boolean;
}

export interface AgentStatusReport {
  status(): AgentStatus;
  /** Logs what the agent waits for whenever that changes, every 2 s until it stops. */
  reportWaiting(): void;
  stopReporting(): void;
}

export function createAgentStatus(o: AgentStatusContext): AgentStatusReport {
  const { settings, clock, logger, instances, roots, intentions, identity, discovery } = o;
  const { central, jwks, supervisor, transparent, protocols, traffic, upstreams } = o;
  const { ingress, terminating, snapshots, lifecycle } = o;
  let waitTimer: NodeJS.Timeout | null = null;
  let lastWaiting = '';

  function waitingFor(): string[] {
    const out: string[] = [];
    const rs = roots.status();
    const is = intentions.status();
    if (!rs.live)
      out.push(
        rs.known ? 'control (trust bundle; using the cached one)' : 'control: the trust bundle',
      );
    if (!is.live)
      out.push(
        is.known ? 'control (intentions; using the cached ones)' : 'control: the intentions',
      );
    const unregistered = [...instances.values()]
      .filter((i) => !i.registered && !i.stopping)
      .map((i) => i.def.id);
    if (unregistered.length > 0) out.push(`Consul: registration of ${unregistered.join(', ')}`);
    const noCert = [...instances.values()]
      .filter((i) => i.def.sidecar && !identity.get(i.def.id))
      .map((i) => i.def.id);
    if (noCert.length > 0) out.push(`control: certificates for ${noCert.join(', ')}`);
    const unsynced = discovery
      .status()
      .filter((u) => !u.synced)
      .map((u) => u.service);
    if (unsynced.length > 0) out.push(`Consul: endpoints of ${unsynced.join(', ')}`);
    if (!central.synced())
      out.push(
        central.settled()
          ? 'Consul (config entries; using the protocols last known)'
          : 'Consul: config entries (service-defaults, proxy-defaults, service-resolver, service-splitter, service-router)',
      );
    return out;
  }

  function reportWaiting(): void {
    const w = waitingFor();
    const key = w.join('; ');
    if (key !== lastWaiting) {
      if (w.length > 0) logger.warn({ waitingFor: w }, `waiting for ${key}`);
      else if (lastWaiting) logger.info('all dependencies reachable; converged');
      lastWaiting = key;
    }
    if (!o.isStopped()) waitTimer = clock.setTimeout(reportWaiting, 2000);
  }

  function status(): AgentStatus {
    const bundle = intentions.current();
    return {
      node: settings.node,
      datacenter: settings.datacenter,
      startedAt: o.startedAt,
      waitingFor: waitingFor(),
      trustBundle: roots.status(),
      intentions: { ...intentions.status(), revision: bundle?.revision ?? null },
      instances: [...instances.values()]
        .map((inst) => ({
          id: inst.def.id,
          service: inst.def.name,
          file: inst.def.source.file,
          sidecarPort: inst.sidecarPort,
          registered: inst.registered,
          registrationError: inst.registrationError,
          proxy: supervisor.status(inst.def.id),
          certificate: identity.status(inst.def.id),
          protocol: inst.def.sidecar ? protocols.inboundProtocol(inst) : null,
          mutualTls: inst.def.sidecar
            ? (({ mode, source }) => ({ mode, source }))(snapshots.mutualTlsOf(inst))
            : null,
          upstreams: upstreams.upstreamsOf(inst).map((u) => {
            // where its calls go: the service, or where its resolver redirects them
            const main = resolveTarget(u.destinationName, undefined, protocols.resolverOf);
            const { service, subset } = parseTargetName(main);
            const st = discovery.status().find((x) => x.service === service);
            const failover = failoverTargets(main, protocols.resolverOf);
            return {
              destination: u.destinationName,
              localBindPort: u.localBindPort,
              protocol: u.protocol,
              endpoints: st ? traffic.endpointsOf(service, subset).length : 0,
              synced: st?.synced ?? false,
              derived: inst.derived.includes(u.destinationName),
              ...(main !== u.destinationName ? { redirectedTo: main } : {}),
              ...(failover.length > 0 ? { failover } : {}),
            };
          }),
          warnings: [
            inst.derivedLimit,
            inst.sharedWarning,
            inst.confinedWarning,
            inst.mtlsWarning,
            inst.metricsWarning,
            inst.exposeWarning,
            inst.exposeChecksWarning,
          ].filter((w) => w !== null),
          ...(inst.def.kind === INGRESS_GATEWAY
            ? {
                kind: INGRESS_GATEWAY,
                listeners: ingress.field(inst, upstreams.upstreamsOf(inst)).listeners.map((l) => ({
                  port: l.bindPort,
                  protocol: l.protocol,
                  ...(l.tls ? { tls: true } : {}),
                  services: l.services.map((x) => ({ name: x.upstream, hosts: x.hosts })),
                })),
              }
            : {}),
          ...(inst.def.kind === TERMINATING_GATEWAY
            ? { kind: TERMINATING_GATEWAY, linked: terminating.linkedStatus(inst) }
            : {}),
          transparent: inst.def.sidecar?.transparent
            ? (transparent.status(inst.def.id) ?? {
                active: false,
                chains: [],
                redirects: 0,
                meshDestinationsOnly: false,
                lastError: null,
              })
            : null,
        }))
        .sort((a, b) => (a.id < b.id ? -1 : 1)),
      upstreams: discovery.status(),
      problems: [
        ...lifecycle.problems(),
        ...central.problems(),
        ...jwks.problems(),
        ...[...instances.values()].flatMap((i) =>
          i.ingressProblems.map(
            (m) =>
              new RemoraError(m.code, m.message, {
                file: i.def.source.file,
                ...(m.field ? { field: m.field } : {}),
              }),
          ),
        ),
        ...[...instances.values()].flatMap((i) =>
          i.terminatingProblems.map(
            (e) =>
              new RemoraError(e.code, e.message, {
                file: i.def.source.file,
                field: e.details.field,
              }),
          ),
        ),
      ].map((p) => ({
        code: p.code,
        message: p.message,
        file: p.details.file,
        field: p.details.field,
      })),
    };
  }

  return {
    status,
    reportWaiting,
    stopReporting() {
      if (waitTimer) clock.clearTimeout(waitTimer);
    },
  };
}
