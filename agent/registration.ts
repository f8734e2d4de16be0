// Registration in Consul (DESIGN §5): each instance's service and sidecar registration, its
// readiness check (a TTL check that says whether its proxy is ready), and the retries and
// refreshes that keep both up to date.
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { backoffDelay, type Clock } from '../lib/util/index.ts';
import type { AgentSettings } from './agent.ts';
import type { CentralConfig } from './central-config.ts';
import { NODE_META_KEY, type ServiceDefinition } from './definitions.ts';
import { wantedExpose, type ExposedPaths } from './exposed-paths.ts';
import type { IdentityManager } from './identity.ts';
import { INGRESS_GATEWAY } from './ingress.ts';
import type { Instance } from './instance.ts';
import type { ListenerPorts } from './listener-ports.ts';
import type { ConsulPort } from './ports.ts';
import type { Supervisor } from './supervisor.ts';
import { leafId } from './terminating-gateways.ts';

/** Consul ID of an instance's sidecar (Consul's own naming). */
export function sidecarId(instanceId: string): string {
  return `${instanceId}-sidecar-proxy`;
}

/** ID of the TTL check that tells Consul whether the instance's proxy is ready. */
export function readinessCheckId(instanceId: string): string {
  return `remora-ready:${sidecarId(instanceId)}`;
}

/** ID of the TTL check of an ingress gateway: on the gateway service itself (it has no sidecar). */
export function gatewayCheckId(instanceId: string): string {
  return `remora-ready:${instanceId}`;
}

/** The Consul registration body (snake_case JSON) for an instance and its sidecar. */
export function registrationFor(
  def: ServiceDefinition,
  o: {
    node: string;
    sidecarPort: number | null;
    advertiseAddress: string;
    checkTtlMs: number;
    ready: boolean;
  },
): Record<string, unknown> {
  const meta = { ...def.meta, [NODE_META_KEY]: o.node };
  if (def.kind !== undefined) {
    // as Consul holds one: the gateway is the service (kind ingress-gateway or
    // terminating-gateway), no sidecar; its readiness check is the proxy's
    const address = def.address ?? (o.advertiseAddress || null);
    return {
      kind: def.kind,
      id: def.id,
      name: def.name,
      port: def.port,
      tags: def.tags,
      meta,
      ...(address ? { address } : {}),
      checks: [
        ...def.checks,
        {
          CheckID: gatewayCheckId(def.id),
          Name: `Remora ${def.kind === INGRESS_GATEWAY ? 'ingress' : 'terminating'} gateway ready`,
          TTL: `${Math.max(1, Math.round(o.checkTtlMs / 1000))}s`,
          Status: o.ready ? 'passing' : 'critical',
        },
      ],
    };
  }
  const body: Record<string, unknown> = {
    id: def.id,
    name: def.name,
    port: def.port,
    tags: def.tags,
    meta,
  };
  if (def.address) body.address = def.address;
  if (def.checks.length > 0) body.checks = def.checks;
  if (def.sidecar && o.sidecarPort !== null) {
    const sc = def.sidecar;
    const sidecar: Record<string, unknown> = {
      id: sidecarId(def.id),
      name: `${def.name}-sidecar-proxy`,
      port: o.sidecarPort,
      // Consul's sidecar_service inherits the parent's tags and meta unless it sets its own; this
      // one sets the node key, so it carries the parent's meta itself (resolver subsets filter
      // the sidecars' entries on them)
      tags: def.tags,
      meta,
      checks: [
        {
          CheckID: readinessCheckId(def.id),
          Name: 'Remora proxy ready',
          TTL: `${Math.max(1, Math.round(o.checkTtlMs / 1000))}s`,
          Status: o.ready ? 'passing' : 'critical',
        },
      ],
      proxy: {
        destination_service_name: def.name,
        destination_service_id: def.id,
        local_service_address: sc.localServiceAddress,
        local_service_port: sc.localServicePort,
        // only what the definition says: consumers resolve the rest from Consul's config
        // entries themselves, so a changed service-defaults needs no re-registration
        ...(sc.protocolGiven ? { config: { protocol: sc.protocol } } : {}),
        upstreams: sc.upstreams.map((u) => ({
          destination_type: 'service',
          destination_name: u.destinationName,
          local_bind_address: u.localBindAddress,
          local_bind_port: u.localBindPort,
          ...(u.protocolGiven ? { config: { protocol: u.protocol } } : {}),
        })),
        ...(sc.expose.length > 0
          ? {
              expose: {
                paths: sc.expose.map((p) => ({
                  path: p.path,
                  local_path_port: p.localPathPort,
                  listener_port: p.listenerPort,
                  protocol: p.protocol,
                })),
              },
            }
          : {}),
      },
    };
    const address = sc.address ?? (o.advertiseAddress || null);
    if (address) sidecar.address = address;
    body.connect = { sidecar_service: sidecar };
  }
  return body;
}

export interface RegistrationContext {
  settings: Pick<AgentSettings, 'node' | 'advertiseAddress' | 'checkTtlMs'>;
  consul: Pick<ConsulPort, 'registerService' | 'updateTtl'>;
  clock: Clock;
  random: () => number;
  logger: Logger;
  instances: ReadonlyMap<string, Instance>;
  central: Pick<CentralConfig, 'expose'>;
  supervisor: Pick<Supervisor, 'status'>;
  identity: Pick<IdentityManager, 'requestIfMissing'>;
  exposed: Pick<ExposedPaths, 'learnConsulAgentAddress' | 'exposeKey' | 'withExposedChecks'>;
  ports: Pick<ListenerPorts, 'withUpstreamPorts'>;
  isStopped(): boolean;
}

export interface Registration {
  /** Registers the instance (again), retrying with backoff until Consul takes it. */
  register(inst: Instance): Promise<void>;
  /** Brings the readiness check up to date; registers first when the instance is not registered. */
  syncCheck(inst: Instance): void;
  /** Refreshes every instance's check now and every third of the check's TTL. */
  refreshChecks(): void;
  /** Stops refreshing the checks (the agent stops). */
  stop(): void;
  /** Registers again the instances whose exposed paths or checks changed since. */
  reregisterExposed(): void;
  /** The readiness check of an instance: its sidecar's, or a gateway's own. */
  checkIdOf(inst: Instance): string;
  proxyReady(id: string): boolean;
}

export function createRegistration(o: RegistrationContext): Registration {
  const { settings, consul, clock, logger, instances, central, supervisor, identity } = o;
  const { exposed, ports } = o;
  let ttlTimer: NodeJS.Timeout | null = null;

  function stamp(e: RemoraError): { code: string; message: string; at: string } {
    return { code: e.code, message: e.message, at: new Date(clock.now()).toISOString() };
  }

  /** The readiness check of an instance: its sidecar's, or a gateway's own. */
  function checkIdOf(inst: Instance): string {
    return inst.def.kind !== undefined
      ? gatewayCheckId(inst.def.id)
      : readinessCheckId(inst.def.id);
  }

  function proxyReady(id: string): boolean {
    return supervisor.status(id)?.ready ?? false;
  }

  async function register(inst: Instance): Promise<void> {
    if (o.isStopped() || inst.stopping || inst.registering) return;
    inst.registering = true;
    if (inst.regTimer) clock.clearTimeout(inst.regTimer);
    inst.regTimer = null;
    try {
      if (wantedExpose(central, inst.def).checks.length) await exposed.learnConsulAgentAddress();
      const ready = inst.def.sidecar ? proxyReady(inst.def.id) : true;
      inst.registeredExpose = exposed.exposeKey(inst);
      await consul.registerService(
        registrationFor(exposed.withExposedChecks(inst, ports.withUpstreamPorts(inst)), {
          node: settings.node,
          sidecarPort: inst.sidecarPort,
          advertiseAddress: settings.advertiseAddress,
          checkTtlMs: settings.checkTtlMs,
          ready,
        }),
      );
      if (inst.stopping) return;
      // the registration carried the readiness read before it was sent; the proxy may have
      // changed its mind since, so the check is written again with the state as it is now
      if (inst.def.sidecar) await writeCheck(inst);
      if (!inst.registered || inst.regAttempt > 0) {
        logger.info(
          { instance: inst.def.id, sidecarPort: inst.sidecarPort },
          `registered ${inst.def.id} in Consul`,
        );
      }
      inst.registered = true;
      inst.regAttempt = 0;
      inst.registrationError = null;
      if (inst.def.sidecar) identity.requestIfMissing(inst.def.id);
      for (const n of inst.terminating) identity.requestIfMissing(leafId(inst.def.id, n));
    } catch (err) {
      inst.registered = false;
      const e = new RemoraError(
        'REMORA_E_AGENT_CONSUL_UNAVAILABLE',
        `cannot register ${inst.def.id} with Consul: ${toRemoraError(err).message}; retrying`,
        { instance: inst.def.id },
        { cause: err },
      );
      inst.registrationError = stamp(e);
      if (inst.regAttempt % 10 === 0) logError(logger, e, undefined, 'warn');
      const delay = backoffDelay(inst.regAttempt, { baseMs: 250, maxMs: 10_000, random: o.random });
      inst.regAttempt += 1;
      if (!o.isStopped() && !inst.stopping) {
        inst.regTimer = clock.setTimeout(() => {
          inst.regTimer = null;
          void register(inst);
        }, delay);
      }
    } finally {
      inst.registering = false;
    }
    // an entry changed while the registration was on its way
    if (inst.registered && !inst.stopping && exposed.exposeKey(inst) !== inst.registeredExpose)
      void register(inst);
  }

  /**
   * Writes the instance's readiness check with the proxy's readiness as it is when the write is
   * sent. One write at a time per instance: a change during a write sends one more, so two writes
   * can never reach Consul in the wrong order and leave a stale status behind.
   */
  function writeCheck(inst: Instance): Promise<void> {
    inst.checkAgain = true;
    inst.checkWrite ??= (async () => {
      try {
        while (inst.checkAgain && !inst.stopping && !o.isStopped()) {
          inst.checkAgain = false;
          const ready = proxyReady(inst.def.id);
          await consul.updateTtl(
            checkIdOf(inst),
            ready ? 'passing' : 'critical',
            ready ? 'proxy ready' : inst.notReadyReason,
          );
        }
      } finally {
        inst.checkWrite = null;
      }
    })();
    return inst.checkWrite;
  }

  /** Brings the readiness check up to date; registers first when the instance is not registered. */
  function syncCheck(inst: Instance): void {
    if (!inst.def.sidecar) return;
    if (!inst.registered) {
      // a registration in flight writes the check itself once Consul has the service; if that
      // write is already under way, it goes round once more with the new state
      if (inst.checkWrite) inst.checkAgain = true;
      else if (!inst.registering && !inst.regTimer && !inst.holdRegistration) void register(inst);
      return;
    }
    writeCheck(inst).catch((err: unknown) => {
      // Consul restarted or lost the registration: register again (idempotent)
      inst.registered = false;
      inst.registrationError = stamp(toRemoraError(err));
      void register(inst);
    });
  }

  function refreshChecks(): void {
    for (const inst of instances.values()) {
      if (inst.stopping) continue;
      if (inst.def.sidecar) syncCheck(inst);
      else if (!inst.registered && !inst.registering && !inst.regTimer) void register(inst);
    }
    if (!o.isStopped())
      ttlTimer = clock.setTimeout(
        refreshChecks,
        Math.max(250, Math.floor(settings.checkTtlMs / 3)),
      );
  }

  /**
   * Registers again the instances whose exposed paths or checks changed since their last
   * registration (an entry's `Expose` written, changed or deleted; an instance that came or went
   * and freed or took a port).
   */
  function reregisterExposed(): void {
    for (const inst of instances.values())
      if (inst.registered && !inst.stopping && exposed.exposeKey(inst) !== inst.registeredExpose)
        void register(inst);
  }

  return {
    register,
    syncCheck,
    refreshChecks,
    stop() {
      if (ttlTimer) clock.clearTimeout(ttlTimer);
    },
    reregisterExposed,
    checkIdOf,
    proxyReady,
  };
}
