// The host agent (DESIGN §1, §5, §6): service definitions in → Consul registrations, workload
// certificates, intentions, upstream endpoints and one supervised proxy per instance out.
// Everything external comes in through options so the agent can be embedded (`remora dev`)
// and tested with fakes.
import { rm } from 'node:fs/promises';
import { formatSpiffeId } from '../lib/identity/index.ts';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { backoffDelay, type Clock } from '../lib/util/index.ts';
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import {
  DEFAULT_RESILIENCE,
  defaultLoadBalancer,
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
import {
  NODE_META_KEY,
  layeredResilience,
  sameDefinition,
  type DecodeResult,
  type ServiceDefinition,
  type UpstreamDefinition,
} from './definitions.ts';
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
import { createTerminatingGateways, leafId, ownerOf } from './terminating-gateways.ts';
import { createListenerPorts } from './listener-ports.ts';
import { createExposedPaths, wantedExpose } from './exposed-paths.ts';
import { createMetricsListeners } from './metrics-listeners.ts';
import {
  createWarningKeeper,
  follow,
  gatewayBindAddress,
  newInstance,
  type Instance,
} from './instance.ts';
import {
  createExecFileRunner,
  createTransparentManager,
  type RedirectTarget,
  type TransparentManager,
  type TransparentPlan,
  type TransparentStatus,
} from './transparent/index.ts';
import { derivedDestinations } from './transparent/derive.ts';
import { INGRESS_GATEWAY } from './ingress.ts';
import { TERMINATING_GATEWAY } from './terminating.ts';

/** Default cap on the derived upstreams of all transparent instances (docs/transparent.md). */
export const DEFAULT_TRANSPARENT_DERIVED_MAX = 128;

export { DEFAULT_TRANSPARENT_PORT_MAX, DEFAULT_TRANSPARENT_PORT_MIN } from './listener-ports.ts';
export { DEFAULT_EXPOSE_PORT_MAX, DEFAULT_EXPOSE_PORT_MIN } from './exposed-paths.ts';

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

export function createAgent(o: AgentOptions): Agent {
  const { settings: s, consul, control, clock, logger } = o;
  const paths = dataPaths(s.dataDir);
  const instances = new Map<string, Instance>();
  const unsubscribe: (() => void)[] = [];
  let problems: RemoraError[] = [];
  let ttlTimer: NodeJS.Timeout | null = null;
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
      for (const inst of instances.values()) refreshDerived(inst, true);
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
          syncTransparent(inst);
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
        syncTransparent(inst);
      }
      // an Expose block changes what the sidecar registration carries
      reregisterExposed();
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
      for (const inst of instances.values()) refreshDerived(inst, true);
      // a gateway's `*` services are the catalog's
      ingress.push();
      terminating.push();
    },
    onLeft() {
      for (const inst of instances.values()) refreshDerived(inst, true);
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
      syncTransparent(inst);
    },
    onReadyChange(id, ready, reason) {
      logger.info(
        { instance: id, ready, reason },
        `proxy for ${id} is ${ready ? 'ready' : `not ready (${reason})`}`,
      );
      const inst = instances.get(id);
      if (inst && !ready) inst.notReadyReason = reason;
      if (inst && !inst.stopping) syncCheck(inst);
      if (inst && ready && !inst.transparentArmed) {
        inst.transparentArmed = true;
        syncTransparent(inst);
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
  const metrics = createMetricsListeners({
    instances,
    central,
    ports,
    keepWarning,
    supervisor,
    reregisterExposed,
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
    const upstreams = upstreamsOf(inst);
    const plans = new Map(upstreams.map((u) => [u.destinationName, traffic.planOf(inst, u)]));
    traffic.followTargets(inst, plans);
    if (!upstreams.every((u) => discovery.settled(u.destinationName))) return null;
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
      upstreams: upstreams.map((u) => {
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
      ...transparentSnapshot(inst),
      ...accessLogsField(),
      ...exposed.exposeField(inst),
      ...meshTlsField(),
      ...jwtProvidersField(),
      ...(gateway ? { ingress: ingress.field(inst, upstreams) } : {}),
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

  // --- transparent interception (docs/transparent.md) ---------------------------------------
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

  /**
   * The proxy's transparent listeners. IPv4 rules redirect to 127.0.0.1, IPv6 rules to ::1: with
   * IPv6 rules, each Host-routing listener has a twin on ::1, and so has each other upstream's
   * listener (a `forward` listener handing connections to it).
   */
  function transparentSnapshot(inst: Instance): Pick<ProxySnapshot, 'transparent'> {
    const sc = inst.def.sidecar;
    if (!sc?.transparent) return {};
    const addresses = transparent.ipv6 ? ['127.0.0.1', '::1'] : ['127.0.0.1'];
    const upstreams = upstreamsOf(inst);
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
    for (const u of upstreamsOf(inst)) {
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
      proxyUid: s.transparentProxyUid ?? process.getuid?.() ?? 0,
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
    if (stopped || inst.stopping || !inst.transparentArmed) return;
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

  // --- upstreams derived from intentions (docs/transparent.md) -------------------------------
  /** Discovery user of an instance's derived upstreams (kept apart from its explicit ones). */
  function derivedUser(id: string): string {
    return `${id}/derived`;
  }

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
      syncTransparent(inst);
    }
  }

  /**
   * The first of `wanted` (sorted) that fit under `transparentDerivedMax`, all instances
   * together: a service another instance derives already costs nothing more. The rest is
   * reported once per change, and in `remora status`.
   */
  function withinDerivedLimit(inst: Instance, wanted: string[]): string[] {
    const max = s.transparentDerivedMax ?? DEFAULT_TRANSPARENT_DERIVED_MAX;
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

  function pushAll(): void {
    for (const id of instances.keys()) supervisor.push(id);
  }

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
    if (stopped || inst.stopping || inst.registering) return;
    inst.registering = true;
    if (inst.regTimer) clock.clearTimeout(inst.regTimer);
    inst.regTimer = null;
    try {
      if (wantedExpose(central, inst.def).checks.length) await exposed.learnConsulAgentAddress();
      const ready = inst.def.sidecar ? proxyReady(inst.def.id) : true;
      inst.registeredExpose = exposed.exposeKey(inst);
      await consul.registerService(
        registrationFor(exposed.withExposedChecks(inst, ports.withUpstreamPorts(inst)), {
          node: s.node,
          sidecarPort: inst.sidecarPort,
          advertiseAddress: s.advertiseAddress,
          checkTtlMs: s.checkTtlMs,
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
      if (!stopped && !inst.stopping) {
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
        while (inst.checkAgain && !inst.stopping && !stopped) {
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
    if (!stopped)
      ttlTimer = clock.setTimeout(refreshChecks, Math.max(250, Math.floor(s.checkTtlMs / 3)));
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
      refreshDerived(inst, false);
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
        void waitUntil(() => proxyReady(def.id) || inst.stopping || stopped, s.adoptTimeoutMs).then(
          () => {
            inst.holdRegistration = false;
            return register(inst);
          },
        );
        return;
      }
    }
    void register(inst);
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
        .updateTtl(checkIdOf(inst), 'critical', `stopping: ${why}`)
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
      for (const u of inst.def.sidecar.upstreams) discovery.release(u.destinationName, id);
      for (const name of inst.derived) discovery.release(name, derivedUser(id));
      inst.derived = [];
      traffic.release(inst);
      ingress.release(inst);
      terminating.release(inst);
      // the room it leaves goes to instances that were over the limit
      for (const other of instances.values())
        if (other !== inst && other.derivedLimit) refreshDerived(other, true);
      identity.remove(id);
    }
    instances.delete(id);
    catalog.sync();
    ingress.sync();
    terminating.sync();
    checkSharedAll();
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
        void register(inst);
        catalog.sync();
        refreshDerived(inst, false);
        supervisor.push(id);
        ports.retainPorts(inst);
        if (old.sidecar?.transparent && !d.sidecar?.transparent) void transparent.remove(id);
        else syncTransparent(inst);
      } else {
        inst.def = d; // source position may have moved
      }
    }
    checkSharedAll();
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
      refreshChecks();
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
      if (ttlTimer) clock.clearTimeout(ttlTimer);
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
            upstreams: upstreamsOf(inst).map((u) => {
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
                  listeners: ingress.field(inst, upstreamsOf(inst)).listeners.map((l) => ({
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
