// Prometheus metrics of one proxy (its own registry). Names start with `remora_proxy_`,
// latencies are histograms in seconds, and every label takes a bounded set of values
// (directions, upstream names from the snapshot, status classes, fixed reasons).
import {
  Counter,
  Gauge,
  Registry,
  formatLabels,
  formatValue,
  header,
  registerCustom,
  registerProcessMetrics,
} from './prom.ts';

/** `exposed`: requests to the paths the sidecar exposes in plain HTTP (proxy.expose.paths). */
export type Direction = 'inbound' | 'outbound' | 'exposed';

const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export interface RequestMeter {
  /** Records one finished request (status of the answer, duration in ms). */
  observe(status: number, ms: number): void;
}

export function createProxyMetrics(o: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (o.defaultMetrics !== false) registerProcessMetrics(registry, 'remora_proxy_process_');
  // Request counts and latencies are on the hot path: plain arrays per (direction, service),
  // rendered for Prometheus at scrape time (prom-client's labelled observe() cost ~35 µs per
  // request per proxy in a profile).
  const series: Array<{
    direction: string;
    service: string;
    buckets: Float64Array;
    sum: number;
    count: number;
    byClass: number[];
  }> = [];
  const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'];
  const requestsName = 'remora_proxy_requests_total';
  const requestsHelp =
    'HTTP requests answered, by direction, peer service (upstream for outbound, local service for inbound) and status class.';
  const latencyName = 'remora_proxy_request_duration_seconds';
  const latencyHelp = 'Time from request head received to response head sent, in seconds.';
  const SERIES_LABELS = ['direction', 'service'];
  const LE_LABELS = ['direction', 'service', 'le'];
  const CODE_LABELS = ['direction', 'service', 'code'];
  registerCustom(registry, () => {
    let s = header(requestsName, requestsHelp, 'counter');
    for (const x of series)
      x.byClass.forEach((v, i) => {
        if (v > 0)
          s += `${requestsName}${formatLabels(CODE_LABELS, [x.direction, x.service, CLASSES[i]!])} ${v}\n`;
      });
    return s;
  });
  registerCustom(registry, () => {
    let s = header(latencyName, latencyHelp, 'histogram');
    for (const x of series) {
      const base = [x.direction, x.service];
      let acc = 0;
      LATENCY_BUCKETS.forEach((le, i) => {
        acc += x.buckets[i]!;
        s += `${latencyName}_bucket${formatLabels(LE_LABELS, [...base, String(le)])} ${acc}\n`;
      });
      s += `${latencyName}_bucket${formatLabels(LE_LABELS, [...base, '+Inf'])} ${x.count}\n`;
      s += `${latencyName}_sum${formatLabels(SERIES_LABELS, base)} ${formatValue(x.sum)}\n`;
      s += `${latencyName}_count${formatLabels(SERIES_LABELS, base)} ${x.count}\n`;
    }
    return s;
  });
  const connections = new Gauge({
    name: 'remora_proxy_active_connections',
    help: 'Client connections open on the proxy listeners (inbound, each TCP stream of a peer sidecar tunnel counts as one).',
    labelNames: ['direction', 'service'] as const,
    registers: [registry],
  });
  const connectionsTotal = new Counter({
    name: 'remora_proxy_connections_total',
    help: 'Client connections accepted on the proxy listeners (inbound, each TCP stream of a peer sidecar tunnel counts as one).',
    labelNames: ['direction', 'service'] as const,
    registers: [registry],
  });
  const handshakeFailures = new Counter({
    name: 'remora_proxy_tls_handshake_failures_total',
    help: "TLS handshakes refused, by direction (inbound: the mTLS listener; ingress: an ingress gateway's TLS listeners) and reason (no_client_cert, expired, not_yet_valid, unknown_ca, bad_identity, protocol, other).",
    labelNames: ['direction', 'reason'] as const,
    registers: [registry],
  });
  const denials = new Counter({
    name: 'remora_proxy_intention_denials_total',
    help: 'Calls denied by intentions, by layer (l4 connection, l7 request) and whether enforced (false in audit mode).',
    labelNames: ['layer', 'enforced'] as const,
    registers: [registry],
  });
  const jwtFailures = new Counter({
    name: 'remora_proxy_jwt_failures_total',
    help: 'Inbound requests whose token did not satisfy an intention requiring a JWT, by jwt-provider and reason (missing, malformed, alg, unknown_key, bad_signature, expired, not_yet_valid, issuer, audience, no_keys, unknown_provider, claims).',
    labelNames: ['provider', 'reason'] as const,
    registers: [registry],
  });
  const refused = new Counter({
    name: 'remora_proxy_http_refused_total',
    help: 'HTTP requests refused by the parser (malformed, smuggling attempts, oversized heads, slow heads).',
    labelNames: ['direction', 'reason'] as const,
    registers: [registry],
  });
  const rateLimited = new Counter({
    name: 'remora_proxy_rate_limited_total',
    help: "Inbound requests answered 429 because the instance's rate limit was reached, by limit (instance, or a route's path).",
    labelNames: ['limit'] as const,
    registers: [registry],
  });
  const exposedRefused = new Counter({
    name: 'remora_proxy_exposed_sources_refused_total',
    help: "Connections to an exposed check listener (expose.checks) closed on arrival: they came neither from loopback nor from the Consul agent's address.",
    registers: [registry],
  });
  const accessLogDropped = new Counter({
    name: 'remora_proxy_access_log_dropped_total',
    help: 'Access log lines dropped: the output was more than 1 MiB behind, or the file could not be written.',
    registers: [registry],
  });
  const inboundLimited = new Counter({
    name: 'remora_proxy_inbound_connections_limited_total',
    help: 'Connections to the sidecar port closed on arrival because it already held max_inbound_connections.',
    registers: [registry],
  });
  const plainConnections = new Counter({
    name: 'remora_proxy_inbound_plain_connections_total',
    help: 'Plain (non-TLS) connections the sidecar port took in permissive mutual TLS mode and piped to the local app, without identity or intentions.',
    registers: [registry],
  });
  const retries = new Counter({
    name: 'remora_proxy_retries_total',
    help: 'Retried attempts, by upstream and reason (connect, reset, timeout, status_5xx, status_route: a status its route retries on, status_grpc: a gRPC status its route retries on).',
    labelNames: ['upstream', 'reason'] as const,
    registers: [registry],
  });
  const budgetExhausted = new Counter({
    name: 'remora_proxy_retry_budget_exhausted_total',
    help: 'Failed requests not retried because the retry budget was used up.',
    labelNames: ['upstream'] as const,
    registers: [registry],
  });
  const failovers = new Counter({
    name: 'remora_proxy_failovers_total',
    help: "Calls sent to a failover target (a service-resolver's Failover) because their target had no endpoint to take, by that target and the one that took them.",
    labelNames: ['upstream', 'target'] as const,
    registers: [registry],
  });
  const ejections = new Counter({
    name: 'remora_proxy_outlier_ejections_total',
    help: 'Endpoints ejected by passive outlier detection.',
    labelNames: ['upstream'] as const,
    registers: [registry],
  });
  const overflows = new Counter({
    name: 'remora_proxy_circuit_breaker_overflows_total',
    help: 'Requests refused by a circuit breaker, by upstream and limit (connections, pending, requests).',
    labelNames: ['upstream', 'limit'] as const,
    registers: [registry],
  });
  const certExpiry = new Gauge({
    name: 'remora_proxy_certificate_expiry_timestamp_seconds',
    help: 'notAfter of the certificate in use (kind=leaf) and of each trusted root (kind=root), as a Unix time in seconds.',
    labelNames: ['kind', 'index'] as const,
    registers: [registry],
  });
  const snapshotVersion = new Gauge({
    name: 'remora_proxy_snapshot_version',
    help: 'Version of the applied config snapshot.',
    registers: [registry],
  });
  const snapshotsRejected = new Counter({
    name: 'remora_proxy_snapshots_rejected_total',
    help: 'Config snapshots refused (invalid, or listeners could not bind); the last good one kept serving.',
    registers: [registry],
  });
  const tunnelErrors = new Counter({
    name: 'remora_proxy_tcp_tunnel_errors_total',
    help: 'Inbound TCP tunnels (remora-tcp/1) closed because the peer broke the protocol; their streams were closed.',
    registers: [registry],
  });
  const h2TunnelErrors = new Counter({
    name: 'remora_proxy_h2_tunnel_errors_total',
    help: 'Inbound HTTP/2 tunnels (remora-h2/1) closed because the peer broke the protocol; their streams were reset.',
    registers: [registry],
  });
  const endpointsGauge = new Gauge({
    name: 'remora_proxy_upstream_endpoints',
    help: 'Endpoints known per upstream, by state (active, ejected).',
    labelNames: ['upstream', 'state'] as const,
    registers: [registry],
  });

  const meters = new Map<string, RequestMeter>();

  return {
    registry,
    handshakeFailures,
    denials,
    jwtFailures,
    refused,
    rateLimited,
    exposedRefused,
    accessLogDropped,
    inboundLimited,
    plainConnections,
    tunnelErrors,
    h2TunnelErrors,
    retries,
    budgetExhausted,
    failovers,
    ejections,
    overflows,
    certExpiry,
    snapshotVersion,
    snapshotsRejected,
    endpointsGauge,
    connections,
    connectionsTotal,
    /** A cached per-(direction, service) meter: label lookups happen once, not per request. */
    meter(direction: Direction, service: string): RequestMeter {
      const key = `${direction}\0${service}`;
      let m = meters.get(key);
      if (m === undefined) {
        const x = {
          direction,
          service,
          buckets: new Float64Array(LATENCY_BUCKETS.length),
          sum: 0,
          count: 0,
          byClass: [0, 0, 0, 0, 0],
        };
        series.push(x);
        m = {
          observe(status, ms) {
            const sec = ms / 1000;
            x.sum += sec;
            x.count++;
            for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
              if (sec <= LATENCY_BUCKETS[i]!) {
                x.buckets[i]!++;
                break;
              }
            }
            const c = status < 200 ? 0 : status < 300 ? 1 : status < 400 ? 2 : status < 500 ? 3 : 4;
            x.byClass[c]!++;
          },
        };
        meters.set(key, m);
      }
      return m;
    },
  };
}

export type ProxyMetrics = ReturnType<typeof createProxyMetrics>;
