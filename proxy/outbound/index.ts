// Outbound: the local app → 127.0.0.1:<localBindPort> → mTLS to a chosen endpoint of the
// destination, accepting only the destination's SPIFFE ID. HTTP stack, top to bottom:
//   strict HTTP/1.1 server → metrics → error responder → tracing (CLIENT span)
//   → circuit breaker (active requests) → retry (budget, idempotency, buffered bodies)
//   → balance (P2C / round robin over non-ejected endpoints) → pooled keep-alive mTLS connection
// TCP: per-connection balancing, connect retries, a stream of a shared tunnel (or a splice).
// HTTP/2 and gRPC: h2c in, h2 over mTLS out.
import type { Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { loadHttp2 } from '../lazy.ts';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import type {
  HeaderModifiers,
  HttpRoute,
  TrafficSplit,
  UpstreamConfig,
  UpstreamTarget,
} from '../../lib/proxy-api/index.ts';
import { compileRoute, modifyH1Headers, modifyH2Headers } from '../../lib/proxy-api/index.ts';
import type { RequestFacts } from '../../lib/intentions/index.ts';
import { headersRecord } from '../http/h1-parse.ts';
import type { ProxyEnv } from '../env.ts';
import { observeLatency, type EndpointState } from '../balance/endpoints.ts';
import { serveH1, spliceSockets } from '../http/h1-server.ts';
import {
  endsStream,
  forwardH2Stream,
  H2AttemptError,
  H2RequestBody,
  respondH2Error,
} from '../http/h2-forward.ts';
import { isIdempotent, newRequestContext } from '../stages/types.ts';
import {
  composeStages,
  type Handler,
  type ProxyRequest,
  type RequestContext,
  type RouteSettings,
  type Stage,
} from '../stages/types.ts';
import { createErrorResponderStage } from '../stages/responder.ts';
import { createMetricsStage } from '../stages/metrics.ts';
import { createAccessLogStage, h2Detail, h2Fields, roundMs } from '../access-log.ts';
import { createActiveRequestsStage } from '../stages/limits.ts';
import {
  createRetryStage,
  retriedStatus,
  retryStatusReason,
  type RetryReason,
} from '../stages/retry.ts';
import { Cluster } from './cluster.ts';
import { muxable } from '../http/mux-client.ts';
import { createLimitedErrorLog } from '../log-limit.ts';
import {
  cookieValue,
  newHashCookie,
  queryValue,
  requestHash,
  type HashInputs,
} from '../balance/hash.ts';

/** Hash inputs of something that has no request, only a caller's address (a TCP connection). */
const NO_FIELDS = (sourceIp: () => string | undefined): HashInputs => ({
  header: () => undefined,
  cookie: () => undefined,
  query: () => undefined,
  sourceIp,
});

export interface Upstream {
  readonly cluster: Cluster;
  handleConnection(socket: Socket): void;
  /** An HTTP/1.1 request through this upstream's whole outbound stack. */
  handleRequest: Handler;
  /**
   * An HTTP/1.1 request as its own listener takes one: its service-router and splitter first
   * (an ingress gateway's listeners hand requests over this way).
   */
  handleRoutedRequest: Handler;
  /**
   * An HTTP/2 or gRPC stream as its own listener takes one: routes and splits first, then
   * `extra`'s answer header changes after theirs (an ingress gateway's).
   */
  handleRoutedH2Stream(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    flags: number,
    extra?: RouteSettings,
  ): void;
  /** An HTTP/2 or gRPC stream through this upstream's outbound path (`route`: its route's). */
  handleH2Stream(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    flags: number,
    route?: RouteSettings,
  ): void;
  update(config: UpstreamConfig): void;
  /** The TLS material changed (see `Cluster.tlsChanged`). */
  tlsChanged(): void;
  /** This upstream's cluster, then those of its split targets. */
  clusters(): Cluster[];
  drain(): void;
  readonly connections: number;
  close(): void;
}

/**
 * A request target with the route's matched path replaced by its `prefixRewrite`, query kept
 * (Envoy's prefix_rewrite: `/api` → `/` turns `/api/users` into `//users`). The result always
 * starts with `/`, so an empty rewrite cannot make a request line without a path.
 */
export function rewritePath(target: string, route: HttpRoute): string {
  const matched = route.match.pathPrefix ?? route.match.pathExact ?? '';
  if (route.prefixRewrite === undefined || !target.startsWith(matched)) return target;
  const out = route.prefixRewrite + target.slice(matched.length);
  return out.startsWith('/') ? out : `/${out}`;
}

/**
 * What a route and the share it picked set over the target's own settings (the share's answer
 * header changes after the route's); undefined when nothing.
 */
function routeSettings(
  route: HttpRoute | null,
  split: TrafficSplit | null,
): RouteSettings | undefined {
  // the common case, on every request of an upstream without routes or splits: nothing to build
  if (route === null && split === null) return undefined;
  const { requestTimeoutMs, maxRetries, retryOn, retryOnGrpc } = route ?? {};
  const responseHeaders = [route?.responseHeaders, split?.responseHeaders].filter(
    (m): m is HeaderModifiers => m !== undefined,
  );
  if (
    requestTimeoutMs === undefined &&
    maxRetries === undefined &&
    retryOn === undefined &&
    retryOnGrpc === undefined &&
    responseHeaders.length === 0
  )
    return undefined;
  return {
    ...(requestTimeoutMs !== undefined ? { requestTimeoutMs } : {}),
    ...(maxRetries !== undefined ? { maxRetries } : {}),
    ...(retryOn !== undefined ? { retryOn } : {}),
    ...(retryOnGrpc !== undefined ? { retryOnGrpc } : {}),
    ...(responseHeaders.length > 0 ? { responseHeaders } : {}),
  };
}

/** Adds `name=value` to an HTTP/1.1 request's one `Cookie` field (RFC 6265 allows no second). */
function addH1Cookie(headers: string[], kv: string): void {
  for (let i = 0; i < headers.length; i += 2)
    if (headers[i]!.toLowerCase() === 'cookie') {
      headers[i + 1] = `${headers[i + 1]}; ${kv}`;
      return;
    }
  headers.push('cookie', kv);
}

/** A target's upstream: the parent's listener settings, its own everything else. */
function targetUpstream(parent: UpstreamConfig, t: UpstreamTarget): UpstreamConfig {
  return {
    ...t,
    localBindAddress: parent.localBindAddress,
    localBindPort: 0,
    protocol: parent.protocol,
  };
}

const NOT_COUNTED_AGAINST_ENDPOINT = new Set([
  'REMORA_E_PROXY_OVERLOADED',
  'REMORA_E_PROXY_NO_ENDPOINTS',
]);

export function createUpstream(env: ProxyEnv, initial: UpstreamConfig): Upstream {
  const cluster = new Cluster(env, initial);
  const name = initial.destinationName;
  const conns = new Set<{ drain(): void; socket: Socket }>();
  const res = () => cluster.config.resilience;

  // terminal: one attempt on one endpoint; a retry goes to an endpoint the request has not tried
  // while there is one (other requests move a round robin on meanwhile). The set of tried
  // endpoints exists only once a request is retried: a first attempt allocates nothing.
  const tried = new WeakMap<object, Set<EndpointState>>();
  /** The request's hash under the upstream's hash policies (consistent hashing only). */
  const h1Hash = (req: ProxyRequest): number | undefined => {
    const policies = cluster.config.hashPolicies;
    if (policies === undefined) return undefined;
    const field = (n: string) => {
      for (let i = 0; i < req.headers.length; i += 2)
        if (req.headers[i]!.toLowerCase() === n) return req.headers[i + 1]!;
      return undefined;
    };
    return requestHash(policies, {
      header: field,
      cookie: (n) => cookieValue(field('cookie'), n),
      query: (n) => queryValue(req.target, n),
      sourceIp: () => req.ctx.downstream?.remoteAddress,
      // the made-up cookie rides the request too, so a retry hashes the same
      newCookie: (p) => {
        const c = newHashCookie(p);
        addH1Cookie(req.headers, `${p.fieldValue}=${c.value}`);
        (req.ctx.setCookies ??= []).push(c.setCookie);
        return c.value;
      },
    });
  };
  const forward: Handler = async (req) => {
    const now = env.clock.now();
    let seen: Set<EndpointState> | undefined;
    if (req.ctx.retries > 0) {
      seen = tried.get(req.ctx);
      if (seen === undefined) {
        seen = new Set(cluster.endpoints.filter((e) => e.id === req.ctx.endpointId));
        tried.set(req.ctx, seen);
      }
    }
    const ep = cluster.pick(now, seen, h1Hash(req));
    seen?.add(ep);
    req.ctx.endpointId = ep.id;
    req.ctx.upstream = ep;
    ep.active++;
    const t0 = performance.now();
    let response;
    try {
      const timeoutMs = req.ctx.route?.requestTimeoutMs ?? res().requestTimeoutMs;
      // to a peer sidecar that speaks it, many requests share one connection (remora-mux/1)
      response = await (muxable(req)
        ? cluster.mux(ep).request(req, timeoutMs, () => cluster.pool(ep).request(req, timeoutMs))
        : cluster.pool(ep).request(req, timeoutMs));
    } catch (err) {
      ep.active--;
      const e = toRemoraError(err);
      if (!NOT_COUNTED_AGAINST_ENDPOINT.has(e.code)) cluster.outcome(ep, false, env.clock.now());
      throw e;
    }
    ep.active--;
    observeLatency(ep, performance.now() - t0, now);
    cluster.outcome(ep, response.status < 500, now);
    const made = req.ctx.setCookies; // only when consistent hashing made a cookie up
    if (made !== undefined) for (const c of made) response.headers.push('set-cookie', c);
    return response;
  };

  const outboundMeter = env.metrics.meter('outbound', name);
  const tracing = env.tracingStage('client', name);
  const logLimited = createLimitedErrorLog(env.logger);
  const stages: Stage[] = [
    createAccessLogStage(env.accessLog),
    // above the responder: the answers the proxy makes up for errors are counted too
    createMetricsStage(() => outboundMeter),
    createErrorResponderStage({
      onError: (e) => logLimited(e, `outbound request to ${name} failed`),
    }),
    createActiveRequestsStage({
      upstream: name,
      limits: () => res().circuitBreaker,
      counter: cluster.counter,
      onOverflow: (what) => env.metrics.overflows.labels(name, what).inc(),
    }),
    createRetryStage({
      clock: env.clock,
      budget: cluster.budget,
      maxRetries: (req) => req.ctx.route?.maxRetries ?? res().maxRetries,
      maxBufferedBodyBytes: () => res().maxBufferedBodyBytes,
      onRetry: (reason) => env.metrics.retries.labels(name, reason).inc(),
      onBudgetExhausted: () => env.metrics.budgetExhausted.labels(name).inc(),
    }),
    // below retry: one CLIENT span per attempt
    ...(tracing ? [tracing] : []),
  ];
  const handler = composeStages(stages, forward);
  const self = () => env.active().snapshot.instance;

  // --- routes and traffic split (Consul service-router, service-splitter) -------------------
  // each target is an upstream of its own (cluster, breakers, retries, metrics under its name)
  // without a listener; a request or stream is handed to one of them whole
  const targets = new Map<string, Upstream>();
  let routes: Array<{ route: HttpRoute; test: (r: RequestFacts) => boolean }> = [];
  function syncTargets(config: UpstreamConfig): void {
    const want = new Map((config.targets ?? []).map((t) => [t.destinationName, t]));
    for (const [n, up] of targets)
      if (!want.has(n)) {
        targets.delete(n);
        up.close(); // pooled connections finish what they carry, then close
      }
    for (const [n, t] of want) {
      const cur = targets.get(n);
      if (cur) cur.update(targetUpstream(config, t));
      else targets.set(n, createUpstream(env, targetUpstream(config, t)));
    }
    routes = (config.routes ?? []).map((route) => ({ route, test: compileRoute(route) }));
  }
  syncTargets(initial);

  /** The first route a request meets, or null. */
  function routeFor(r: RequestFacts): HttpRoute | null {
    for (const c of routes) if (c.test(r)) return c.route;
    return null;
  }

  /** The share a request goes to by `splits`, picked at random by weight; null without one. */
  function pickSplit(splits: readonly TrafficSplit[] | undefined): TrafficSplit | null {
    if (splits === undefined) return null;
    let r = env.random() * 100;
    let last: TrafficSplit | null = null;
    for (const s of splits) {
      if (s.weight <= 0) continue;
      last = s;
      r -= s.weight;
      if (r < 0) break;
    }
    return last;
  }

  /** The target upstream of a share, or null for this upstream itself. */
  function targetOf(split: TrafficSplit | null): Upstream | null {
    return split === null || split.service === name ? null : (targets.get(split.service) ?? null);
  }

  /**
   * Where a call for `to` (null: this upstream) goes by its resolver's failover: to itself while
   * it has an endpoint to take, else to the first of its failover targets that has one; to itself
   * when none has (its error then names it). Failover targets do not fail over further.
   */
  function failoverOf(to: Upstream | null): Upstream | null {
    const from = to?.cluster ?? cluster;
    const list = from.config.failover;
    if (list === undefined) return to;
    const now = env.clock.now();
    if (from.usable(now)) return to;
    for (const n of list) {
      const next = n === name ? null : targets.get(n);
      if (next === undefined || !(next?.cluster ?? cluster).usable(now)) continue;
      env.metrics.failovers.labels(from.name, n).inc();
      return next;
    }
    return to;
  }

  const dispatch: Handler = (req) => {
    let splits = cluster.config.splits;
    let route: HttpRoute | null = null;
    if (routes.length > 0) {
      route = routeFor({
        method: req.method,
        path: req.target,
        headers: headersRecord(req.headers),
      });
      if (route !== null) {
        splits = route.splits;
        if (route.prefixRewrite !== undefined) req.target = rewritePath(req.target, route);
        if (route.requestHeaders !== undefined) modifyH1Headers(req.headers, route.requestHeaders);
      }
    }
    const split = pickSplit(splits);
    if (split?.requestHeaders !== undefined) modifyH1Headers(req.headers, split.requestHeaders);
    const settings = routeSettings(route, split);
    if (settings !== undefined) req.ctx.route = settings;
    const to = failoverOf(targetOf(split));
    if (to !== null) req.ctx.destination = to.cluster.name;
    const answer = to === null ? handler(req) : to.handleRequest(req);
    const changes = settings?.responseHeaders;
    if (changes === undefined) return answer;
    return answer.then((res) => {
      for (const m of changes) modifyH1Headers(res.headers, m);
      return res;
    });
  };

  const newContext = (): RequestContext => newRequestContext('outbound', self().service, name);

  function track(socket: Socket, drain: () => void): void {
    const entry = { drain, socket };
    conns.add(entry);
    const g = env.metrics.connections.labels('outbound', name);
    g.inc();
    env.metrics.connectionsTotal.labels('outbound', name).inc();
    socket.once('close', () => {
      conns.delete(entry);
      g.dec();
    });
  }

  // --- TCP ----------------------------------------------------------------------------------
  /**
   * Carries one TCP connection to an endpoint: as a stream of a shared `remora-tcp/1` tunnel
   * when the peer speaks it (resolves null), else over its own mTLS connection (resolves it).
   * Connect failures, refused streams and a destination app that did not accept are retried on
   * another endpoint under the budget: no byte reached an app yet.
   */
  async function connectTcp(socket: Socket): Promise<Socket | null> {
    let last: RemoraError | null = null;
    const triedEps = new Set<EndpointState>();
    const policies = cluster.config.hashPolicies;
    // a TCP connection has no request: only the caller's address can be hashed
    const hash =
      policies === undefined
        ? undefined
        : requestHash(
            policies,
            NO_FIELDS(() => socket.remoteAddress),
          );
    for (let attempt = 0; attempt <= res().maxRetries; attempt++) {
      const now = env.clock.now();
      const ep = cluster.pick(now, triedEps, hash);
      triedEps.add(ep);
      if (!cluster.limiter.tryOpen()) {
        env.metrics.overflows.labels(name, 'connections').inc();
        throw new RemoraError(
          'REMORA_E_PROXY_OVERLOADED',
          `circuit breaker for ${name} is open: connections at the limit of ${res().circuitBreaker.maxConnections}`,
          { upstream: name },
        );
      }
      try {
        const tunnels = cluster.tunnel(ep);
        const up =
          !tunnels.unsupported && (await tunnels.open(socket, res().connectTimeoutMs))
            ? null
            : await cluster.dial(ep);
        cluster.outcome(ep, true, now);
        ep.active++;
        (up ?? socket).once('close', () => {
          ep.active--;
          cluster.limiter.release(true);
        });
        return up;
      } catch (err) {
        cluster.limiter.release(true);
        last = toRemoraError(err);
        if (last.code === 'REMORA_E_PROXY_INTENTION_DENIED' || socket.destroyed) throw last;
        if (last.details.refused !== true) cluster.outcome(ep, false, env.clock.now());
        if (attempt < res().maxRetries) {
          if (!cluster.budget.tryRetry(env.clock.now())) break;
          env.metrics.retries.labels(name, 'connect').inc();
        }
      }
    }
    throw (
      last ?? new RemoraError('REMORA_E_PROXY_NO_ENDPOINTS', `upstream ${name} has no endpoint`)
    );
  }

  function handleTcp(socket: Socket): void {
    socket.pause();
    track(socket, () => {});
    cluster.budget.recordRequest(env.clock.now());
    let error: string | undefined;
    if (env.accessLog.enabled) {
      const start = performance.now();
      socket.once('close', () =>
        env.accessLog.write(
          {
            direction: 'outbound',
            source: env.active().snapshot.instance.service,
            destination: name,
            protocol: 'tcp',
            ...(error ? { error } : {}),
            durationMs: roundMs(performance.now() - start),
            bytesIn: socket.bytesRead,
            bytesOut: socket.bytesWritten,
          },
          env.accessLog.detailed ? { downstream: socket } : undefined,
        ),
      );
    }
    connectTcp(socket).then(
      (up) => {
        if (up === null) return;
        if (socket.destroyed) return up.destroy();
        spliceSockets(socket, up);
      },
      (err: unknown) => {
        const e = toRemoraError(err);
        error = e.code;
        // a client that left while its connection was being opened needs no log line
        if (!socket.destroyed) logLimited(e, `outbound TCP to ${name} failed`);
        socket.destroy();
      },
    );
  }

  // --- HTTP/2 and gRPC ----------------------------------------------------------------------
  let h2server: Http2Server | null = null;
  function h2(): Http2Server {
    if (h2server) return h2server;
    const server = loadHttp2().createServer();
    server.on('session', (s) => s.on('error', () => {}));
    server.on('stream', (stream, headers, flags) => routeH2Stream(stream, headers, flags));
    h2server = server;
    return server;
  }

  function routeH2Stream(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    flags: number,
    extra?: RouteSettings,
  ): void {
    stream.on('error', () => {});
    let splits = cluster.config.splits;
    let route: HttpRoute | null = null;
    if (routes.length > 0) {
      const path = String(headers[':path'] ?? '/');
      route = routeFor({ method: String(headers[':method']), path, headers });
      if (route !== null) {
        splits = route.splits;
        if (route.prefixRewrite !== undefined) headers[':path'] = rewritePath(path, route);
        if (route.requestHeaders !== undefined) modifyH2Headers(headers, route.requestHeaders);
      }
    }
    const split = pickSplit(splits);
    if (split?.requestHeaders !== undefined) modifyH2Headers(headers, split.requestHeaders);
    const own = routeSettings(route, split);
    const settings =
      extra?.responseHeaders === undefined
        ? own
        : {
            ...own,
            responseHeaders: [...(own?.responseHeaders ?? []), ...extra.responseHeaders],
          };
    const to = failoverOf(targetOf(split));
    if (to === null) handleH2Stream(stream, headers, flags, settings);
    else to.handleH2Stream(stream, headers, flags, settings);
  }

  function handleH2Stream(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    flags: number,
    route?: RouteSettings,
  ): void {
    const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
    const start = performance.now();
    const meter = outboundMeter;
    const idempotent = isIdempotent(String(headers[':method']));
    const body = new H2RequestBody(stream, endsStream(flags), res().maxBufferedBodyBytes);
    const policies = cluster.config.hashPolicies;
    /** Answer header changes: the route's, then the cookies consistent hashing made up. */
    const answerChanges: HeaderModifiers[] = route?.responseHeaders
      ? [...route.responseHeaders]
      : [];
    const hash =
      policies === undefined
        ? undefined
        : requestHash(policies, {
            header: (n) => {
              const v = headers[n];
              return v === undefined ? undefined : Array.isArray(v) ? v.join(',') : String(v);
            },
            cookie: (n) => {
              const c = headers.cookie as string | string[] | undefined;
              return cookieValue(Array.isArray(c) ? c.join('; ') : c, n);
            },
            query: (n) => queryValue(String(headers[':path'] ?? ''), n),
            sourceIp: () => stream.session?.socket?.remoteAddress,
            newCookie: (p) => {
              const c = newHashCookie(p);
              // HTTP/2 carries each cookie in a field of its own
              const kv = `${p.fieldValue}=${c.value}`;
              const cur = headers.cookie as string | string[] | undefined;
              headers.cookie = (
                cur === undefined ? kv : [...(Array.isArray(cur) ? cur : [cur]), kv]
              ) as string;
              answerChanges.push({ add: { 'set-cookie': c.setCookie } });
              return c.value;
            },
          });
    cluster.budget.recordRequest(env.clock.now());
    /** Counts the answer the caller got, and logs it when access logs are on. */
    const finish = (status: number, attempt: number, ep?: EndpointState, error?: string) => {
      const ms = performance.now() - start;
      meter.observe(status, ms);
      if (!env.accessLog.enabled) return;
      env.accessLog.write(
        {
          direction: 'outbound',
          source: env.active().snapshot.instance.service,
          destination: name,
          ...h2Fields(headers, status, ms, error),
          endpoint: ep?.id ?? null,
          retries: attempt,
        },
        h2Detail(env.accessLog, stream, headers, ep ?? null, null),
      );
    };
    void (async () => {
      const triedEps = new Set<EndpointState>();
      let statusReason: RetryReason = 'status_5xx';
      // an answer is retried for an idempotent method on a status its route or Remora's rules
      // name; a gRPC stream, whatever its method, on a grpc-status its route names
      const retriedAnswer = (status: number, grpcStatus: number | undefined): boolean => {
        if (grpc && grpcStatus !== undefined && route?.retryOnGrpc?.includes(grpcStatus)) {
          statusReason = 'status_grpc';
          return true;
        }
        statusReason = retryStatusReason(status);
        return idempotent && retriedStatus(status, route?.retryOn);
      };
      for (let attempt = 0; ; attempt++) {
        const canRetry = (): boolean =>
          attempt < (route?.maxRetries ?? res().maxRetries) &&
          body.replayable &&
          !stream.destroyed &&
          cluster.budget.tryRetry(env.clock.now());
        const now = env.clock.now();
        let ep: EndpointState;
        try {
          ep = cluster.pick(now, triedEps, hash);
        } catch (err) {
          const e = toRemoraError(err);
          respondH2Error(stream, e, grpc);
          finish(503, attempt, undefined, e.code);
          return;
        }
        triedEps.add(ep);
        let session;
        try {
          session = await cluster.h2Session(ep);
        } catch (err) {
          cluster.outcome(ep, false, env.clock.now());
          if (canRetry()) {
            env.metrics.retries.labels(name, 'connect').inc();
            continue;
          }
          const e = toRemoraError(err);
          respondH2Error(stream, e, grpc);
          finish(502, attempt, ep, e.code);
          return;
        }
        if (stream.destroyed) return;
        ep.active++;
        let failure: H2AttemptError | null = null;
        try {
          const status = await forwardH2Stream(body, headers, session, {
            retryStatus: (status, grpcStatus) => retriedAnswer(status, grpcStatus) && canRetry(),
            // gRPC streams are untimed unless their route sets a timeout: a deadline is the
            // caller's (grpc-timeout), and a streaming server may send its head only with its
            // first message
            timeoutMs: route?.requestTimeoutMs ?? (grpc ? 0 : res().requestTimeoutMs),
            ...(answerChanges.length > 0 ? { responseHeaders: answerChanges } : {}),
          });
          cluster.outcome(ep, status < 500, now);
          observeLatency(ep, performance.now() - start, now);
          finish(status, attempt, ep);
        } catch (err) {
          failure =
            err instanceof H2AttemptError
              ? err
              : new H2AttemptError('reset', (err as Error).message);
        } finally {
          ep.active--;
        }
        if (failure === null) return;
        // a refused stream was not processed (REFUSED_STREAM, or above a GOAWAY's last
        // stream id): safe to replay for any method; other resets only for idempotent ones
        if (failure.kind !== 'refused') cluster.outcome(ep, false, env.clock.now());
        if (failure.kind === 'status') {
          env.metrics.retries.labels(name, statusReason).inc();
          continue;
        }
        const timedOut = failure.kind === 'timeout';
        if ((failure.kind === 'refused' || idempotent) && canRetry()) {
          env.metrics.retries.labels(name, timedOut ? 'timeout' : 'reset').inc();
          continue;
        }
        const e = timedOut
          ? new RemoraError(
              'REMORA_E_PROXY_REQUEST_TIMEOUT',
              `${name} endpoint ${ep.id} ${failure.message}`,
            )
          : new RemoraError(
              'REMORA_E_PROXY_UPSTREAM_RESET',
              `${name} endpoint ${ep.id} reset the stream: ${failure.message}`,
            );
        respondH2Error(stream, e, grpc);
        finish(timedOut ? 504 : 502, attempt, ep, e.code);
        return;
      }
    })();
  }

  function handleConnection(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    const protocol = cluster.config.protocol;
    if (protocol === 'tcp') {
      const to = failoverOf(null);
      return to === null ? handleTcp(socket) : to.handleConnection(socket);
    }
    if (protocol === 'http2' || protocol === 'grpc') {
      track(socket, () => {});
      h2().emit('connection', socket);
      return;
    }
    const c = serveH1(socket, {
      handler: dispatch,
      limits: env.limits,
      headerTimeoutMs: env.limits.headerTimeoutMs,
      idleTimeoutMs: env.limits.clientIdleTimeoutMs,
      newContext,
      onRefused: (_s, reason) => env.metrics.refused.labels('outbound', reason).inc(),
    });
    track(socket, () => c.drain());
  }

  return {
    cluster,
    handleConnection,
    handleRequest: handler,
    handleRoutedRequest: dispatch,
    handleH2Stream,
    handleRoutedH2Stream: routeH2Stream,
    update(config) {
      cluster.update(config);
      syncTargets(config);
    },
    tlsChanged() {
      cluster.tlsChanged();
      for (const t of targets.values()) t.tlsChanged();
    },
    clusters: () => [cluster, ...[...targets.values()].map((t) => t.cluster)],
    drain() {
      for (const c of conns) c.drain();
      for (const t of targets.values()) t.drain();
    },
    // a TCP connection that failed over is its target's
    get connections() {
      let n = conns.size;
      for (const t of targets.values()) n += t.connections;
      return n;
    },
    close() {
      cluster.close();
      for (const t of targets.values()) t.close();
      for (const c of conns) c.socket.destroy();
    },
  };
}
