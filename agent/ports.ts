// What the agent needs from the outside world, as narrow interfaces. `wiring.ts` implements
// them over lib/nats and lib/consul; unit tests pass fakes.
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';

export interface TrustBundle {
  trustDomain: string;
  activeRootId: string;
  roots: { id: string; pem: string; notAfter: string }[];
}

export interface SignedCert {
  cert: string;
  chain: string[];
  serial: string;
  notBefore: string;
  notAfter: string;
  spiffeId: string;
}

/** The control plane over NATS (DESIGN §4). Every call may reject while NATS or control is down. */
export interface ControlPort {
  sign(req: {
    service: string;
    serviceId: string;
    csr: string;
    /** A terminating gateway's leaf for a linked service: the gateway's name. */
    gateway?: string;
  }): Promise<SignedCert>;
  roots(): Promise<TrustBundle>;
  intentions(): Promise<IntentionsSnapshot>;
  onRootsChanged(fn: (bundle: TrustBundle) => void): () => void;
  onIntentionsChanged(fn: (snapshot: IntentionsSnapshot) => void): () => void;
  close(): Promise<void>;
}

/**
 * One entry of `GET /v1/health/connect/<service>?passing`, the fields the agent reads (a
 * resolver subset's filter may read any field Consul's filter language knows, so the agent keeps
 * the entries whole).
 */
export interface ConnectEntry {
  Node: { Node: string; Address: string };
  Service: {
    ID: string;
    Service: string;
    /** `terminating-gateway` when the service is outside the mesh and this its gateway. */
    Kind?: string;
    Address: string;
    Port: number;
    Tags?: string[];
    Meta?: Record<string, string>;
    Weights?: { Passing: number; Warning: number };
    Proxy?: {
      DestinationServiceID?: string;
      DestinationServiceName?: string;
      /** Where the sidecar forwards; transparent mode intercepts calls to this port. */
      LocalServicePort?: number;
      /** The sidecar's proxy config; `protocol` is what its inbound side speaks. */
      Config?: Record<string, unknown>;
    };
  };
  Checks?: object[];
}

export type CheckStatus = 'passing' | 'warning' | 'critical';

/** One configuration entry of `GET /v1/config/<kind>`, the fields the agent reads. */
export interface ConfigEntry {
  Kind: string;
  Name: string;
  /** service-defaults: the service's protocol. */
  Protocol?: unknown;
  /** proxy-defaults: `protocol` is every service's default protocol. */
  Config?: Record<string, unknown>;
  /** proxy-defaults: whether and where every proxy writes access logs. */
  AccessLogs?: unknown;
  /** service-defaults and proxy-defaults: paths and checks sidecars expose (`Checks`, `Paths`). */
  Expose?: unknown;
  /** service-defaults: settings for the service's upstreams (`Defaults`, `Overrides`). */
  UpstreamConfig?: unknown;
  /** service-defaults: what the service's own proxies do with its app and their port. */
  LocalConnectTimeoutMs?: unknown;
  LocalRequestTimeoutMs?: unknown;
  MaxInboundConnections?: unknown;
  /** service-defaults: requests each instance admits (`InstanceLevel`, per route too). */
  RateLimits?: unknown;
  /** service-resolver: timeouts for calls to the service (Go durations such as "5s"). */
  ConnectTimeout?: unknown;
  RequestTimeout?: unknown;
  /** service-resolver: `Policy` picks how callers balance across the service's instances. */
  LoadBalancer?: unknown;
  /** service-resolver fields Remora does not implement, read only to report them. */
  Subsets?: unknown;
  DefaultSubset?: unknown;
  Redirect?: unknown;
  Failover?: unknown;
  PrioritizeByLocality?: unknown;
  /** mesh: the TLS versions and suites of every sidecar (`Incoming`, `Outgoing`). */
  TLS?: unknown;
  /** mesh: `MeshDestinationsOnly` confines apps in transparent mode to mesh destinations. */
  TransparentProxy?: unknown;
  /** mesh: whether service-defaults and proxy-defaults may set `MutualTLSMode = "permissive"`. */
  AllowEnablingPermissiveMutualTLS?: unknown;
  /** service-defaults, proxy-defaults: `strict` or `permissive` (docs/agent.md). */
  MutualTLSMode?: unknown;
  /** service-splitter: `Weight` (percent) and `Service` of each share of the calls. */
  Splits?: unknown;
  /** service-router: `Match.HTTP` and `Destination` of each route, first match wins. */
  Routes?: unknown;
}

/** The host's Consul agent (DESIGN §5). Every call may reject while Consul is down. */
export interface ConsulPort {
  registerService(definition: Record<string, unknown>): Promise<void>;
  deregisterService(id: string): Promise<void>;
  updateTtl(checkId: string, status: CheckStatus, output: string): Promise<void>;
  /**
   * The Consul agent's own (LAN) address (`/v1/agent/self` `Member.Addr`), the source of its
   * health probes. Without it, exposed check listeners are not confined to the Consul agent.
   */
  agentAddress?(): Promise<string>;
  /** A blocking-query watch; onChange gets every new healthy set, onError every failure. */
  watchConnect(
    service: string,
    handlers: { onChange(entries: ConnectEntry[]): void; onError(err: unknown): void },
  ): { stop(): void };
  /**
   * A blocking-query watch of a service's own healthy instances (`/v1/health/service/<name>?passing`),
   * for the services outside the mesh a terminating gateway reaches. Absent: not supported.
   */
  watchService?(
    service: string,
    handlers: { onChange(entries: ConnectEntry[]): void; onError(err: unknown): void },
  ): { stop(): void };
  /**
   * A blocking-query watch of the catalog's service names (`/v1/catalog/services`), for the
   * upstreams a transparent instance derives from intentions.
   */
  watchServices(handlers: { onChange(names: string[]): void; onError(err: unknown): void }): {
    stop(): void;
  };
  /** A blocking-query watch of one kind of configuration entries (`/v1/config/<kind>`). */
  watchConfigEntries(
    kind: string,
    handlers: { onChange(entries: ConfigEntry[]): void; onError(err: unknown): void },
  ): { stop(): void };
}
