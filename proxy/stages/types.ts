// The request/response shapes every HTTP stage sees, and the Stage signature: a stage wraps the
// next handler (like undici interceptors / Dispatcher.compose), so a stack reads top to bottom.
import type { Duplex } from 'node:stream';
import type { Body } from '../http/body.ts';
import type { HeaderModifiers } from '../../lib/proxy-api/index.ts';
import type { SocketView } from '../../lib/access-log/format.ts';

export interface RequestContext {
  /** `exposed`: a plain-HTTP request to an exposed path (no peer, no intentions). */
  direction: 'inbound' | 'outbound' | 'exposed';
  /** Peer SPIFFE ID (inbound: the caller; outbound: null until an endpoint answers). */
  peerSpiffeId: string | null;
  /** Calling service (inbound: from the peer certificate; outbound: this instance's service). */
  source: string;
  /** Destination service name. */
  destination: string;
  startMs: number;
  /** Retries made so far for this request. */
  retries: number;
  /** The endpoint that served the last attempt. */
  endpointId: string | null;
  /** Set when the client went away; stages stop work. */
  aborted: boolean;
  /** Tracing context carried between stages (opaque to everything but the tracing stage). */
  trace: unknown;
  /** Inbound: the connection-level intention decision for this peer. */
  l4: ConnectionDecision | null;
  /** The connection the request came in on (its addresses go to access logs). */
  downstream: SocketView | null;
  /** Where the last attempt went: the endpoint (outbound) or the local app (inbound). */
  upstream: { readonly address: string; readonly port: number } | null;
  /** Outbound: what the route the request met sets over the upstream's own settings. */
  route?: RouteSettings;
  /**
   * Outbound: `Set-Cookie` values for the cookies consistent hashing made up for this request
   * (a cookie policy with `cookie` settings, the caller sending none); the answer carries them.
   */
  setCookies?: string[];
  /**
   * Inbound at a terminating gateway: sends the request to the linked service (or resolver
   * subset) its connection's SNI asked for, instead of to a local app.
   */
  linked?: Handler;
}

/** A request's context before anything is known of it; the caller fills in what it knows. */
export function newRequestContext(
  direction: RequestContext['direction'],
  source: string,
  destination: string,
): RequestContext {
  return {
    direction,
    peerSpiffeId: null,
    source,
    destination,
    startMs: 0,
    retries: 0,
    endpointId: null,
    aborted: false,
    trace: null,
    l4: null,
    downstream: null,
    upstream: null,
  };
}

/**
 * A route's own request timeout, retry count and header changes (Consul's service-router
 * `Destination`), and its split's answer header changes (applied in order).
 */
export interface RouteSettings {
  requestTimeoutMs?: number;
  maxRetries?: number;
  /** Answer statuses idempotent requests are also retried on (besides 5xx but 501). */
  retryOn?: readonly number[];
  /** gRPC status codes a gRPC stream's trailers-only answer is retried on, whatever the method. */
  retryOnGrpc?: readonly number[];
  responseHeaders?: readonly HeaderModifiers[];
}

/** The parts of an intention decision the data plane needs per connection. */
export interface ConnectionDecision {
  allowed: boolean;
  enforced: boolean;
  reason: string;
  needsRequest: boolean;
}

export interface ProxyRequest {
  method: string;
  target: string;
  host: string;
  versionMinor: 0 | 1;
  /** End-to-end header fields, flattened [name, value, …] in the order received. */
  headers: string[];
  body: Body;
  /** Declared body length; -1 when unknown (chunked or streaming). */
  bodyLength: number;
  /** `Upgrade` protocol requested (WebSocket), or null. */
  upgrade: string | null;
  ctx: RequestContext;
}

export interface ProxyResponse {
  status: number;
  reason: string;
  headers: string[];
  body: Body;
  /** Declared length when known (kept for HEAD responses); -1 otherwise. */
  bodyLength: number;
  /** A 101 answer: the upstream socket to splice with the client, plus bytes it already sent. */
  upgraded?: { socket: Duplex; head: Buffer };
  /** Set on answers the proxy generated itself (the `x-remora-error` code). */
  errorCode?: string;
}

export type Handler = (req: ProxyRequest) => Promise<ProxyResponse>;

/** One layer of a stack: given the next handler, returns a handler. */
export type Stage = (next: Handler) => Handler;

/** Builds a handler from stages listed outermost first and a terminal handler. */
export function composeStages(stages: readonly Stage[], terminal: Handler): Handler {
  let h = terminal;
  for (let i = stages.length - 1; i >= 0; i--) h = stages[i]!(h);
  return h;
}

/** Idempotent methods (RFC 9110 §9.2.2): safe to replay after a 5xx or reset. */
export function isIdempotent(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
    case 'TRACE':
    case 'PUT':
    case 'DELETE':
      return true;
    default:
      return false;
  }
}
