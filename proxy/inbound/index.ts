// Inbound: mTLS from peer sidecars → the local app. Stack, top to bottom:
//   TLS handshake (client certificate required, verified against the trust bundle)
//   → peer SPIFFE ID → L4 intention decision per connection
//   → tcp: a tunnel's streams (L4 decision per stream) or a splice, each to its own app connection
//   | http: strict HTTP/1.1 server → stages below → pooled app connections
//   | http2/grpc: see h2.ts
// In permissive mode (permissive.ts) plain connections skip all of it: piped to the app as TCP.
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import { evaluateIntentions, type IntentionsSnapshot } from '../../lib/intentions/index.ts';
import { RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import type { ProxyEnv } from '../env.ts';
import { verifyPeer } from '../tls/identity.ts';
import { dialTcp } from '../tls/dial.ts';
import { serveH1, spliceSockets, type H1ServerConnection } from '../http/h1-server.ts';
import { H1Pool } from '../http/h1-client.ts';
import { MUX_ALPN, MUX_MAX_BODY_BYTES, serveMux } from '../http/mux-server.ts';
import {
  composeStages,
  newRequestContext,
  type ConnectionDecision,
  type Handler,
  type RequestContext,
  type Stage,
} from '../stages/types.ts';
import { createErrorResponderStage } from '../stages/responder.ts';
import { createMetricsStage } from '../stages/metrics.ts';
import { createAccessLogStage, roundMs, type AccessEntry } from '../access-log.ts';
import type { RequestMeter } from '../admin/metrics.ts';
import { createIntentionsStage } from '../stages/intentions.ts';
import { createPeerIdentityStage } from '../stages/headers.ts';
import { createRateLimiter, createRateLimitStage } from '../stages/rate-limit.ts';
import { inboundH2Handler, serveInboundH2, type InboundH2Options } from './h2.ts';
import { H2_TUNNEL_ALPN, serveH2Tunnel } from '../http/h2-tunnel.ts';
import { serveTunnel, TUNNEL_ALPN } from '../tcp/tunnel.ts';
import { createLimitedErrorLog } from '../log-limit.ts';
import { DEFAULT_LOCAL_CONNECT_TIMEOUT_MS } from '../../lib/proxy-api/index.ts';
import type { TerminatingSet, TerminatingTarget } from './terminating.ts';

export interface Inbound {
  /** A TLS connection finished its handshake on the sidecar port. */
  handleConnection(socket: TLSSocket): void;
  /**
   * A plain (non-TLS) connection on the sidecar port in permissive mode: piped to the local app
   * as TCP, with no identity and no intentions (docs/proxy.md, "Permissive mutual TLS").
   */
  handlePlain(socket: Socket): void;
  /** Called after a new snapshot was applied. */
  update(): void;
  drain(): void;
  readonly connections: number;
  close(): void;
}

const APP_POOL_IDLE_MS = 30_000;

/**
 * `terminating`: a terminating gateway's linked services (the snapshot's `terminating`): each
 * connection then goes to the service its SNI asks for, not to a local app.
 */
export function createInbound(env: ProxyEnv, terminating?: TerminatingSet): Inbound {
  const connectTimeout = () =>
    env.active().snapshot.inbound.localConnectTimeoutMs ?? DEFAULT_LOCAL_CONNECT_TIMEOUT_MS;
  const conns = new Set<{ drain(): void; socket: Socket }>();
  let appKey = '';
  let appPool: H1Pool | null = null;
  const service = () => env.active().snapshot.instance.service;
  /** The local app's address, one object per snapshot inbound (access logs' upstream host). */
  let app = { from: null as unknown, address: { address: '', port: 0 } };
  function appAddress(): { address: string; port: number } {
    const ib = env.active().snapshot.inbound;
    if (app.from !== ib)
      app = { from: ib, address: { address: ib.localAppAddress, port: ib.localAppPort } };
    return app.address;
  }

  function currentAppPool(): H1Pool {
    const ib = env.active().snapshot.inbound;
    const key = `${ib.localAppAddress}:${ib.localAppPort}`;
    if (appPool === null || key !== appKey) {
      appPool?.close();
      appKey = key;
      const target = `local app ${key}`;
      appPool = new H1Pool({
        target,
        limits: env.limits,
        idleTimeoutMs: APP_POOL_IDLE_MS,
        dial: () =>
          dialTcp(ib.localAppAddress, ib.localAppPort, connectTimeout(), target).catch(
            (err: unknown) => {
              const e = toRemoraError(err);
              throw new RemoraError('REMORA_E_PROXY_APP_UNAVAILABLE', e.message, e.details, {
                cause: err,
              });
            },
          ),
      });
    }
    return appPool;
  }

  const forwardToApp: Handler = async (req) => {
    // a terminating gateway's request goes to the linked service it was made for
    const linked = req.ctx.linked;
    if (linked !== undefined) return linked(req);
    const pool = currentAppPool();
    try {
      return await pool.request(req, env.active().snapshot.inbound.localRequestTimeoutMs ?? 0);
    } catch (err) {
      const e = toRemoraError(err);
      if (e.code === 'REMORA_E_PROXY_UPSTREAM_RESET')
        throw new RemoraError('REMORA_E_PROXY_APP_UNAVAILABLE', e.message, e.details, {
          cause: err,
        });
      throw e;
    }
  };

  // the meter of the local service, looked up again only when the service name changes
  let meterService = '';
  let meter: RequestMeter | null = null;
  const inboundMeter = (): RequestMeter => {
    const s = service();
    if (meter === null || s !== meterService) {
      meterService = s;
      meter = env.metrics.meter('inbound', s);
    }
    return meter;
  };
  const tracing = env.tracingStage('server', 'inbound');
  const logLimited = createLimitedErrorLog(env.logger);
  const limiter = createRateLimiter(() => env.active().snapshot.inbound.rateLimit, service);
  const onLimited = (scope: string) => env.metrics.rateLimited.labels(scope).inc();
  const stages: Stage[] = [
    createAccessLogStage(env.accessLog),
    // above the responder: denials and the answers the proxy makes up for errors are counted too
    createMetricsStage(inboundMeter),
    createErrorResponderStage({
      onError: (e) => {
        // denials and rate limits are the policy working: counted, not logged as failures
        if (
          e.code !== 'REMORA_E_PROXY_INTENTION_DENIED' &&
          e.code !== 'REMORA_E_PROXY_RATE_LIMITED' &&
          e.code !== 'REMORA_E_PROXY_JWT_MISSING' &&
          e.code !== 'REMORA_E_PROXY_JWT_INVALID'
        )
          logLimited(e, 'inbound request failed');
      },
    }),
    ...(tracing ? [tracing] : []),
    createIntentionsStage({
      intentions: () => env.active().snapshot.intentions,
      onDenied: (layer, enforced) => env.metrics.denials.labels(layer, String(enforced)).inc(),
      jwtProviders: () => env.active().snapshot.jwtProviders,
      now: () => env.clock.now(),
      onJwtFailure: (provider, reason) => env.metrics.jwtFailures.labels(provider, reason).inc(),
    }),
    // below the intentions: a denied call takes no token
    createRateLimitStage(limiter, () => env.clock.now(), onLimited),
    createPeerIdentityStage(
      () => env.active().snapshot.instance.spiffeId,
      () => env.active().snapshot.inbound.sanitizeClientCert === true,
    ),
  ];
  const handler = composeStages(stages, forwardToApp);

  /**
   * Drained and closed with the proxy. `counted`: one connection in the metrics (a tunnel's
   * streams are counted one by one instead).
   */
  function track(socket: Socket, c: { drain(): void }, counted = true): void {
    const entry = { drain: () => c.drain(), socket };
    conns.add(entry);
    const g = counted ? env.metrics.connections.labels('inbound', service()) : null;
    g?.inc();
    if (counted) env.metrics.connectionsTotal.labels('inbound', service()).inc();
    socket.once('close', () => {
      conns.delete(entry);
      g?.dec();
    });
  }

  function handleConnection(socket: TLSSocket): void {
    socket.on('error', () => socket.destroy());
    const { snapshot } = env.active();
    const peer = verifyPeer(socket, snapshot.instance.trustDomain);
    if (!peer.ok) {
      env.metrics.handshakeFailures.labels('inbound', peer.reason).inc();
      env.logger.debug({ reason: peer.reason }, peer.message);
      socket.destroy();
      return;
    }
    // a terminating gateway serves the linked service the handshake's SNI asked for
    let linked: TerminatingTarget | undefined;
    if (snapshot.terminating !== undefined) {
      linked = terminating?.target(socket.servername);
      if (linked === undefined) {
        env.metrics.handshakeFailures.labels('inbound', 'bad_identity').inc();
        logLimited(
          new RemoraError(
            'REMORA_E_PROXY_TERMINATING_UNKNOWN_SERVICE',
            `${peer.service} asked this terminating gateway for ${socket.servername ? JSON.stringify(socket.servername) : 'no service (no SNI)'}, which it does not link now; the connection is closed`,
            { source: peer.service, sni: socket.servername || null },
          ),
          'inbound connection refused',
        );
        socket.destroy();
        return;
      }
    }
    const destination = linked ? linked.service : snapshot.instance.service;
    const decide = (intentions: IntentionsSnapshot): ConnectionDecision => {
      const d = evaluateIntentions(intentions, { source: peer.service, destination });
      return {
        allowed: d.allowed,
        enforced: d.enforced,
        reason: d.reason,
        needsRequest: d.needsRequest,
      };
    };
    let decidedOn = snapshot.intentions;
    let l4 = decide(decidedOn);
    // Keep-alive connections outlive intention changes: every request on an HTTP connection
    // uses the decision for the intentions in force now (re-evaluated only when they changed).
    const currentL4 = (): ConnectionDecision => {
      const now = env.active().snapshot.intentions;
      if (now !== decidedOn) {
        decidedOn = now;
        l4 = decide(now);
      }
      return l4;
    };
    const protocol = linked ? linked.protocol : snapshot.inbound.protocol;
    /** Where this connection's calls go: the local app, or the linked service's instance. */
    const upstreamOf = (): { address: string; port: number } =>
      linked ? linked.address : appAddress();
    /**
     * The L4 decision for a new TCP connection (or tunnel stream), counted and logged. An
     * intention with L7 permissions cannot be checked on a byte stream, so it denies here, as
     * Consul's proxies do: letting every connection through would ignore its deny rules.
     */
    const deniedTcp = (): boolean => {
      const d = currentL4();
      if (d.allowed && !d.needsRequest) return false;
      env.metrics.denials.labels('l4', String(d.enforced)).inc();
      if (!d.enforced) return false;
      if (env.accessLog.enabled)
        tcpLine({ error: 'REMORA_E_PROXY_INTENTION_DENIED', durationMs: 0 });
      env.logger.info(
        {
          source: peer.service,
          destination,
          reason: d.needsRequest
            ? `${d.reason}, but ${destination} serves tcp, where requests (and their tokens) cannot be checked; set its protocol to http (or give this source an L4 intention without jwt)`
            : d.reason,
        },
        'connection denied by intention',
      );
      return true;
    };
    /** The access-log line of a TCP connection or tunnel stream from this peer. */
    const tcpLine = (fields: Pick<AccessEntry, 'error' | 'durationMs' | 'bytesIn' | 'bytesOut'>) =>
      env.accessLog.write(
        { direction: 'inbound', source: peer.service, destination, protocol: 'tcp', ...fields },
        env.accessLog.detailed
          ? { downstream: socket, upstream: upstreamOf(), downstreamPeer: peer.spiffeId }
          : undefined,
      );
    const dialApp = (): Promise<Socket> => {
      const ib = env.active().snapshot.inbound;
      const dialed = linked
        ? linked.dial()
        : dialTcp(
            ib.localAppAddress,
            ib.localAppPort,
            connectTimeout(),
            `local app ${ib.localAppAddress}:${ib.localAppPort}`,
          );
      if (!env.accessLog.enabled) return dialed;
      // one line per TCP connection (or tunnel stream) when its app connection closes
      const start = performance.now();
      const line = (app: Socket | null, error?: string) =>
        tcpLine({
          ...(error ? { error } : {}),
          durationMs: roundMs(performance.now() - start),
          bytesIn: app?.bytesWritten ?? 0,
          bytesOut: app?.bytesRead ?? 0,
        });
      return dialed.then(
        (app) => {
          app.once('close', () => line(app));
          return app;
        },
        (err: unknown) => {
          line(null, toRemoraError(err).code);
          throw err;
        },
      );
    };
    if (protocol === 'tcp' && socket.alpnProtocol === TUNNEL_ALPN) {
      // a peer sidecar's TCP connections, one stream each (docs/proxy.md, "TCP tunnels")
      const streams = env.metrics.connections.labels('inbound', service());
      const t = serveTunnel(socket, {
        maxStreams: 1024,
        idleTimeoutMs: env.limits.clientIdleTimeoutMs,
        open: () => {
          if (deniedTcp())
            return Promise.reject(
              new RemoraError(
                'REMORA_E_PROXY_INTENTION_DENIED',
                `${peer.service} → ${destination} denied`,
              ),
            );
          return dialApp().catch((err: unknown) => {
            logLimited(toRemoraError(err), 'inbound TCP: local app unreachable');
            throw err;
          });
        },
        onStreamOpened: () => {
          streams.inc();
          env.metrics.connectionsTotal.labels('inbound', service()).inc();
        },
        onStreamClosed: () => streams.dec(),
        onProtocolError: (what) => {
          env.metrics.tunnelErrors.inc();
          logLimited(
            new RemoraError('REMORA_E_PROXY_TUNNEL_PROTOCOL', `${what} from ${peer.service}`, {
              source: peer.service,
            }),
            'inbound TCP tunnel closed',
          );
        },
      });
      track(socket, t, false);
      return;
    }
    if (protocol === 'tcp') {
      if (deniedTcp()) {
        socket.destroy();
        return;
      }
      socket.pause();
      track(socket, { drain: () => {} });
      dialApp().then(
        (app) => {
          if (socket.destroyed) return app.destroy();
          spliceSockets(socket, app);
        },
        (err: unknown) => {
          logLimited(toRemoraError(err), 'inbound TCP: local app unreachable');
          socket.destroy();
        },
      );
      return;
    }
    const newContext = (): RequestContext => {
      const ctx = newRequestContext('inbound', peer.service, destination);
      ctx.peerSpiffeId = peer.spiffeId;
      ctx.l4 = currentL4();
      ctx.downstream = socket;
      ctx.upstream = upstreamOf();
      // the service (or subset) the SNI names now: a changed resolver or entry applies to the
      // next request of a keep-alive connection
      if (linked) ctx.linked = (terminating?.target(socket.servername) ?? linked).request;
      return ctx;
    };
    const h2Options: InboundH2Options = {
      newContext,
      ...(linked
        ? {
            session: () => {
              const target = terminating?.target(socket.servername) ?? linked;
              return {
                session: target.h2Session(),
                authority: target.h2Authority(),
                timeoutMs: target.requestTimeoutMs,
              };
            },
          }
        : {}),
      onDenied: (layer, enforced) => env.metrics.denials.labels(layer, String(enforced)).inc(),
      limiter,
      onLimited,
    };
    if (socket.alpnProtocol === H2_TUNNEL_ALPN) {
      // a peer sidecar's HTTP/2 and gRPC streams (docs/proxy.md, "HTTP/2 between sidecars")
      const t = serveH2Tunnel(socket, {
        onStream: inboundH2Handler(env, h2Options),
        maxStreams: 1024,
        idleTimeoutMs: env.limits.clientIdleTimeoutMs,
        onProtocolError: (what) => {
          env.metrics.h2TunnelErrors.inc();
          logLimited(
            new RemoraError('REMORA_E_PROXY_TUNNEL_PROTOCOL', `${what} from ${peer.service}`, {
              source: peer.service,
            }),
            'inbound HTTP/2 tunnel closed',
          );
        },
      });
      track(socket, t);
      return;
    }
    if (protocol === 'http2' || protocol === 'grpc' || socket.alpnProtocol === 'h2') {
      track(socket, serveInboundH2(socket, env, h2Options));
      return;
    }
    if (socket.alpnProtocol === MUX_ALPN) {
      const m = serveMux(socket, {
        handler,
        limits: env.limits,
        maxBodyBytes: MUX_MAX_BODY_BYTES,
        maxConcurrent: 256,
        idleTimeoutMs: env.limits.clientIdleTimeoutMs,
        newContext,
        onRefused: (_status, reason) => env.metrics.refused.labels('inbound', reason).inc(),
      });
      track(socket, m);
      return;
    }
    const c: H1ServerConnection = serveH1(socket, {
      handler,
      limits: env.limits,
      headerTimeoutMs: env.limits.headerTimeoutMs,
      idleTimeoutMs: env.limits.clientIdleTimeoutMs,
      newContext,
      onRefused: (_status, reason) => env.metrics.refused.labels('inbound', reason).inc(),
    });
    track(socket, c);
  }

  function handlePlain(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    env.metrics.plainConnections.inc();
    track(socket, { drain: () => {} });
    const ib = env.active().snapshot.inbound;
    const target = `local app ${ib.localAppAddress}:${ib.localAppPort}`;
    const start = performance.now();
    const line = (app: Socket | null, error?: string) => {
      if (!env.accessLog.enabled) return;
      env.accessLog.write(
        {
          direction: 'inbound',
          source: '-',
          destination: service(),
          protocol: 'tcp',
          ...(error ? { error } : {}),
          durationMs: roundMs(performance.now() - start),
          bytesIn: app?.bytesWritten ?? 0,
          bytesOut: app?.bytesRead ?? 0,
        },
        env.accessLog.detailed ? { downstream: socket, upstream: appAddress() } : undefined,
      );
    };
    dialTcp(ib.localAppAddress, ib.localAppPort, connectTimeout(), target).then(
      (app) => {
        if (socket.destroyed) return app.destroy();
        app.once('close', () => line(app));
        spliceSockets(socket, app);
      },
      (err: unknown) => {
        const e = toRemoraError(err);
        line(null, e.code);
        logLimited(e, 'inbound plain connection: local app unreachable');
        socket.destroy();
      },
    );
  }

  return {
    handleConnection,
    handlePlain,
    update() {
      currentAppPool();
    },
    drain() {
      for (const c of conns) c.drain();
    },
    get connections() {
      return conns.size;
    },
    close() {
      appPool?.close();
      for (const c of conns) c.socket.destroy();
    },
  };
}
