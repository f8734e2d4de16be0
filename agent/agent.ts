// The host agent (DESIGN §1, §5, §6): service definitions in → Consul registrations, workload
// certificates, intentions, upstream endpoints and one supervised proxy per instance out.
// Everything external comes in through options so the agent can be embedded (`remora dev`)
// and tested with fakes.
import { rm } from 'node:fs/promises';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import type { TracingConfig } from '../lib/proxy-api/index.ts';
import { createCentralConfig, type CentralConfig } from './central-config.ts';
import { createJwksKeeper, type JwksKeeper } from './jwt-providers.ts';
import { createConfigDir, type ConfigDir } from './config-dir.ts';
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
  type HandoverResult,
  type ProcessOps,
  type ProxyStatus,
  type Supervisor,
} from './supervisor.ts';
import type { ConsulPort, ControlPort, TrustBundle } from './ports.ts';
import { createProtocols, listenerKey } from './protocols.ts';
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
import { createProxySnapshots } from './proxy-snapshot.ts';
import { createInstanceLifecycle } from './instance-lifecycle.ts';
import { createAgentStatus } from './agent-status.ts';
import { createWarningKeeper, type Instance } from './instance.ts';
import {
  createExecFileRunner,
  createTransparentManager,
  type TransparentManager,
  type TransparentStatus,
} from './transparent/index.ts';

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
  /**
   * Replaces the proxies of the given instances (all when none is given), one after another,
   * each without a gap: the new proxy shares the old one's ports until it is ready, then the old
   * one drains (docs/operations.md, "Restarting proxies without a gap").
   */
  restartProxies(ids?: readonly string[]): Promise<HandoverResult[]>;
  status(): AgentStatus;
  readonly paths: DataPaths;
}

export function createAgent(o: AgentOptions): Agent {
  const { settings: s, consul, control, clock, logger } = o;
  const paths = dataPaths(s.dataDir);
  const instances = new Map<string, Instance>();
  const unsubscribe: (() => void)[] = [];
  let started = false;
  let stopped = false;
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

  // The agent's parts, each given what it uses. The callbacks above reach parts created below
  // (ingress, upstreams, interception, registration, snapshots, lifecycle): none of them runs
  // before the agent starts.
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
    snapshotFor: (id) => snapshots.snapshotFor(id),
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
        .then(() => lifecycle.apply(result))
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

  const snapshots = createProxySnapshots({
    settings: s,
    instances,
    roots,
    intentions,
    identity,
    discovery,
    central,
    jwks,
    protocols,
    traffic,
    upstreams,
    ingress,
    terminating,
    ports,
    interception,
    exposed,
    metrics,
    keepWarning,
  });

  const lifecycle = createInstanceLifecycle({
    settings: s,
    consul,
    clock,
    logger,
    paths,
    instances,
    supervisor,
    identity,
    discovery,
    transparent,
    catalog,
    ports,
    exposed,
    registration,
    upstreams,
    traffic,
    ingress,
    terminating,
    interception,
    metrics,
    isStopped: () => stopped,
  });

  const report = createAgentStatus({
    settings: s,
    clock,
    logger,
    startedAt,
    instances,
    roots,
    intentions,
    identity,
    discovery,
    central,
    jwks,
    supervisor,
    transparent,
    protocols,
    traffic,
    upstreams,
    ingress,
    terminating,
    snapshots,
    lifecycle,
    isStopped: () => stopped,
  });

  function pushAll(): void {
    for (const id of instances.keys()) supervisor.push(id);
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
      report.reportWaiting();
      logger.info({ instances: instances.size, configDir: s.configDir }, 'agent started');
    },
    async reload() {
      await configDir.load();
      await applying;
    },
    async restartProxies(ids) {
      const wanted = ids && ids.length > 0 ? [...ids] : [...instances.keys()].sort();
      const results: HandoverResult[] = [];
      for (const id of wanted) {
        if (stopped) break;
        results.push(await supervisor.handover(id, s.drainTimeoutMs));
      }
      return results;
    },
    async stop(options = {}) {
      if (stopped) return;
      configDir.close();
      await applying;
      stopped = true;
      registration.stop();
      terminating.stopPollingFiles();
      report.stopReporting();
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
        await Promise.all(
          [...instances.keys()].map((id) => lifecycle.stopInstance(id, 'agent stopping')),
        );
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
    status: () => report.status(),
  };
}
