import { SpanKind, SpanStatusCode, type Attributes, type SpanStatus } from '@opentelemetry/api';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_CLIENT_PORT,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_REQUEST_RESEND_COUNT,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_NETWORK_TRANSPORT,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_QUERY,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';

/**
 * Attribute names Remora adds to spans and resources, beside OpenTelemetry's semantic
 * conventions. Values are documented in docs/tracing.md.
 */
export const REMORA_ATTR = {
  /** Resource: which Remora program emitted the span (proxy, agent, control, dev). */
  component: 'remora.component',
  /** SPIFFE ID of the mTLS peer (inbound: the caller; outbound: the upstream that answered). */
  peerSpiffeId: 'remora.peer.spiffe_id',
  /** Upstream (destination service) name of an outbound call. */
  upstream: 'remora.upstream',
  /** The endpoint an outbound attempt went to, host:port. */
  endpoint: 'remora.endpoint',
  /** Attempt number of an outbound CLIENT span, 1 for the first try. */
  attempt: 'remora.attempt',
  /** Retries made for a request (on the inbound/outer span: attempts − 1). */
  retryCount: 'remora.retry.count',
  /** Intention decision for the request: allow or deny. */
  intentionDecision: 'remora.intention.decision',
  /** The intention that decided, as "source → destination". */
  intentionRule: 'remora.intention.rule',
  /** The REMORA_E_… code when the proxy (not the app) produced the error. */
  errorCode: 'remora.error.code',
  /** Traffic direction through the proxy: inbound or outbound. */
  direction: 'remora.direction',
  /** Protocol of the listener: tcp, http, http2, grpc. */
  protocol: 'remora.protocol',
  /** TCP connection span: bytes sent to the peer / received from it. */
  bytesSent: 'remora.bytes.sent',
  bytesReceived: 'remora.bytes.received',
  /** Control-plane work: the node and service a certificate was issued for. */
  node: 'remora.node',
  service: 'remora.service',
  /** NATS subject of a request carried between agent and control. */
  natsSubject: 'remora.nats.subject',
} as const;

/** Resource attribute names used by createTracing (host.name is still "incubating" upstream). */
export const RESOURCE_ATTR = {
  serviceName: 'service.name',
  serviceInstanceId: 'service.instance.id',
  hostName: 'host.name',
  component: REMORA_ATTR.component,
} as const;

/** Methods the HTTP semantic conventions know; anything else is reported as `_OTHER`. */
const KNOWN_METHODS = new Set([
  'CONNECT',
  'DELETE',
  'GET',
  'HEAD',
  'OPTIONS',
  'PATCH',
  'POST',
  'PUT',
  'TRACE',
  'QUERY',
]);

/** The `http.request.method` value (and `http.request.method_original` when it differs). */
export function httpMethodAttributes(method: string): Attributes {
  const upper = method.toUpperCase();
  if (KNOWN_METHODS.has(upper)) {
    return upper === method
      ? { [ATTR_HTTP_REQUEST_METHOD]: upper }
      : { [ATTR_HTTP_REQUEST_METHOD]: upper, [ATTR_HTTP_REQUEST_METHOD_ORIGINAL]: method };
  }
  return { [ATTR_HTTP_REQUEST_METHOD]: '_OTHER', [ATTR_HTTP_REQUEST_METHOD_ORIGINAL]: method };
}

/**
 * Span name per the HTTP conventions: `{method} {route}` when a low-cardinality route is known,
 * otherwise just `{method}` (never the raw path: it would explode cardinality).
 */
export function httpSpanName(method: string, route?: string): string {
  const upper = method.toUpperCase();
  const m = KNOWN_METHODS.has(upper) ? upper : 'HTTP';
  return route ? `${m} ${route}` : m;
}

function splitTarget(target: string): { path: string; query?: string } {
  const q = target.indexOf('?');
  return q < 0 ? { path: target } : { path: target.slice(0, q), query: target.slice(q + 1) };
}

export interface HttpServerRequestInfo {
  method: string;
  /** The request target as received: path and optional query. */
  target: string;
  scheme: 'http' | 'https';
  /** Host the client addressed (Host / :authority without port), and the local port. */
  serverAddress?: string;
  serverPort?: number;
  /** The immediate peer of the connection. */
  clientAddress?: string;
  clientPort?: number;
  userAgent?: string;
  /** "1.1" or "2". */
  protocolVersion?: string;
  route?: string;
}

/** Attributes for a SERVER span (one inbound HTTP request), available at span start. */
export function httpServerAttributes(info: HttpServerRequestInfo): Attributes {
  const { path, query } = splitTarget(info.target);
  const attrs: Attributes = {
    ...httpMethodAttributes(info.method),
    [ATTR_URL_PATH]: path,
    [ATTR_URL_SCHEME]: info.scheme,
  };
  if (query !== undefined) attrs[ATTR_URL_QUERY] = query;
  if (info.route !== undefined) attrs[ATTR_HTTP_ROUTE] = info.route;
  if (info.serverAddress !== undefined) attrs[ATTR_SERVER_ADDRESS] = info.serverAddress;
  if (info.serverPort !== undefined) attrs[ATTR_SERVER_PORT] = info.serverPort;
  if (info.clientAddress !== undefined) {
    attrs[ATTR_CLIENT_ADDRESS] = info.clientAddress;
    attrs[ATTR_NETWORK_PEER_ADDRESS] = info.clientAddress;
  }
  if (info.clientPort !== undefined) {
    attrs[ATTR_CLIENT_PORT] = info.clientPort;
    attrs[ATTR_NETWORK_PEER_PORT] = info.clientPort;
  }
  if (info.userAgent !== undefined) attrs[ATTR_USER_AGENT_ORIGINAL] = info.userAgent;
  if (info.protocolVersion !== undefined)
    attrs[ATTR_NETWORK_PROTOCOL_VERSION] = info.protocolVersion;
  return attrs;
}

export interface HttpClientRequestInfo {
  method: string;
  /** Full URL of the attempt, e.g. https://10.0.0.7:21000/orders?id=1. */
  url: string;
  /** Host and port the attempt connects to (the chosen endpoint). */
  serverAddress: string;
  serverPort: number;
  /** Attempt number starting at 1; `http.request.resend_count` is set from the second on. */
  attempt?: number;
  protocolVersion?: string;
}

/** Attributes for a CLIENT span (one outbound attempt), available at span start. */
export function httpClientAttributes(info: HttpClientRequestInfo): Attributes {
  const attrs: Attributes = {
    ...httpMethodAttributes(info.method),
    [ATTR_URL_FULL]: info.url,
    [ATTR_SERVER_ADDRESS]: info.serverAddress,
    [ATTR_SERVER_PORT]: info.serverPort,
  };
  if (info.attempt !== undefined) {
    attrs[REMORA_ATTR.attempt] = info.attempt;
    if (info.attempt > 1) attrs[ATTR_HTTP_REQUEST_RESEND_COUNT] = info.attempt - 1;
  }
  if (info.protocolVersion !== undefined)
    attrs[ATTR_NETWORK_PROTOCOL_VERSION] = info.protocolVersion;
  return attrs;
}

/** Attributes known once the response status is known. */
export function httpResponseAttributes(statusCode: number): Attributes {
  return { [ATTR_HTTP_RESPONSE_STATUS_CODE]: statusCode };
}

/**
 * Span status for an HTTP response per the conventions: 5xx is an error on both sides; 4xx is an
 * error only on CLIENT spans. Returns undefined when the status should stay UNSET.
 */
export function httpSpanStatus(statusCode: number, kind: SpanKind): SpanStatus | undefined {
  if (statusCode >= 500 || (kind === SpanKind.CLIENT && statusCode >= 400)) {
    return { code: SpanStatusCode.ERROR };
  }
  return undefined;
}

/**
 * Attributes and status for a failure with no HTTP response (connect refused, timeout, reset):
 * `error.type` is the Remora code or the low-level error code.
 */
export function errorAttributes(errorType: string, remoraCode?: string): Attributes {
  const attrs: Attributes = { [ATTR_ERROR_TYPE]: errorType };
  if (remoraCode !== undefined) attrs[REMORA_ATTR.errorCode] = remoraCode;
  return attrs;
}

export interface TcpConnectionInfo {
  direction: 'inbound' | 'outbound';
  peerAddress?: string;
  peerPort?: number;
  upstream?: string;
}

/** Attributes for a span covering one proxied TCP connection, at span start. */
export function tcpConnectionAttributes(info: TcpConnectionInfo): Attributes {
  const attrs: Attributes = {
    [ATTR_NETWORK_TRANSPORT]: 'tcp',
    [REMORA_ATTR.direction]: info.direction,
    [REMORA_ATTR.protocol]: 'tcp',
  };
  if (info.peerAddress !== undefined) attrs[ATTR_NETWORK_PEER_ADDRESS] = info.peerAddress;
  if (info.peerPort !== undefined) attrs[ATTR_NETWORK_PEER_PORT] = info.peerPort;
  if (info.upstream !== undefined) attrs[REMORA_ATTR.upstream] = info.upstream;
  return attrs;
}

/** Byte counts at the end of a TCP connection span. */
export function tcpBytesAttributes(sent: number, received: number): Attributes {
  return { [REMORA_ATTR.bytesSent]: sent, [REMORA_ATTR.bytesReceived]: received };
}
