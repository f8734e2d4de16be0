// The agent ↔ proxy contract (DESIGN §6). The agent streams snapshots over its Unix socket as
// newline-delimited JSON frames; the proxy applies each atomically and answers with acks and
// readiness. A static file with a `ProxySnapshot` serves the same purpose for debugging.
import type { HttpMatch, IntentionsSnapshot } from '../intentions/types.ts';
import type { IngressTlsParams } from './ingress-tls.ts';
import type { JwtProvider } from '../jwt/types.ts';
import type { MeshTlsConfig } from './mesh-tls.ts';

export const PROXY_API_VERSION = 1;

export type Protocol = 'tcp' | 'http' | 'http2' | 'grpc';
/** `ring_hash` and `maglev`: consistent hashing of what `hashPolicies` pick from a request. */
export type LoadBalancerPolicy =
  'round_robin' | 'least_request' | 'peak_ewma' | 'ring_hash' | 'maglev';

/**
 * One of Consul's `LoadBalancer.HashPolicies`: the value a request is hashed on, either a
 * request field (`field` named `fieldValue`) or the caller's address (`sourceIp`). The hashes of
 * the policies that found a value are combined; a `terminal` one that found a value ends the list.
 */
export interface HashPolicy {
  field?: 'header' | 'cookie' | 'query_parameter';
  fieldValue?: string;
  sourceIp?: boolean;
  terminal?: boolean;
  /**
   * With `field: 'cookie'` (Consul's `CookieConfig` with a `TTL` or `Session`): a request
   * without the cookie gets one made up, hashed on, and set in its answer, so the caller's next
   * requests reach the same instance. `ttlSeconds` 0 is a session cookie (no `Max-Age`).
   */
  cookie?: HashCookie;
}

/** The cookie consistent hashing sets for a caller that sent none (see `HashPolicy.cookie`). */
export interface HashCookie {
  ttlSeconds: number;
  path?: string;
}

export interface InstanceIdentity {
  /** Consul service ID of the instance, e.g. `api-1`. */
  id: string;
  service: string;
  datacenter: string;
  node: string;
  trustDomain: string;
  /** This instance's SPIFFE ID (the URI SAN of `tls.certPem`). */
  spiffeId: string;
}

export interface InboundConfig {
  /** Public mTLS listener: the sidecar's port in Consul. */
  bindAddress: string;
  bindPort: number;
  /** The local application the proxy forwards to. */
  localAppAddress: string;
  localAppPort: number;
  protocol: Protocol;
  /**
   * `permissive` (Consul's `MutualTLSMode`): the sidecar port also takes plain (non-TLS)
   * connections, which a transparent instance's rules send there from the app's port, and pipes
   * them to the local app as TCP, without intentions. Absent: strict, mTLS only.
   */
  mutualTlsMode?: MutualTlsMode;
  /**
   * True: the app gets no `x-forwarded-client-cert` (the `mesh` entry's
   * `HTTP.SanitizeXForwardedClientCert`); one a caller sent is removed all the same. Absent: the
   * proxy sets it to the verified caller's identity.
   */
  sanitizeClientCert?: boolean;
  /**
   * How long the proxy waits for a connection to the local app (Consul's
   * `local_connect_timeout_ms`); `DEFAULT_LOCAL_CONNECT_TIMEOUT_MS` when absent.
   */
  localConnectTimeoutMs?: number;
  /**
   * How long the proxy waits for the local app's response head (`local_request_timeout_ms`);
   * no bound when absent or 0 (the caller's sidecar bounds its own calls).
   */
  localRequestTimeoutMs?: number;
  /**
   * Concurrent connections the sidecar port accepts (`MaxInboundConnections`); further ones
   * are closed as they arrive. No limit when absent or 0.
   */
  maxInboundConnections?: number;
  /**
   * Requests per second this instance admits over HTTP, HTTP/2 and gRPC (Consul's
   * service-defaults `RateLimits.InstanceLevel`); no limit when absent.
   */
  rateLimit?: RateLimitConfig;
}

/** A token bucket: refilled at `requestsPerSecond`, holding at most `burst` requests. */
export interface RateLimit {
  requestsPerSecond: number;
  burst: number;
}

/** A route's own bucket: the first whose path matches a request takes it. */
export interface RouteRateLimit extends RateLimit {
  /** One of the three, as in Consul: the whole path, its start, or a regex of the whole path. */
  pathExact?: string;
  pathPrefix?: string;
  pathRegex?: string;
}

/**
 * The instance's rate limits: `routes` are tried in order, a request no route matches takes the
 * `instance` bucket (none: it is not limited).
 */
export interface RateLimitConfig {
  instance?: RateLimit;
  routes?: RouteRateLimit[];
}

/** Consul's `MutualTLSMode` values (`""` is unset): whether a sidecar requires mTLS. */
export type MutualTlsMode = 'strict' | 'permissive';
export const MUTUAL_TLS_MODES: readonly MutualTlsMode[] = ['strict', 'permissive'];

/** What a service definition or a service-defaults entry may set of the inbound. */
export type InboundSettings = Pick<
  InboundConfig,
  'localConnectTimeoutMs' | 'localRequestTimeoutMs' | 'maxInboundConnections' | 'rateLimit'
>;

export interface Endpoint {
  /** Consul service ID of the destination instance (its sidecar's `Proxy.DestinationServiceID`). */
  id: string;
  /** Address and port of the destination's sidecar (mTLS listener). */
  address: string;
  port: number;
  weight: number;
  node: string;
  /**
   * The SNI to send instead of the destination's: set when the endpoint is a terminating
   * gateway and the call is for a subset of the linked service (`<subset>.<service>.…`, as
   * Consul's callers ask the gateway for it). Absent: the destination's SNI.
   */
  sni?: string;
}

export interface ResilienceConfig {
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  /** Retries per request at most (attempts = 1 + maxRetries). */
  maxRetries: number;
  /** Retries may add at most this share of the request rate (plus `retryBudgetMinPerSec`). */
  retryBudgetRatio: number;
  retryBudgetMinPerSec: number;
  /** Request bodies up to this size are buffered so they can be replayed on retry. */
  maxBufferedBodyBytes: number;
  outlier: {
    consecutiveFailures: number;
    baseEjectionMs: number;
    maxEjectionPercent: number;
  };
  circuitBreaker: {
    maxConnections: number;
    maxPendingRequests: number;
    maxRequests: number;
  };
}

export interface UpstreamConfig {
  /** Destination service name. */
  destinationName: string;
  /** The SPIFFE ID the destination must present. */
  destinationSpiffeId: string;
  localBindAddress: string;
  localBindPort: number;
  protocol: Protocol;
  loadBalancer: LoadBalancerPolicy;
  /** With `ring_hash` or `maglev`: what each request is hashed on (none: a random endpoint). */
  hashPolicies?: HashPolicy[];
  resilience: ResilienceConfig;
  /** Healthy endpoints from `health/connect/<destination>?passing`; last known ones when Consul is down. */
  endpoints: Endpoint[];
  /**
   * Consul's service-router for an HTTP, HTTP/2 or gRPC upstream: the first route whose match
   * a request meets decides where it goes; a request no route matches follows `splits`.
   */
  routes?: HttpRoute[];
  /**
   * Consul's service-splitter (absent: every request goes to `destinationName`): each request
   * or stream goes to one of these services, with a chance of `weight` percent.
   */
  splits?: TrafficSplit[];
  /**
   * The targets `routes`, `splits` and `failover` name besides `destinationName`, each with its
   * own identity, endpoints and settings; present with any of them.
   */
  targets?: UpstreamTarget[];
  /**
   * Consul's service-resolver `Failover`: the targets (names in `targets`) that a call goes to,
   * the first one that has an endpoint to take, when this upstream's own endpoints have none
   * (none healthy in Consul, or every one ejected). Absent: no failover.
   */
  failover?: string[];
  /**
   * False: the upstream has no listener of its own (`localBindAddress`/`localBindPort` unused);
   * only an ingress gateway's listeners hand it calls (`ProxySnapshot.ingress`). Absent: it
   * listens on `localBindAddress:localBindPort`.
   */
  listener?: false;
}

/** One route of a service-router. */
export interface HttpRoute {
  /** What a request must meet (every part given); the intentions' match language. */
  match: HttpMatch;
  /** Query parameters the request must also carry (every one given). */
  query?: QueryMatch[];
  /** Where a matching request goes: one service at 100, or the shares of its splitter. */
  splits: TrafficSplit[];
  /**
   * Replaces the matched `match.pathPrefix` (or `pathExact`) of the path before the request is
   * forwarded.
   */
  prefixRewrite?: string;
  /** The matching requests' timeout until the response head (over the target's own). */
  requestTimeoutMs?: number;
  /** Retries the matching requests get at most (over the target's own `maxRetries`). */
  maxRetries?: number;
  /**
   * Answer statuses the matching idempotent requests are also retried on, besides the proxy's
   * own rules (5xx but 501).
   */
  retryOn?: number[];
  /**
   * gRPC status codes (1–16) that a matching gRPC stream is also retried on, whatever its method,
   * when the answer carries it in its head (a trailers-only answer, before any message).
   */
  retryOnGrpc?: number[];
  /** Changes to the matching requests' headers before they leave. */
  requestHeaders?: HeaderModifiers;
  /** Changes to their answers' headers before the caller sees them. */
  responseHeaders?: HeaderModifiers;
}

/**
 * Header changes (Consul's `RequestHeaders`/`ResponseHeaders`), applied in this order: `remove`
 * the named fields, `set` replaces a field's values with one, `add` appends a value. Names are
 * lower case; framing, hop-by-hop and pseudo-header fields cannot be changed.
 */
export interface HeaderModifiers {
  add?: Record<string, string>;
  set?: Record<string, string>;
  remove?: string[];
}

/**
 * A query parameter test of a route (Consul's `QueryParam`): the parameter is present (or, with
 * `present: false`, absent), equals `exact`, or fully matches `regex`; with none of them, it is
 * present. Values are compared URL-decoded.
 */
export interface QueryMatch {
  name: string;
  present?: boolean;
  exact?: string;
  regex?: string;
}

/** One share of a traffic split. */
export interface TrafficSplit {
  /** `destinationName` or a target's. */
  service: string;
  /** Percent of the requests, 0–100; the weights of one upstream add up to 100. */
  weight: number;
  /** Changes to the share's requests before they leave (after the route's, if any). */
  requestHeaders?: HeaderModifiers;
  /** Changes to their answers before the caller sees them (after the route's, if any). */
  responseHeaders?: HeaderModifiers;
}

/**
 * A service an upstream's routes or traffic split send requests to: its own identity,
 * endpoints, balancing and resilience (its own circuit breakers, retries and metrics, under its
 * name).
 */
export interface UpstreamTarget {
  destinationName: string;
  destinationSpiffeId: string;
  loadBalancer: LoadBalancerPolicy;
  hashPolicies?: HashPolicy[];
  resilience: ResilienceConfig;
  endpoints: Endpoint[];
  /** As `UpstreamConfig.failover`: where this target's calls go when it has no endpoint to take. */
  failover?: string[];
}

export interface TlsMaterial {
  certPem: string;
  /** The instance's private key; only the agent and this proxy ever hold it. */
  keyPem: string;
  /** Every trusted root (several during a rotation). */
  rootsPem: string[];
}

export interface TracingConfig {
  /** OTLP/HTTP traces URL; empty disables export. */
  endpoint: string;
  sampleRatio: number;
  headers: Record<string, string>;
}

/**
 * Transparent interception (docs/transparent.md), optional and sent only to instances that use
 * it: one Host-routing listener per HTTP upstream, where the agent's rules send plain HTTP calls
 * to that upstream's addresses. A Host naming another HTTP upstream goes there; any other Host
 * (an IP address, a container name) goes to `upstream`, the service the destination belongs to.
 */
export interface TransparentHttpListener {
  bindAddress: string;
  bindPort: number;
  upstream: string;
}

/**
 * A listener that hands every connection to the upstream `upstream` (any protocol) as its own
 * listener would: where the agent's IPv6 rules send that upstream's IPv6 addresses (they
 * redirect to ::1, while the upstream's own listener is on 127.0.0.1).
 */
export interface TransparentForwardListener {
  bindAddress: string;
  bindPort: number;
  upstream: string;
}

export interface TransparentConfig {
  http: TransparentHttpListener[];
  /** Absent when there are none. */
  forward?: TransparentForwardListener[];
}

/**
 * An ingress gateway's listener (Consul's `ingress-gateway` entry, docs/gateways.md): plain
 * HTTP, h2c or TCP from outside the mesh on `bindAddress:bindPort`, carried on by the upstream
 * a service names (over mTLS, with the gateway's identity).
 */
export interface IngressListener {
  bindAddress: string;
  bindPort: number;
  protocol: Protocol;
  /** tcp: exactly one, every connection goes to it; others: picked per request by Host. */
  services: IngressService[];
  /**
   * Present when the listener terminates TLS (the entry's `TLS.Enabled`, gateway or listener):
   * it serves the snapshot's `tls` certificate (the gateway's, with its DNS names) with these
   * versions and suites; absent: plain HTTP, h2c or TCP.
   */
  tls?: IngressTlsParams;
}

export interface IngressService {
  /** The upstream (its `destinationName`) that carries the calls; it has `listener: false`. */
  upstream: string;
  /**
   * The Host values (lower case, no port) routed to it on an HTTP, HTTP/2 or gRPC listener: a
   * name, `*.` and a suffix (one or more labels before it), a prefix and `.*`, or `*` (any).
   * Empty on a tcp listener.
   */
  hosts: string[];
  /** Changes to the requests' headers before they leave the gateway. */
  requestHeaders?: HeaderModifiers;
  /** Changes to the answers' headers before the outside caller sees them. */
  responseHeaders?: HeaderModifiers;
}

/** An ingress gateway's listeners; a snapshot with it has no inbound mTLS listener. */
export interface IngressConfig {
  listeners: IngressListener[];
}

/**
 * The TLS a terminating gateway originates to an external service: the CA its server
 * certificate must chain to (else Node's default CAs), the client certificate and key of mutual
 * TLS, and the SNI (else none for an address, the endpoint's name otherwise).
 */
export interface OriginationTls {
  caPem?: string;
  certPem?: string;
  keyPem?: string;
  sni?: string;
}

/**
 * A service outside the mesh a terminating gateway links (docs/gateways.md): mesh callers reach
 * it through the gateway's mTLS listener, asking by SNI (`meshSni` of its SPIFFE ID); the
 * gateway presents `certPem` (the service's identity), applies intentions with the service as
 * destination and forwards to its healthy catalog `endpoints`.
 */
export interface TerminatingService {
  service: string;
  /** The SNI mesh callers send for it (`<service>.default.<dc>.internal.<trust-domain>`). */
  sni: string;
  protocol: Protocol;
  /** Its leaf (URI SAN: its SPIFFE ID) and key, issued to the gateway. */
  certPem: string;
  keyPem: string;
  /** Its healthy catalog instances (addresses of the service itself, no sidecar). */
  endpoints: Endpoint[];
  /** Absent: plain TCP to the endpoints. */
  tls?: OriginationTls;
  /** Its service-resolver's `ConnectTimeout`; absent: the gateway's local connect timeout. */
  connectTimeoutMs?: number;
  /** Its service-resolver's `RequestTimeout`, for HTTP/1.1 requests; absent: none. */
  requestTimeoutMs?: number;
  /** Its service-resolver's `LoadBalancer.Policy`; absent: round robin. */
  loadBalancer?: LoadBalancerPolicy;
  /** Its service-resolver's subsets, each asked for by its own SNI and sent to its instances. */
  subsets?: TerminatingSubset[];
  /**
   * The entry's `DisableAutoHostRewrite`: the caller's Host (`:authority`) is kept. Absent: an
   * instance registered by hostname gets requests with that hostname as Host, as from Consul's
   * gateway (Envoy's `auto_host_rewrite`).
   */
  disableAutoHostRewrite?: true;
}

/** A subset of a linked service (Consul's `<subset>.<service>.…` SNI and cluster). */
export interface TerminatingSubset {
  name: string;
  /** `<subset>.` and the service's SNI. */
  sni: string;
  /** The service's healthy instances its `Filter` keeps. */
  endpoints: Endpoint[];
}

/** A terminating gateway's linked services; the inbound listener serves them by SNI. */
export interface TerminatingConfig {
  services: TerminatingService[];
}

export interface ProxySnapshot {
  /** Increases with every change the agent sends. */
  version: number;
  instance: InstanceIdentity;
  inbound: InboundConfig;
  upstreams: UpstreamConfig[];
  tls: TlsMaterial;
  intentions: IntentionsSnapshot;
  tracing: TracingConfig;
  /** Absent unless the instance is transparent (older proxies refuse unknown fields). */
  transparent?: TransparentConfig;
  /** Absent unless access logs are on (Consul's proxy-defaults `AccessLogs`). */
  accessLogs?: AccessLogConfig;
  /** Absent unless the sidecar exposes paths in plain HTTP (Consul's `proxy.expose.paths`). */
  expose?: ExposePath[];
  /** Absent unless Consul's `mesh` entry sets TLS versions or suites (lib/proxy-api/mesh-tls.ts). */
  meshTls?: MeshTlsConfig;
  /** Absent unless Consul holds `jwt-provider` entries: what intentions' `jwt` refers to. */
  jwtProviders?: JwtProvider[];
  /**
   * Present for an ingress gateway (docs/gateways.md): its listeners. The proxy then binds no
   * inbound mTLS listener; `inbound` names the gateway's registered address and port only.
   */
  ingress?: IngressConfig;
  /**
   * Present for a terminating gateway (docs/gateways.md): the services it links. The inbound
   * listener then serves each by the SNI of the handshake, with that service's certificate.
   */
  terminating?: TerminatingConfig;
  /**
   * Absent unless the instance's proxy config or proxy-defaults set `envoy_prometheus_bind_addr`:
   * where the proxy also serves its `/metrics`, in plain HTTP, for a Prometheus server on another
   * host (the admin listener stays on loopback).
   */
  metrics?: MetricsListener;
}

/** A plain-HTTP listener that serves `GET /metrics` and nothing else. */
export interface MetricsListener {
  /** An IP address (`0.0.0.0` or `::` for every interface). */
  bindAddress: string;
  bindPort: number;
}

/**
 * One path of the local app served in plain HTTP on `listenerPort` of the inbound bind address,
 * for callers outside the mesh (a metrics scraper, a health checker); every other path there is
 * answered 404.
 */
export interface ExposePath {
  /** The path served, exactly (a query string may follow it). */
  path: string;
  /** The app's port on 127.0.0.1 that serves it. */
  localPathPort: number;
  listenerPort: number;
  protocol: 'http' | 'http2';
  /**
   * When present, only connections from loopback and these addresses are served; any other is
   * closed. The agent sets it on the paths of `expose.checks` to the Consul agent's own address,
   * as Consul does: those listeners exist for its probes, not for everyone.
   */
  allowSources?: string[];
}

/**
 * Where the proxy writes one line per request, stream or TCP connection: its own standard output
 * or error, or a file (`path`, absolute) it appends to; its own JSON unless a format is given.
 */
export interface AccessLogConfig {
  type: 'stdout' | 'stderr' | 'file';
  path?: string;
  /** A line of Envoy command operators (Consul's `TextFormat`; lib/access-log/format.ts). */
  textFormat?: string;
  /** A JSON object of such lines, as a string (Consul's `JSONFormat`). At most one format. */
  jsonFormat?: string;
}

// --- frames on the socket -----------------------------------------------------------------

/** agent → proxy */
export type AgentFrame =
  | { v: 1; type: 'snapshot'; snapshot: ProxySnapshot }
  | { v: 1; type: 'drain'; deadlineMs: number }
  | { v: 1; type: 'ping' };

/** proxy → agent */
export type ProxyFrame =
  | {
      v: 1;
      type: 'hello';
      instance: string;
      pid: number;
      adminPort: number;
      appliedVersion: number | null;
    }
  | { v: 1; type: 'ack'; version: number; ok: true }
  | { v: 1; type: 'ack'; version: number; ok: false; error: { code: string; message: string } }
  | { v: 1; type: 'status'; ready: boolean; appliedVersion: number | null; reason?: string }
  | { v: 1; type: 'pong' };

/** Upper bound of one frame; larger frames are refused. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;
