// The host agent (DESIGN §1, §5, §6): service definitions in → Consul registrations, workload
// certificates, intentions, upstream endpoints and one supervised proxy per instance out.
// Everything external comes in through options so the agent can be embedded (`remora dev`)
// and tested with fakes.
import { rm } from 'node:fs/promises';
import { formatSpiffeId } from '../lib/identity/index.ts';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { type Clock } from '../lib/util/index.ts';
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import {
  type ProxySnapshot,
  type TracingConfig,
  type AccessLogConfig,
  type MeshTlsConfig,
} from '../lib/proxy-api/index.ts';
import {
  createCentralConfig,
  failoverTargets,
  parseTargetName,
  resolveMutualTlsMode,
  resolveTarget,
  type CentralConfig,
} from './central-config.ts';
import { createJwksKeeper, type JwksKeeper } from './jwt-providers.ts';
import type { JwtProvider } from '../lib/jwt/index.ts';
import { createConfigDir, type ConfigDir } from './config-dir.ts';
import { sameDefinition, type DecodeResult, type ServiceDefinition } from './definitions.ts';
import { dataPaths, ensureDir, writeFileAtomic, writesSettled, type DataPaths } from './files.ts';
import { createIdentityManager, type IdentityManager, type IdentityStatus } from './identity.ts';
import {
  createIntentionsMirror,
  createRootsMirror,
  type Mirror,
  type MirrorStatus,
} from './control-state.ts';
import { createDiscovery, externalName, type Discovery, type UpstreamStatus } from './discovery.ts';
import {
  createSupervisor,
  type ProcessOps,
  type ProxyStatus,
  type Supervisor,
} from './supervisor.ts';
import type { ConsulPort, ControlPort, TrustBundle } from './ports.ts';
import { createProtocols, hashPoliciesField, listenerKey } from './protocols.ts';
import { createTrafficPlan } from './traffic-plan.ts';
import { createCatalogServices } from './catalog-services.ts';
import { createIngressGateways } from './ingress-gateways.ts';
import { createTerminatingGateways, ownerOf } from './terminating-gateways.ts';
import { createListenerPorts } from './listener-ports.ts';
import { createExposedPaths } from './exposed-paths.ts';
import { createMetricsListeners } from './metrics-listeners.ts';
import { createRegistration } from './registration.ts';
import { createUpstreams } from './upstreams.ts';
import { createInterception } from './transparent-interception.ts';
import { createWarningKeeper, gatewayBindAddress, newInstance, type Instance } from './instance.ts';
import {
  createExecFileRunner,
  createTransparentManager,
  type TransparentManager,
  type TransparentStatus,
} from './transparent/index.ts';
import { INGRESS_GATEWAY } from './ingress.ts';
import { TERMINATING_GATEWAY } from './terminating.ts';

export { DEFAULT_TRANSPARENT_DERIVED_MAX } from './upstreams.ts';
export { DEFAULT_TRANSPARENT_PORT_MAX, DEFAULT_TRANSPARENT_PORT_MIN } from './listener-ports.ts';
export { DEFAULT_EXPOSE_PORT_MAX, DEFAULT_EXPOSE_PORT_MIN } from './exposed-paths.ts';
export { gatewayCheckId, readinessCheckId, registrationFor, sidecarId } from './registration.ts';

export interface AgentSettings {
  datacenter: string;
  node: string;
  configDir: string;
  dataDir: string;
  /** First admin port for proxies; 0 lets each proxy pick a free one. */
  adminPortBase: number;
  drainTimeoutMs: number;
  intentionsRefreshMs: number;
  proxyBindAddress: string;
  /** Registered sidecar address; empty for Consul's node address. */
  advertiseAddress: string;
  sidecarPortMin: number;
  sidecarPortMax: number;
  checkTtlMs: number;
  adoptTimeoutMs: number;
  tracing: TracingConfig;
  /** Debounce of config-directory events; 0 disables watching (SIGHUP / reload() still work). */
  watchDebounceMs: number;
  /** Range of the transparent listeners' ports (docs/transparent.md). */
  transparentPortMin?: number;
  transparentPortMax?: number;
  /** Most derived upstreams of all transparent instances together (docs/transparent.md). */
  transparentDerivedMax?: number;
  /** Range of the listener ports of exposed checks (`proxy.expose.checks`, docs/agent.md). */
  exposePortMin?: number;
  exposePortMax?: number;
  /** User whose connections the interception rules let pass (the proxies'); default: the agent's. */
  transparentProxyUid?: number;
  /**
   * Consul's DNS domains (`consul.dnsDomains`): an ingress gateway with TLS asks for
   * `*.ingress.<domain>` and `*.ingress.<dc>.<domain>` of each. Default `['consul']`.
   */
  consulDnsDomains?: readonly string[];
}

export interface AgentOptions {
  settings: AgentSettings;
  consul: ConsulPort;
  control: ControlPort;
  processes: ProcessOps;
  clock: Clock;
  random: () => number;
  logger: Logger;
  /** Installs the iptables rules of transparent instances; default: iptables through execFile. */
  transparent?: TransparentManager;
}

export interface InstanceStatus {
  id: string;
  service: string;
  file: string;
  sidecarPort: number | null;
  registered: boolean;
  registrationError: { code: string; message: string; at: string } | null;
  proxy: ProxyStatus | null;
  certificate: IdentityStatus | null;
  /** The protocol the instance's proxy serves: its definition's, or Consul's config entries'. */
  protocol: string | null;
  /**
   * Whether its sidecar port also takes plain connections (docs/agent.md, "Permissive mutual
   * TLS"), and what decided it: its definition, service-defaults, proxy-defaults, or the default.
   */
  mutualTls?: { mode: 'strict' | 'permissive'; source: string } | null;
  upstreams: {
    destination: string;
    localBindPort: number;
    protocol: string;
    /** The instances its calls may go to (of its default subset, or of its redirect's target). */
    endpoints: number;
    synced: boolean;
    /** True for an upstream derived from intentions (transparent mode). */
    derived: boolean;
    /** Where its resolver redirects its calls (a `targetName`), when it does. */
    redirectedTo?: string;
    /** Where its calls go when that target has no endpoint left, in order. */
    failover?: string[];
  }[];
  /**
   * Transparent-mode conditions that work but may not do what the operator means: services left
   * out over `transparentDerivedMax`, or instances sharing the namespace without `app_user`.
   */
  warnings: { code: string; message: string; at: string }[];
  /** Transparent interception state; null for an instance that does not ask for it. */
  transparent: TransparentStatus | null;
  /** The gateway kind for a gateway (absent for a service and its sidecar). */
  kind?: 'ingress-gateway' | 'terminating-gateway';
  /** An ingress gateway's listeners as applied from its entry (docs/gateways.md). */
  listeners?: {
    port: number;
    protocol: string;
    /** True when the listener serves TLS (docs/gateways.md, "TLS"). */
    tls?: boolean;
    services: { name: string; hosts: string[] }[];
  }[];
  /** A terminating gateway's linked services as applied from its entry (docs/gateways.md). */
  linked?: {
    name: string;
    protocol: string;
    /** plain TCP, one-way TLS (CAFile) or mutual TLS (CAFile, CertFile, KeyFile). */
    origination: 'plain' | 'tls' | 'mtls';
    /** Its healthy catalog instances the gateway forwards to. */
    endpoints: number;
    /** Whether the gateway holds its certificate (and so serves it). */
    certificate: boolean;
    /** Why it is not served, when it is not. */
    error?: { code: string; message: string };
  }[];
}

export interface AgentStatus {
  node: string;
  datacenter: string;
  startedAt: string;
  waitingFor: string[];
  trustBundle: MirrorStatus;
  intentions: MirrorStatus & { revision: number | null };
  instances: InstanceStatus[];
  upstreams: UpstreamStatus[];
  problems: { code: string; message: string; file: unknown; field: unknown }[];
}

export interface StopOptions {
  /** Leave registrations and proxies running for the next agent (upgrade restart). */
  keepProxies?: boolean;
}

export interface Agent {
  start(): Promise<void>;
  /** Re-reads the definition directory (SIGHUP). */
  reload(): Promise<void>;
  stop(options?: StopOptions): Promise<void>;
  status(): AgentStatus;
  readonly paths: DataPaths;
}

export function createAgent(o: AgentOptions): Agent {
  const { settings: s, consul, control, clock, logger } = o;
  const paths = dataPaths(s.dataDir);
  const instances = new Map<string, Instance>();
  const unsubscribe: (() => void)[] = [];
  let problems: RemoraError[] = [];
  let waitTimer: NodeJS.Timeout | null = null;
  let lastWaiting = '';
  let started = false;
  let stopped = false;
  let firstLoad = true;
  const startedAt = new Date(clock.now()).toISOString();
  const keepWarning = createWarningKeeper({ logger, clock });
  let applying: Promise<void> = Promise.resolve();
  const transparent: TransparentManager =
    o.transparent ??
    createTransparentManager({
      runner: createExecFileRunner(),
      node: s.node,
      logger,
      clock,
      markerPath: `${s.dataDir}/transparent-rules`,
    });

  const roots: Mirror<TrustBundle> = createRootsMirror({
    clock,
    random: o.random,
    logger,
    fetch: () => control.roots(),
    cachePath: paths.cache('trust-bundle'),
    refreshMs: s.intentionsRefreshMs,
    onChange(next, rotated) {
      logger.info(
        {
          trustDomain: next.trustDomain,
          activeRootId: next.activeRootId,
          roots: next.roots.length,
          rotated,
        },
        'trust bundle updated',
      );
      identity.trustBundleKnown();
      if (rotated) identity.renewAll('root rotation');
      pushAll();
    },
  });

  const intentions: Mirror<IntentionsSnapshot> = createIntentionsMirror({
    clock,
    random: o.random,
    logger,
    fetch: () => control.intentions(),
    cachePath: paths.cache('intentions'),
    refreshMs: s.intentionsRefreshMs,
    onChange(next) {
      logger.info(
        { revision: next.revision, intentions: next.intentions.length },
        'intentions updated',
      );
      // an instance whose derived upstreams changed is pushed and gets its rules rebuilt
      for (const inst of instances.values()) upstreams.refreshDerived(inst, true);
      pushAll();
    },
  });

  const identity: IdentityManager = createIdentityManager({
    paths,
    datacenter: s.datacenter,
    sign: (req) => control.sign(req),
    trustDomain: () => roots.current()?.trustDomain ?? null,
    clock,
    random: o.random,
    logger,
    onChange: (id) => supervisor.push(ownerOf(id)),
    dnsNames: (id) => ingress.dnsNames(id),
    registered(id) {
      // an adopted proxy's instance is still listed from before; its registration waits for the proxy
      const inst = instances.get(ownerOf(id));
      return inst !== undefined && (inst.registered || inst.holdRegistration);
    },
  });

  const discovery: Discovery = createDiscovery({
    consul,
    paths,
    clock,
    logger,
    onChange(service) {
      for (const inst of instances.values()) {
        if (
          inst.derived.includes(service) ||
          inst.targets.includes(service) ||
          inst.ingress.includes(service) ||
          inst.terminating.some((n) => externalName(n) === service) ||
          inst.def.sidecar?.upstreams.some((u) => u.destinationName === service)
        ) {
          supervisor.push(inst.def.id);
          interception.sync(inst);
        }
      }
    },
  });

  /** Key sets of jwt-provider entries; a remote set's new keys reach every proxy. */
  const jwks: JwksKeeper = createJwksKeeper({
    logger,
    onChange() {
      for (const inst of instances.values()) supervisor.push(inst.def.id);
    },
  });

  const central: CentralConfig = createCentralConfig({
    consul,
    paths,
    logger,
    datacenter: s.datacenter,
    onChange() {
      // a protocol an instance did not name itself may have changed: new snapshots and rules
      for (const inst of instances.values()) {
        supervisor.push(inst.def.id);
        interception.sync(inst);
      }
      // an Expose block changes what the sidecar registration carries
      registration.reregisterExposed();
    },
  });

  const protocols = createProtocols({ central, discovery });
  const traffic = createTrafficPlan({
    datacenter: s.datacenter,
    logger,
    central,
    discovery,
    protocols,
  });

  const catalog = createCatalogServices({
    consul,
    clock,
    logger,
    paths,
    instances,
    isStopped: () => stopped,
    onChange() {
      for (const inst of instances.values()) upstreams.refreshDerived(inst, true);
      // a gateway's `*` services are the catalog's
      ingress.push();
      terminating.push();
    },
    onLeft() {
      for (const inst of instances.values()) upstreams.refreshDerived(inst, true);
    },
  });

  const supervisor: Supervisor = createSupervisor({
    paths,
    ops: o.processes,
    clock,
    random: o.random,
    logger,
    adoptTimeoutMs: s.adoptTimeoutMs,
    adminPortBase: s.adminPortBase,
    snapshotFor,
    onApplied(id, snapshot) {
      const inst = instances.get(id);
      if (!inst) return;
      const names = snapshot.upstreams.map((u) => listenerKey(u));
      const was = inst.listening;
      if (was && names.length === was.size && names.every((n) => was.has(n))) return;
      inst.listening = new Set(names);
      interception.sync(inst);
    },
    onReadyChange(id, ready, reason) {
      logger.info(
        { instance: id, ready, reason },
        `proxy for ${id} is ${ready ? 'ready' : `not ready (${reason})`}`,
      );
      const inst = instances.get(id);
      if (inst && !ready) inst.notReadyReason = reason;
      if (inst && !inst.stopping) registration.syncCheck(inst);
      if (inst && ready && !inst.transparentArmed) {
        inst.transparentArmed = true;
        interception.sync(inst);
      }
    },
  });

  const configDir: ConfigDir = createConfigDir({
    dir: s.configDir,
    debounceMs: s.watchDebounceMs,
    onLoad: (result) => {
      applying = applying
        .then(() => apply(result))
        .catch((err: unknown) => logError(logger, err, 'applying definitions failed'));
    },
  });

  const ingress = createIngressGateways({
    settings: s,
    consul,
    logger,
    instances,
    central,
    discovery,
    identity,
    supervisor,
    protocols,
    catalog,
    isStopped: () => stopped,
  });

  const terminating = createTerminatingGateways({
    consul,
    clock,
    logger,
    instances,
    central,
    discovery,
    identity,
    supervisor,
    catalog,
    isStopped: () => stopped,
  });

  const ports = createListenerPorts({ settings: s, instances, central });
  const exposed = createExposedPaths({
    settings: s,
    consul,
    logger,
    instances,
    central,
    ports,
    keepWarning,
    pushAll,
  });
  const registration = createRegistration({
    settings: s,
    consul,
    clock,
    random: o.random,
    logger,
    instances,
    central,
    supervisor,
    identity,
    exposed,
    ports,
    isStopped: () => stopped,
  });
  const metrics = createMetricsListeners({
    instances,
    central,
    ports,
    keepWarning,
    supervisor,
    registration,
  });

  const upstreams = createUpstreams({
    settings: s,
    logger,
    instances,
    intentions,
    discovery,
    central,
    protocols,
    catalog,
    ingress,
    ports,
    supervisor,
    keepWarning,
    syncTransparent: (inst) => interception.sync(inst),
  });
  const interception = createInterception({
    settings: s,
    instances,
    transparent,
    discovery,
    central,
    ports,
    upstreams,
    keepWarning,
    isStopped: () => stopped,
  });

  function snapshotFor(id: string): Omit<ProxySnapshot, 'version'> | null {
    const inst = instances.get(id);
    const sc = inst?.def.sidecar;
    const bundle = roots.current();
    const cert = identity.get(id);
    const policy = intentions.current();
    if (!inst || !sc || inst.sidecarPort === null || !bundle || !cert || !policy) return null;
    // a gateway's listeners are not guessed either: it starts with its entry's
    const gateway = inst.def.kind === INGRESS_GATEWAY;
    if (gateway && !ingress.known()) return null;
    const isTerminating = inst.def.kind === TERMINATING_GATEWAY;
    if (isTerminating && !terminating.known()) return null;
    if (isTerminating) {
      terminating.plan(inst);
      if (inst.leavesLoading.size > 0) return null;
    }
    // an upstream whose endpoints are not known yet would reach the proxy as an empty set
    const list = upstreams.upstreamsOf(inst);
    const plans = new Map(list.map((u) => [u.destinationName, traffic.planOf(inst, u)]));
    traffic.followTargets(inst, plans);
    if (!list.every((u) => discovery.settled(u.destinationName))) return null;
    if (!inst.targets.every((n) => discovery.settled(n))) return null;
    // what Consul's config entries decide is not guessed: no proxy starts as tcp and turns http
    // a moment later (known once Consul answered or failed, or from the cache)
    if (!central.settled()) return null;
    return {
      instance: {
        id,
        service: inst.def.name,
        datacenter: s.datacenter,
        node: s.node,
        trustDomain: bundle.trustDomain,
        spiffeId: cert.spiffeId,
      },
      inbound: {
        // a gateway binds nothing here (no mTLS listener): its registered address and port
        bindAddress:
          gateway || isTerminating
            ? gatewayBindAddress(inst, s.proxyBindAddress)
            : s.proxyBindAddress,
        bindPort: inst.sidecarPort,
        localAppAddress: sc.localServiceAddress,
        localAppPort: sc.localServicePort,
        protocol: protocols.inboundProtocol(inst),
        // the definition's proxy config wins over the service's service-defaults, key by key
        ...central.inbound(inst.def.name),
        ...sc.inbound,
        // strict is left out: the default, and what an older proxy knows
        ...(mutualTlsOf(inst).mode === 'permissive'
          ? { mutualTlsMode: 'permissive' as const }
          : {}),
        ...(central.sanitizeClientCert() ? { sanitizeClientCert: true } : {}),
      },
      upstreams: list.map((u) => {
        const plan = plans.get(u.destinationName)!;
        // a redirected upstream keeps its name and listener, and reaches the redirect's target
        const main = parseTargetName(plan.main);
        return {
          destinationName: u.destinationName,
          destinationSpiffeId: formatSpiffeId({
            trustDomain: bundle.trustDomain,
            datacenter: s.datacenter,
            service: main.service,
          }),
          localBindAddress: u.localBindAddress,
          localBindPort: ports.upstreamPort(inst, u.destinationName, u.localBindPort),
          protocol: u.protocol,
          loadBalancer: u.loadBalancer,
          ...hashPoliciesField(u),
          resilience: u.resilience,
          endpoints: traffic.endpointsOf(main.service, main.subset, bundle.trustDomain),
          ...traffic.trafficFields(u, plan, bundle.trustDomain),
          // a gateway's services are reached through its listeners only
          ...(gateway ? { listener: false as const } : {}),
        };
      }),
      tls: { certPem: cert.certPem, keyPem: cert.keyPem, rootsPem: bundle.roots.map((r) => r.pem) },
      intentions: policy,
      tracing: s.tracing,
      ...interception.snapshotField(inst),
      ...accessLogsField(),
      ...exposed.exposeField(inst),
      ...meshTlsField(),
      ...jwtProvidersField(),
      ...(gateway ? { ingress: ingress.field(inst, list) } : {}),
      ...(isTerminating ? { terminating: terminating.field(inst) } : {}),
      ...metrics.metricsField(inst),
    };
  }

  /** The jwt-provider entries with their keys, when Consul holds any (intentions refer to them). */
  function jwtProvidersField(): { jwtProviders?: JwtProvider[] } {
    const settings = central.jwtProviders();
    const providers = jwks.providers(settings);
    return providers.length > 0 ? { jwtProviders: providers } : {};
  }

  /**
   * The instance's mutual TLS mode (docs/agent.md, "Permissive mutual TLS"); a permissive one
   * that does not apply is kept as the instance's warning, logged once per change.
   */
  function mutualTlsOf(inst: Instance): ReturnType<typeof resolveMutualTlsMode> {
    const r = resolveMutualTlsMode({
      instanceId: inst.def.id,
      service: inst.def.name,
      registration: inst.def.sidecar?.mutualTlsMode ?? null,
      central: central.mutualTlsMode(inst.def.name),
      allowPermissive: central.allowPermissiveMutualTls(),
      transparent: inst.def.sidecar?.transparent === true,
    });
    const code = r.problem?.code ?? 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_ALLOWED';
    inst.mtlsWarning = keepWarning(inst.mtlsWarning, code, r.problem?.message ?? null, {
      instance: inst.def.id,
      source: r.source,
    });
    return r;
  }

  /** The `mesh` entry's TLS versions and suites, when it sets any. */
  function meshTlsField(): { meshTls?: MeshTlsConfig } {
    const tls = central.meshTls();
    return tls ? { meshTls: tls } : {};
  }

  /** proxy-defaults `AccessLogs`, when on (an absent field keeps older proxies working). */
  function accessLogsField(): { accessLogs?: AccessLogConfig } {
    const logs = central.accessLogs();
    return logs ? { accessLogs: logs } : {};
  }

  function pushAll(): void {
    for (const id of instances.keys()) supervisor.push(id);
  }

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
            `service definition ${def.source.file}: no free sidecar port left in ${s.sidecarPortMin}–${s.sidecarPortMax} for ${def.id}; set connect.sidecar_service.port`,
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
          () => registration.proxyReady(def.id) || inst.stopping || stopped,
          s.adoptTimeoutMs,
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
        { instance: id, step: 'draining', deadlineMs: s.drainTimeoutMs },
        `draining the proxy of ${id}`,
      );
      const drained = await supervisor.drain(id, s.drainTimeoutMs);
      if (!drained) {
        logError(
          logger,
          new RemoraError(
            'REMORA_E_AGENT_DRAIN_TIMEOUT',
            `proxy of ${id} did not finish draining within ${s.drainTimeoutMs} ms; stopping it`,
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
    if (stopped) return;
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
        await supervisor.drain(id, s.drainTimeoutMs);
        await supervisor.stop(id);
        await rm(paths.instanceDir(id), { recursive: true, force: true });
      }
    }
  }

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
    if (!stopped) waitTimer = clock.setTimeout(reportWaiting, 2000);
  }

  return {
    paths,
    async start() {
      if (started) return;
      started = true;
      await ensureDir(s.dataDir);
      await supervisor.listen();
      await writeFileAtomic(paths.agentPid, `${process.pid}\n`, 0o644);
      unsubscribe.push(control.onRootsChanged((b) => roots.offer(b)));
      unsubscribe.push(control.onIntentionsChanged((snap) => intentions.offer(snap)));
      await Promise.all([roots.start(), intentions.start()]);
      central.start();
      await configDir.load();
      await applying;
      if (s.watchDebounceMs > 0) configDir.watch();
      registration.refreshChecks();
      terminating.pollFiles();
      reportWaiting();
      logger.info({ instances: instances.size, configDir: s.configDir }, 'agent started');
    },
    async reload() {
      await configDir.load();
      await applying;
    },
    async stop(options = {}) {
      if (stopped) return;
      configDir.close();
      await applying;
      stopped = true;
      registration.stop();
      terminating.stopPollingFiles();
      if (waitTimer) clock.clearTimeout(waitTimer);
      for (const inst of instances.values()) if (inst.regTimer) clock.clearTimeout(inst.regTimer);
      for (const u of unsubscribe) u();
      roots.stop();
      intentions.stop();
      identity.stop();
      if (options.keepProxies) {
        logger.info(
          'stopping the agent; proxies and registrations stay for the next agent to adopt',
        );
        for (const id of instances.keys()) supervisor.release(id);
      } else {
        await Promise.all([...instances.keys()].map((id) => stopInstance(id, 'agent stopping')));
      }
      catalog.stop();
      // with keepProxies the gateways were not stopped: their entries' watches end here
      ingress.stop();
      terminating.stop();
      catalog.clearLeaving();
      discovery.stop();
      central.stop();
      jwks.stop();
      await transparent.idle();
      await supervisor.close();
      // caches and state written in the background land before the agent says it stopped
      await writesSettled();
      await rm(paths.agentPid, { force: true });
      logger.info('agent stopped');
    },
    status() {
      const bundle = intentions.current();
      return {
        node: s.node,
        datacenter: s.datacenter,
        startedAt,
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
              ? (({ mode, source }) => ({ mode, source }))(mutualTlsOf(inst))
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
                  listeners: ingress
                    .field(inst, upstreams.upstreamsOf(inst))
                    .listeners.map((l) => ({
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
          ...problems,
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
    },
  };
}
