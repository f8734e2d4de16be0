// Instances coming and going (DESIGN §5, §6): the definitions the config directory gives are
// applied as instances started (registered, their proxies ensured), changed in place, or
// stopped (readiness failed, deregistered, drained); proxies no definition asks for are stopped.
import { rm } from 'node:fs/promises';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import type { AgentSettings } from './agent.ts';
import type { CatalogServices } from './catalog-services.ts';
import { sameDefinition, type DecodeResult, type ServiceDefinition } from './definitions.ts';
import type { Discovery } from './discovery.ts';
import type { ExposedPaths } from './exposed-paths.ts';
import type { DataPaths } from './files.ts';
import type { IdentityManager } from './identity.ts';
import type { IngressGateways } from './ingress-gateways.ts';
import { newInstance, type Instance } from './instance.ts';
import type { ListenerPorts } from './listener-ports.ts';
import type { MetricsListeners } from './metrics-listeners.ts';
import type { ConsulPort } from './ports.ts';
import type { Registration } from './registration.ts';
import type { Supervisor } from './supervisor.ts';
import type { TerminatingGateways } from './terminating-gateways.ts';
import type { TrafficPlan } from './traffic-plan.ts';
import type { TransparentManager } from './transparent/index.ts';
import type { Interception } from './transparent-interception.ts';
import type { Upstreams } from './upstreams.ts';

export interface InstanceLifecycleContext {
  settings: Pick<
    AgentSettings,
    'sidecarPortMin' | 'sidecarPortMax' | 'adoptTimeoutMs' | 'drainTimeoutMs'
  >;
  consul: Pick<ConsulPort, 'deregisterService' | 'updateTtl'>;
  clock: Clock;
  logger: Logger;
  paths: Pick<DataPaths, 'instanceDir'>;
  /** The agent's instances: started instances are added here, stopped ones removed. */
  instances: Map<string, Instance>;
  supervisor: Pick<Supervisor, 'ensure' | 'status' | 'drain' | 'stop' | 'push' | 'strays'>;
  identity: Pick<IdentityManager, 'add' | 'requestIfMissing' | 'remove'>;
  discovery: Pick<Discovery, 'acquire' | 'release'>;
  transparent: Pick<TransparentManager, 'remove' | 'reconcile'>;
  catalog: Pick<CatalogServices, 'sync'>;
  ports: Pick<ListenerPorts, 'allocateSidecarPort' | 'release' | 'retainPorts'>;
  exposed: Pick<ExposedPaths, 'unplacedChecks'>;
  registration: Pick<Registration, 'register' | 'proxyReady' | 'checkIdOf'>;
  upstreams: Pick<Upstreams, 'refreshDerived' | 'release'>;
  traffic: Pick<TrafficPlan, 'release'>;
  ingress: Pick<IngressGateways, 'sync' | 'release'>;
  terminating: Pick<TerminatingGateways, 'sync' | 'release'>;
  interception: Pick<Interception, 'sync' | 'checkSharedAll'>;
  metrics: Pick<MetricsListeners, 'checkMetricsAll'>;
  isStopped(): boolean;
}

export interface InstanceLifecycle {
  /** Applies the definitions read from the config directory (one call at a time). */
  apply(result: DecodeResult): Promise<void>;
  /** Fail readiness → deregister → drain (bounded) → stop the proxy. */
  stopInstance(id: string, why: string): Promise<void>;
  /** What of the definitions last applied could not be (for `remora status`). */
  problems(): RemoraError[];
}

export function createInstanceLifecycle(o: InstanceLifecycleContext): InstanceLifecycle {
  const { settings, consul, clock, logger, paths, instances, supervisor, identity } = o;
  const { discovery, transparent, catalog, ports, exposed, registration, upstreams } = o;
  const { traffic, ingress, terminating, interception, metrics } = o;
  let problems: RemoraError[] = [];
  let firstLoad = true;

  async function startInstance(
    def: ServiceDefinition,
    previousPort: number | null = null,
  ): Promise<void> {
    const inst = newInstance(def, previousPort ?? ports.allocateSidecarPort(def));
    instances.set(def.id, inst);
    logger.info(
      { instance: def.id, service: def.name, file: def.source.file },
      `instance ${def.id} defined`,
    );
    if (def.sidecar) {
      if (inst.sidecarPort === null) {
        problems.push(
          new RemoraError(
            'REMORA_E_AGENT_DEFINITION_INVALID',
            `service definition ${def.source.file}: no free sidecar port left in ${settings.sidecarPortMin}–${settings.sidecarPortMax} for ${def.id}; set connect.sidecar_service.port`,
            {
              file: def.source.file,
              field: 'connect.sidecar_service.port',
              reason: 'no free port',
            },
          ),
        );
      }
      problems.push(...exposed.unplacedChecks(inst));
      for (const u of def.sidecar.upstreams) discovery.acquire(u.destinationName, def.id);
      catalog.sync();
      upstreams.refreshDerived(inst, false);
      ingress.sync();
      terminating.sync();
      void identity
        .add({ id: def.id, service: def.name })
        .catch((err: unknown) => logError(logger, err));
      await supervisor.ensure(def.id);
      const st = supervisor.status(def.id);
      if (st?.adopted) {
        // a proxy that outlived the previous agent: register once it says it is ready, so the
        // re-registration does not flip a serving instance to critical
        inst.holdRegistration = true;
        identity.requestIfMissing(def.id);
        void waitUntil(
          () => registration.proxyReady(def.id) || inst.stopping || o.isStopped(),
          settings.adoptTimeoutMs,
        ).then(() => {
          inst.holdRegistration = false;
          return registration.register(inst);
        });
        return;
      }
    }
    void registration.register(inst);
  }

  async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = clock.now() + timeoutMs;
    while (!check() && clock.now() < deadline) {
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 25));
    }
  }

  /** Fail readiness → deregister → drain (bounded) → stop the proxy. */
  async function stopInstance(id: string, why: string): Promise<void> {
    const inst = instances.get(id);
    if (!inst) return;
    inst.stopping = true;
    if (inst.regTimer) clock.clearTimeout(inst.regTimer);
    logger.info({ instance: id, why }, `stopping ${id}: failing readiness`);
    if (inst.def.sidecar) {
      // a readiness write in flight lands first, so the critical status below is the last word
      await inst.checkWrite?.catch(() => undefined);
      await consul
        .updateTtl(registration.checkIdOf(inst), 'critical', `stopping: ${why}`)
        .catch((err: unknown) =>
          logError(logger, err, `cannot fail the readiness check of ${id}`, 'warn'),
        );
    }
    await consul
      .deregisterService(id)
      .then(() =>
        logger.info({ instance: id, step: 'deregistered' }, `deregistered ${id} from Consul`),
      )
      .catch((err: unknown) =>
        logError(
          logger,
          new RemoraError(
            'REMORA_E_AGENT_CONSUL_UNAVAILABLE',
            `cannot deregister ${id}: ${toRemoraError(err).message}`,
            { instance: id },
          ),
          undefined,
          'warn',
        ),
      );
    if (inst.def.sidecar) {
      logger.info(
        { instance: id, step: 'draining', deadlineMs: settings.drainTimeoutMs },
        `draining the proxy of ${id}`,
      );
      const drained = await supervisor.drain(id, settings.drainTimeoutMs);
      if (!drained) {
        logError(
          logger,
          new RemoraError(
            'REMORA_E_AGENT_DRAIN_TIMEOUT',
            `proxy of ${id} did not finish draining within ${settings.drainTimeoutMs} ms; stopping it`,
            { instance: id },
          ),
          undefined,
          'warn',
        );
      }
      await supervisor.stop(id);
      logger.info({ instance: id, step: 'stopped' }, `proxy of ${id} stopped`);
      if (inst.def.sidecar.transparent) await transparent.remove(id);
      ports.release(id);
      upstreams.release(inst);
      traffic.release(inst);
      ingress.release(inst);
      terminating.release(inst);
      // the room it leaves goes to instances that were over the limit
      for (const other of instances.values())
        if (other !== inst && other.derivedLimit) upstreams.refreshDerived(other, true);
      identity.remove(id);
    }
    instances.delete(id);
    catalog.sync();
    ingress.sync();
    terminating.sync();
    interception.checkSharedAll();
    metrics.checkMetricsAll();
  }

  async function apply(result: DecodeResult): Promise<void> {
    if (o.isStopped()) return;
    problems = [...result.problems];
    for (const p of result.problems) logError(logger, p, undefined, 'warn');
    const next = new Map(result.services.map((d) => [d.id, d]));
    const removals: Promise<void>[] = [];
    for (const [id, inst] of instances) {
      const d = next.get(id);
      if (!d) removals.push(stopInstance(id, 'definition removed'));
      else if (
        d.name !== inst.def.name ||
        !!d.sidecar !== !!inst.def.sidecar ||
        d.kind !== inst.def.kind
      ) {
        removals.push(
          stopInstance(id, 'definition changed service name').then(() => startInstance(d)),
        );
        next.delete(id);
      }
    }
    await Promise.all(removals);
    for (const [id, d] of next) {
      const inst = instances.get(id);
      if (!inst) {
        await startInstance(d);
      } else if (!sameDefinition(inst.def, d)) {
        // same identity: re-register and send the proxy a new snapshot, keep the process
        const old = inst.def;
        inst.def = d;
        if (d.sidecar?.port !== old.sidecar?.port) inst.sidecarPort = ports.allocateSidecarPort(d);
        problems.push(...exposed.unplacedChecks(inst));
        for (const u of d.sidecar?.upstreams ?? []) discovery.acquire(u.destinationName, id);
        for (const u of old.sidecar?.upstreams ?? []) {
          if (!d.sidecar?.upstreams.some((x) => x.destinationName === u.destinationName))
            discovery.release(u.destinationName, id);
        }
        logger.info(
          { instance: id },
          `definition of ${id} changed; updating registration and proxy config`,
        );
        inst.registered = false;
        void registration.register(inst);
        catalog.sync();
        upstreams.refreshDerived(inst, false);
        supervisor.push(id);
        ports.retainPorts(inst);
        if (old.sidecar?.transparent && !d.sidecar?.transparent) void transparent.remove(id);
        else interception.sync(inst);
      } else {
        inst.def = d; // source position may have moved
      }
    }
    interception.checkSharedAll();
    metrics.checkMetricsAll();
    if (firstLoad) {
      firstLoad = false;
      // chains left by an earlier run for instances that are no longer transparent
      void transparent.reconcile(
        [...instances.values()].filter((i) => i.def.sidecar?.transparent).map((i) => i.def.id),
      );
      // proxies left running for instances no definition asks for any more
      for (const id of await supervisor.strays(new Set(instances.keys()))) {
        logger.info(
          { instance: id },
          `proxy for ${id} has no definition any more; deregistering and stopping it`,
        );
        await consul.deregisterService(id).catch(() => undefined);
        await supervisor.ensure(id);
        await supervisor.drain(id, settings.drainTimeoutMs);
        await supervisor.stop(id);
        await rm(paths.instanceDir(id), { recursive: true, force: true });
      }
    }
  }

  return { apply, stopInstance, problems: () => problems };
}
