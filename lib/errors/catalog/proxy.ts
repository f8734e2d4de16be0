import type { ErrorSpec } from './types.ts';

/** Error codes of the proxy area. Append only; never rename or reuse a code. */
export const PROXY_ERRORS = {
  REMORA_E_PROXY_FRAME_TOO_LARGE: {
    meaning:
      'A frame on the agent↔proxy socket exceeded the maximum frame size; the connection was closed.',
    remedy:
      'Check which side sent the oversized frame (the log names the size); a snapshot that large usually means a runaway endpoint or intention list.',
  },
  REMORA_E_PROXY_FRAME_INVALID: {
    meaning:
      'A frame on the agent↔proxy socket is not valid JSON or not a known frame type of protocol version 1.',
    remedy:
      'Run the agent and the proxy from the same Remora version; the log names the field that failed.',
  },
  REMORA_E_PROXY_SNAPSHOT_INVALID: {
    meaning:
      'A config snapshot failed validation; it was refused and the last good snapshot keeps serving.',
    remedy:
      'Fix the named field in the snapshot source (agent state or the --static-config file) and send it again.',
  },
  REMORA_E_PROXY_AGENT_UNREACHABLE: {
    meaning:
      "The proxy cannot reach its agent's Unix socket; it keeps serving the last good snapshot and reconnects with backoff.",
    remedy: 'Start or restart `remora agent` on this host, and check the socket path and its mode.',
  },
  REMORA_E_PROXY_LISTEN_FAILED: {
    meaning: 'A proxy listener could not bind its address and port.',
    remedy:
      'Free the port (another process holds it) or change the sidecar port / local_bind_port in the service definition.',
  },
  REMORA_E_PROXY_METRICS_LISTEN_FAILED: {
    meaning:
      "The proxy could not bind the public /metrics listener its `envoy_prometheus_bind_addr` asks for (the port is taken, or the address is not the host's). The sidecar serves its traffic without it and tries again every 10 s.",
    remedy:
      "Free the port (another process, or another instance of the host with the same setting), or set another `envoy_prometheus_bind_addr` in the definition's proxy config or in proxy-defaults' Config.",
  },
  REMORA_E_PROXY_NOT_READY: {
    meaning: 'The proxy has no applied snapshot yet (no certificate, no listeners).',
    remedy: 'Wait for the agent to send a snapshot; `remora status` shows whether the agent runs.',
    status: 503,
  },
  REMORA_E_PROXY_INTENTION_DENIED: {
    meaning: 'An intention denies this source service calling this destination service.',
    remedy:
      'Allow the call with `remora intention create <source> <destination>` if it is wanted; `remora explain <source> <destination>` shows the deciding rule.',
    status: 403,
  },
  REMORA_E_PROXY_JWT_MISSING: {
    meaning:
      'The request carries no token for a jwt-provider that the intention (or L7 permission) allowing it requires, so no rule allows it; answered 401.',
    remedy:
      "Send a token from the provider the message names where its jwt-provider entry's `Locations` look (by default `Authorization: Bearer <token>`); `remora explain <source> <destination>` lists the JWT requirements.",
    status: 401,
  },
  REMORA_E_PROXY_JWT_INVALID: {
    meaning:
      'The request carries a token that does not verify for a jwt-provider an intention requires: malformed, signed with an algorithm Remora refuses (`none`, HMAC) or a key not in the set, bad signature, expired, not yet valid, wrong issuer or audience, or the provider has no keys (yet); answered 401.',
    remedy:
      "Get a fresh token from the provider's issuer; if tokens are good, check the jwt-provider entry (`Issuer`, `Audiences`, `JSONWebKeySet`, `ClockSkewSeconds`) and `remora status` for problems reading it or fetching its keys. The message names the reason; tokens and keys are never logged.",
    status: 401,
  },
  REMORA_E_PROXY_NO_ENDPOINTS: {
    meaning: 'The upstream has no healthy endpoint (none known, or all ejected).',
    remedy:
      'Check the destination instances and their health checks in Consul (`remora status`); the proxy retries once endpoints reappear.',
    status: 503,
  },
  REMORA_E_PROXY_CONNECT_FAILED: {
    meaning: 'The proxy could not open a connection to the upstream endpoint or local application.',
    remedy:
      'Check that the destination (or local app) listens on the address named in the message and that no firewall drops the connection.',
    status: 502,
  },
  REMORA_E_PROXY_CONNECT_TIMEOUT: {
    meaning: 'Opening a connection to the upstream endpoint took longer than connectTimeoutMs.',
    remedy: 'Check network reachability of the endpoint, or raise connectTimeoutMs.',
    status: 504,
  },
  REMORA_E_PROXY_REQUEST_TIMEOUT: {
    meaning:
      "The upstream did not answer within requestTimeoutMs (or, from the destination's own sidecar, its app did not within local_request_timeout_ms).",
    remedy:
      'Look at the destination service latency, or raise requestTimeoutMs for this upstream (local_request_timeout_ms / LocalRequestTimeoutMs for the destination).',
    status: 504,
  },
  REMORA_E_PROXY_UPSTREAM_RESET: {
    meaning: 'The upstream connection closed or reset before a complete response.',
    remedy:
      'Check the destination service logs for crashes or restarts; idempotent requests were retried where the budget allowed.',
    status: 502,
  },
  REMORA_E_PROXY_TLS_NEGOTIATION: {
    meaning:
      "The TLS handshake with an upstream failed because the two sides share no TLS version or cipher suite: the caller's outgoing and the destination's incoming parameters (Consul's `mesh` entry, `TLS.Outgoing` and `TLS.Incoming`) do not overlap.",
    remedy:
      'Make the versions and suites overlap: one `mesh` entry sets both directions for every proxy, so a mismatch usually means proxies still on an older snapshot or a peer outside Remora; see docs/proxy.md ("Mesh TLS versions and suites").',
    status: 502,
  },
  REMORA_E_PROXY_UPSTREAM_IDENTITY: {
    meaning:
      'The upstream presented a certificate for another identity than the destination service, or an untrusted one.',
    remedy:
      'Check that the endpoint address in Consul really belongs to the destination service and that both sides trust the same roots.',
    status: 502,
  },
  REMORA_E_PROXY_OVERLOADED: {
    meaning:
      'A circuit breaker is open: too many connections, pending or active requests to this upstream.',
    remedy:
      'Reduce the call rate or raise the circuit breaker limits (maxConnections, maxPendingRequests, maxRequests) for this upstream.',
    status: 503,
  },
  REMORA_E_PROXY_RATE_LIMITED: {
    meaning:
      "The destination instance admits no more requests now: its service-defaults `RateLimits` (per instance, or for the request's path) were reached. The request did not reach the app. gRPC callers get status 8 (RESOURCE_EXHAUSTED).",
    remedy:
      "Retry after the `retry-after` seconds of the answer, spread the calls over time, or raise the service's `RateLimits.InstanceLevel` (or the route's) in its service-defaults; the limit is per instance, so more instances admit more.",
    status: 429,
  },
  REMORA_E_PROXY_BAD_REQUEST: {
    meaning:
      'The HTTP request is malformed or ambiguous (for example conflicting Content-Length and Transfer-Encoding) and was refused.',
    remedy: 'Fix the client: send one valid Content-Length or chunked encoding, no obs-fold.',
    status: 400,
  },
  REMORA_E_PROXY_HEADERS_TOO_LARGE: {
    meaning: 'The request head exceeded the header size or count limit.',
    remedy: 'Send fewer or smaller headers (cookies are the usual cause).',
    status: 431,
  },
  REMORA_E_PROXY_BODY_TIMEOUT: {
    meaning: 'The client stopped sending its request body for longer than the client idle timeout.',
    remedy:
      'Check the client or the network between it and the proxy; slow or stalled uploads are cut off to protect the proxy (`clientIdleTimeoutMs`).',
    status: 408,
  },
  REMORA_E_PROXY_HEADER_TIMEOUT: {
    meaning: 'The client did not send a complete request head in time.',
    remedy: 'Check the client; slow or stalled clients are cut off to protect the proxy.',
    status: 408,
  },
  REMORA_E_PROXY_BODY_TOO_LARGE: {
    meaning: 'A request body was larger than the proxy accepts for this route.',
    remedy: 'Send a smaller body.',
    status: 413,
  },
  REMORA_E_PROXY_DRAINING: {
    meaning: 'The proxy is draining before shutdown and accepts no new requests.',
    remedy: 'Retry; the caller will be routed to another instance.',
    status: 503,
  },
  REMORA_E_PROXY_APP_UNAVAILABLE: {
    meaning: 'The local application did not accept the connection or answer the request.',
    remedy: 'Check that the application runs and listens on the address in the message.',
    status: 502,
  },
  REMORA_E_PROXY_BUDGET_EXHAUSTED: {
    meaning: 'A request failed and the retry budget of its upstream allowed no further retry.',
    remedy:
      'The upstream is failing broadly; look at its health. Raise retryBudgetRatio only if retries are cheap.',
    status: 503,
  },
  REMORA_E_PROXY_TRANSPARENT_UNKNOWN_HOST: {
    meaning:
      "An intercepted plain-HTTP call named a Host that is none of the instance's HTTP upstreams (service, service:port or service.service.consul), so the proxy cannot tell where it should go.",
    remedy:
      'Call the service by its Consul name (http://api:8080/ or http://api.service.consul/), or add the service to the upstreams of the calling instance.',
    status: 421,
  },
  REMORA_E_PROXY_INGRESS_UNKNOWN_HOST: {
    meaning:
      "A call reached an HTTP, HTTP/2 or gRPC listener of an ingress gateway with a Host (or :authority) that none of the listener's services takes: neither one of their `Hosts` nor the default `<service>.ingress.*`.",
    remedy:
      'Call the gateway with a Host the listener routes (e.g. `curl -H "Host: api.ingress.example.com" http://gateway:8080/`), or add the host to the service\'s `Hosts` in the ingress-gateway entry (docs/gateways.md).',
    status: 404,
  },
  REMORA_E_PROXY_PATH_NOT_EXPOSED: {
    meaning:
      "A plain-HTTP request reached one of the sidecar's exposed-path listeners (`proxy.expose.paths`) for a path it does not expose: each such port serves one path of the app and nothing else.",
    remedy:
      "Call the path the port exposes, or add the path to the sidecar's `proxy.expose.paths` (with its own listener port); calls between services go through the mesh instead.",
    status: 404,
  },
  REMORA_E_PROXY_EXPOSED_SOURCE_REFUSED: {
    meaning:
      "A connection reached a listener the agent opened for a health check (`proxy.expose.checks`) from an address that is neither loopback nor the Consul agent's; as in Consul, those listeners serve the Consul agent's probes only, so it was closed and counted in remora_proxy_exposed_sources_refused_total.",
    remedy:
      "Probe the check from the Consul agent (or the host itself); to serve the path to other callers (a monitoring system), list it under the sidecar's `proxy.expose.paths`, whose listeners are public.",
  },
  REMORA_E_PROXY_TUNNEL_PROTOCOL: {
    meaning:
      'A peer sidecar broke a tunnel protocol: remora-tcp/1 (for example sent data before its stream was accepted, or more than its window allows; the tunnel and the TCP connections it carried were closed) or remora-h2/1 (a head that is no JSON object of valid fields, data beyond the credit; the connection was closed and its HTTP/2 streams reset).',
    remedy:
      'Run the same Remora version on both sides; if the peer is not a Remora sidecar, find what holds the mesh certificate of the service named in the log.',
  },
  REMORA_E_PROXY_ACCESS_LOG_FAILED: {
    meaning:
      'The proxy cannot write its access logs to the file proxy-defaults `AccessLogs.Path` names (a missing directory, no permission, a full disk); it drops them, counted in remora_proxy_access_log_dropped_total, and serves on.',
    remedy:
      "Create the directory and let the user the proxies run as write there, or point AccessLogs.Path elsewhere (or use Type stdout: the agent keeps each proxy's output in its proxy.log).",
  },
  REMORA_E_PROXY_INBOUND_LIMIT: {
    meaning:
      "The sidecar port already held its max_inbound_connections connections, so new ones were closed as they arrived; callers' sidecars open them on other instances.",
    remedy:
      'Add instances, or raise MaxInboundConnections in the service-defaults entry (max_inbound_connections in the sidecar proxy config).',
  },
  REMORA_E_PROXY_TERMINATING_UNKNOWN_SERVICE: {
    meaning:
      'A mesh caller reached a terminating gateway asking (by TLS SNI) for a service the gateway does not link now, so the handshake was refused.',
    remedy:
      "Link the service in the gateway's `terminating-gateway` entry, or check `remora status` on the gateway's host for why it is left out.",
  },
} as const satisfies Record<string, ErrorSpec>;
