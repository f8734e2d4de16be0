// The snapshot each proxy is sent (lib/proxy-api): an instance's identity, inbound listener,
// upstreams with their routes and endpoints, intentions and every other setting the agent's
// parts and Consul's entries give it; null until none of it has to be guessed.
import { formatSpiffeId } from '../lib/identity/index.ts';
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import type { JwtProvider } from '../lib/jwt/index.ts';
import type { AccessLogConfig, MeshTlsConfig, ProxySnapshot } from '../lib/proxy-api/index.ts';
import type { AgentSettings } from './agent.ts';
import { parseTargetName, resolveMutualTlsMode, type CentralConfig } from './central-config.ts';
import type { Mirror } from './control-state.ts';
import type { Discovery } from './discovery.ts';
import type { ExposedPaths } from './exposed-paths.ts';
import type { IdentityManager } from './identity.ts';
import { INGRESS_GATEWAY } from './ingress.ts';
import type { IngressGateways } from './ingress-gateways.ts';
import { gatewayBindAddress, type Instance, type KeepWarning } from './instance.ts';
import type { JwksKeeper } from './jwt-providers.ts';
import type { ListenerPorts } from './listener-ports.ts';
import type { MetricsListeners } from './metrics-listeners.ts';
import type { TrustBundle } from './ports.ts';
import { hashPoliciesField, type Protocols } from './protocols.ts';
import { TERMINATING_GATEWAY } from './terminating.ts';
import type { TerminatingGateways } from './terminating-gateways.ts';
import type { TrafficPlan } from './traffic-plan.ts';
import type { Interception } from './transparent-interception.ts';
import type { Upstreams } from './upstreams.ts';

export interface ProxySnapshotsContext {
  settings: Pick<AgentSettings, 'datacenter' | 'node' | 'proxyBindAddress' | 'tracing'>;
  instances: ReadonlyMap<string, Instance>;
  roots: Pick<Mirror<TrustBundle>, 'current'>;
  intentions: Pick<Mirror<IntentionsSnapshot>, 'current'>;
  identity: Pick<IdentityManager, 'get'>;
  discovery: Pick<Discovery, 'settled'>;
  central: Pick<
    CentralConfig,
    | 'settled'
    | 'inbound'
    | 'sanitizeClientCert'
    | 'jwtProviders'
    | 'meshTls'
    | 'accessLogs'
    | 'mutualTlsMode'
    | 'allowPermissiveMutualTls'
  >;
  jwks: Pick<JwksKeeper, 'providers'>;
  protocols: Pick<Protocols, 'inboundProtocol'>;
  traffic: Pick<TrafficPlan, 'planOf' | 'followTargets' | 'endpointsOf' | 'trafficFields'>;
  upstreams: Pick<Upstreams, 'upstreamsOf'>;
  ingress: Pick<IngressGateways, 'known' | 'field'>;
  terminating: Pick<TerminatingGateways, 'known' | 'plan' | 'field'>;
  ports: Pick<ListenerPorts, 'upstreamPort'>;
  interception: Pick<Interception, 'snapshotField'>;
  exposed: Pick<ExposedPaths, 'exposeField'>;
  metrics: Pick<MetricsListeners, 'metricsField'>;
  keepWarning: KeepWarning;
}

export interface ProxySnapshots {
  /** The instance's proxy snapshot; null while something it needs is not known yet. */
  snapshotFor(id: string): Omit<ProxySnapshot, 'version'> | null;
  /**
   * The instance's mutual TLS mode (docs/agent.md, "Permissive mutual TLS"); a permissive one
   * that does not apply is kept as the instance's warning.
   */
  mutualTlsOf(inst: Instance): ReturnType<typeof resolveMutualTlsMode>;
}

export function createProxySnapshots(o: ProxySnapshotsContext): ProxySnapshots {
  const { settings, instances, roots, intentions, identity, discovery, central, jwks } = o;
  const { protocols, traffic, ingress, terminating, ports, interception, exposed, metrics } = o;
  const { keepWarning } = o;

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
    const upstreams = o.upstreams.upstreamsOf(inst);
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
        datacenter: settings.datacenter,
        node: settings.node,
        trustDomain: bundle.trustDomain,
        spiffeId: cert.spiffeId,
      },
      inbound: {
        // a gateway binds nothing here (no mTLS listener): its registered address and port
        bindAddress:
          gateway || isTerminating
            ? gatewayBindAddress(inst, settings.proxyBindAddress)
            : settings.proxyBindAddress,
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
            datacenter: settings.datacenter,
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
      tracing: settings.tracing,
      ...interception.snapshotField(inst),
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
    const entries = central.jwtProviders();
    const providers = jwks.providers(entries);
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

  return { snapshotFor, mutualTlsOf };
}
