// The proxy process core: owns the listeners and applies config snapshots atomically. A
// snapshot is fully validated and every new listener bound before anything switches; a
// refused snapshot leaves the last good one serving. Certificates and roots are replaced for
// new handshakes only (server.setSecureContext / a new client SecureContext), so open
// connections continue.
import net, { type AddressInfo, type Server } from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import type { Logger } from '../lib/log/index.ts';
import { createClock, type Clock } from '../lib/util/index.ts';
import { DEFAULT_LOCAL_CONNECT_TIMEOUT_MS, type ProxySnapshot } from '../lib/proxy-api/index.ts';
import { createProxyMetrics, type ProxyMetrics } from './admin/metrics.ts';
import { DEFAULT_HTTP_LIMITS, type ActiveConfig, type HttpLimits, type ProxyEnv } from './env.ts';
import { buildTlsContexts, sameTlsMaterial } from './tls/identity.ts';
import { createInbound, type Inbound } from './inbound/index.ts';
import { createTerminatingSet } from './inbound/terminating.ts';
import { MUX_ALPN } from './http/mux-server.ts';
import { TUNNEL_ALPN } from './tcp/tunnel.ts';
import { H2_TUNNEL_ALPN } from './http/h2-tunnel.ts';
import { createUpstream, type Upstream } from './outbound/index.ts';
import { createTracingSeam } from './tracing-seam.ts';
import { createTransparentSlot } from './outbound/transparent.ts';
import { createLimitedErrorLog } from './log-limit.ts';
import { createAccessLog } from './access-log.ts';
import { createExposeSlot } from './inbound/expose.ts';
import { createMetricsListenerSlot } from './admin/metrics-listener.ts';
import { createPermissiveGate, type PermissiveGate } from './inbound/permissive.ts';
import { createIngressSlot } from './outbound/ingress.ts';
import { bindShareable } from './listen.ts';

export interface ProxyStatus {
  ready: boolean;
  appliedVersion: number | null;
  reason?: string;
  draining: boolean;
}

export interface CreateProxyOptions {
  logger: Logger;
  clock?: Clock;
  random?: () => number;
  limits?: Partial<HttpLimits>;
  metrics?: ProxyMetrics;
  /** Set false to build the stacks without the tracing seam at all. */
  tracing?: boolean;
  /**
   * Permissive mutual TLS: how long a new connection may stay silent before it is taken as
   * plain (`DEFAULT_SNIFF_TIMEOUT_MS`).
   */
  sniffTimeoutMs?: number;
  /**
   * This proxy takes over from the instance's running proxy (`remora proxy --takeover`): the
   * listeners of its first snapshot join that proxy's ports instead of requiring them free.
   */
  takeover?: boolean;
}

export interface Proxy {
  apply(snapshot: ProxySnapshot): Promise<void>;
  status(): ProxyStatus;
  readonly snapshot: ProxySnapshot | null;
  readonly metrics: ProxyMetrics;
  /** Bound addresses (useful with port 0). */
  addresses(): {
    inbound: AddressInfo | null;
    upstreams: Record<string, AddressInfo>;
    /** The exposed-path listeners, by path. */
    exposed: Record<string, AddressInfo>;
    /** An ingress gateway's listeners, by `<bindAddress>:<bindPort>` as the snapshot names them. */
    ingress: Record<string, AddressInfo>;
    /** The public /metrics listener (`envoy_prometheus_bind_addr`), once bound. */
    metrics: AddressInfo | null;
  };
  clusters(): unknown[];
  certs(): unknown;
  /** Stops accepting, lets in-flight exchanges finish up to `deadlineMs`, then closes the rest. */
  drain(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

interface Listener<T> {
  key: string;
  server: Server;
  part: T;
}

/** Binds a listener; a taken port is refused with a coded error naming what wanted it. */
async function listen(
  server: Server,
  host: string,
  port: number,
  what: string,
  join: boolean,
): Promise<void> {
  try {
    await bindShareable(server, host, port, join);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new RemoraError(
      'REMORA_E_PROXY_LISTEN_FAILED',
      `cannot listen on ${host}:${port} for ${what}: ${e.code ?? e.message}`,
      { host, port, what },
    );
  }
}

function closeServer(s: Server): void {
  s.close();
}

export function createProxy(o: CreateProxyOptions): Proxy {
  const logger = o.logger;
  const clock = o.clock ?? createClock();
  const metrics = o.metrics ?? createProxyMetrics();
  let active: ActiveConfig | null = null;
  let draining = false;
  // a successor's first snapshot joins its predecessor's ports (proxy/listen.ts)
  let joining = o.takeover === true;
  const bind = (server: Server, host: string, port: number, what: string): Promise<void> =>
    listen(server, host, port, what, joining);
  let inboundListener: Listener<PermissiveGate> | null = null;
  let inbound: Inbound | null = null;
  const upstreams = new Map<string, Listener<Upstream>>();
  const seam = createTracingSeam(logger);
  const logLimited = createLimitedErrorLog(logger);
  const logLimitedDrop = (): void =>
    logLimited(
      new RemoraError(
        'REMORA_E_PROXY_INBOUND_LIMIT',
        `the sidecar port holds ${active?.snapshot.inbound.maxInboundConnections} connections (max_inbound_connections); a new one was closed`,
      ),
      'inbound connection refused',
    );

  const env: ProxyEnv = {
    logger,
    clock,
    random: o.random ?? Math.random,
    metrics,
    limits: { ...DEFAULT_HTTP_LIMITS, ...o.limits },
    active: () => {
      if (active === null)
        throw new RemoraError('REMORA_E_PROXY_NOT_READY', 'no snapshot applied yet');
      return active;
    },
    tracingStage: (kind, peer) => (o.tracing === false ? null : seam.stage(kind, peer)),
    accessLog: createAccessLog({ logger, onDrop: () => metrics.accessLogDropped.inc() }),
  };
  const transparent = createTransparentSlot(
    env,
    (name) => {
      for (const [n, l] of upstreams)
        if (n.toLowerCase() === name && l.part.cluster.config.protocol === 'http') return l.part;
      return undefined;
    },
    (name) => upstreams.get(name)?.part,
  );

  const exposed = createExposeSlot(env);
  const publicMetrics = createMetricsListenerSlot({ metrics, logger });
  // an ingress gateway's listeners hand calls to upstreams that have none of their own
  const ingress = createIngressSlot(env, (name) => upstreams.get(name)?.part);
  // a terminating gateway's linked services, served on the inbound listener by SNI
  const terminating = createTerminatingSet({
    limits: env.limits,
    clock: env.clock,
    random: env.random,
    connectTimeoutMs: () =>
      env.active().snapshot.inbound.localConnectTimeoutMs ?? DEFAULT_LOCAL_CONNECT_TIMEOUT_MS,
    onOverflow: (service, what) => env.metrics.overflows.labels(service, what).inc(),
    onEjected(service, endpoint, until) {
      env.metrics.ejections.labels(service).inc();
      env.logger.warn(
        { upstream: service, endpoint, until: new Date(until).toISOString() },
        'instance outside the mesh ejected after consecutive failures',
      );
    },
  });

  function inboundServer(): Server {
    const opts = active!.tls.serverOptions;
    const server = tls.createServer({
      ...opts,
      // a terminating gateway presents the certificate of the linked service the SNI names
      SNICallback: (name, cb) => cb(null, terminating.context(name)),
      requestCert: true,
      rejectUnauthorized: false, // verified per connection in inbound (counted by reason)
      // each sidecar protocol only while this instance's inbound protocol is the one it carries:
      // remora-h2/1 (a peer sidecar's HTTP/2 or gRPC upstream) for http2 and grpc, then h2 as
      // ever, remora-mux/1 (an HTTP upstream) for http, remora-tcp/1 (a TCP upstream) for tcp
      ALPNCallback: ({ protocols, servername }: { protocols: string[]; servername?: string }) => {
        const inbound =
          active?.snapshot.terminating !== undefined
            ? terminating.target(servername)?.protocol
            : active?.snapshot.inbound.protocol;
        if (protocols.includes(H2_TUNNEL_ALPN) && (inbound === 'http2' || inbound === 'grpc'))
          return H2_TUNNEL_ALPN;
        if (protocols.includes('h2')) return 'h2';
        if (protocols.includes(MUX_ALPN) && inbound === 'http') return MUX_ALPN;
        if (protocols.includes(TUNNEL_ALPN) && inbound === 'tcp') return TUNNEL_ALPN;
        return protocols.includes('http/1.1') ? 'http/1.1' : undefined;
      },
      handshakeTimeout: 10_000,
      noDelay: true,
    });
    server.on('secureConnection', (s) => inbound!.handleConnection(s));
    server.on('drop', () => {
      metrics.inboundLimited.inc();
      logLimitedDrop();
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      metrics.handshakeFailures.labels('inbound', 'protocol').inc();
      logger.debug({ err: err.code ?? err.message }, 'inbound TLS handshake failed');
    });
    return server;
  }

  function setCertMetrics(snapshot: ProxySnapshot): void {
    metrics.certExpiry.reset();
    metrics.certExpiry
      .labels('leaf', '0')
      .set(Date.parse(new X509Certificate(snapshot.tls.certPem).validTo) / 1000);
    snapshot.tls.rootsPem.forEach((r, i) =>
      metrics.certExpiry
        .labels('root', String(i))
        .set(Date.parse(new X509Certificate(r).validTo) / 1000),
    );
    metrics.snapshotVersion.set(snapshot.version);
  }

  async function apply(snapshot: ProxySnapshot): Promise<void> {
    try {
      await applyInner(snapshot);
    } catch (err) {
      metrics.snapshotsRejected.inc();
      throw toRemoraError(err);
    }
  }

  async function applyInner(snapshot: ProxySnapshot): Promise<void> {
    if (draining)
      throw new RemoraError(
        'REMORA_E_PROXY_DRAINING',
        `snapshot ${snapshot.version} refused: the proxy is draining`,
      );
    const now = clock.now();
    const leaf = new X509Certificate(snapshot.tls.certPem);
    if (Date.parse(leaf.validTo) <= now || Date.parse(leaf.validFrom) > now + 5 * 60_000)
      throw new RemoraError(
        'REMORA_E_PROXY_SNAPSHOT_INVALID',
        `snapshot field \`tls.certPem\` is not valid now (valid ${leaf.validFrom} – ${leaf.validTo}); the snapshot was refused and the last good one keeps serving`,
        { field: 'tls.certPem' },
      );
    const prev = active;
    // new material or new mesh TLS parameters: new handshakes (only) use them
    const tlsChanged =
      prev === null ||
      !sameTlsMaterial(prev.snapshot.tls, snapshot.tls) ||
      JSON.stringify(prev.snapshot.meshTls) !== JSON.stringify(snapshot.meshTls);
    const tlsContexts = tlsChanged ? buildTlsContexts(snapshot.tls, snapshot.meshTls) : prev.tls;
    const next: ActiveConfig = { snapshot, tls: tlsContexts };

    // 1. bind every new listener first; nothing switches unless all bind
    const created: Array<Listener<unknown>> = [];
    const ib = snapshot.inbound;
    const ibKey = `${ib.bindAddress}:${ib.bindPort}`;
    let newInbound: Listener<PermissiveGate> | null = null;
    const sameInbound =
      inboundListener !== null &&
      (inboundListener.key === ibKey ||
        (ib.bindPort === 0 && inboundListener.key.startsWith(`${ib.bindAddress}:`)));
    const wantUp = new Map(snapshot.upstreams.map((u) => [u.destinationName, u]));
    const newUps: Array<Listener<Upstream>> = [];
    const savedActive = active;
    let transparentSwitch: { commit(): void; abort(): void } | undefined;
    let exposeSwitch: { commit(): void; abort(): void } | undefined;
    let ingressSwitch: { commit(): void; abort(): void } | undefined;
    let terminatingSwitch: { commit(): void } | undefined;
    // an ingress gateway has no inbound mTLS listener: nothing in the mesh calls it
    const gateway = snapshot.ingress !== undefined;
    try {
      active = next; // listeners created below read TLS options from here
      if (!sameInbound && !gateway) {
        const server = inboundServer();
        // plain connections reach `inbound` only while the snapshot says permissive
        const gate = createPermissiveGate(server, {
          onPlain: (sock) => (inbound ? inbound.handlePlain(sock) : sock.destroy()),
          ...(o.sniffTimeoutMs === undefined ? {} : { sniffTimeoutMs: o.sniffTimeoutMs }),
        });
        gate.set(ib.mutualTlsMode === 'permissive');
        await bind(server, ib.bindAddress, ib.bindPort, `inbound ${snapshot.instance.service}`);
        newInbound = { key: ibKey, server, part: gate };
        created.push(newInbound);
      }
      for (const u of snapshot.upstreams) {
        const key =
          u.listener === false ? 'no listener' : `${u.localBindAddress}:${u.localBindPort}`;
        const cur = upstreams.get(u.destinationName);
        if (
          cur &&
          (cur.key === key ||
            (u.localBindPort === 0 && cur.key.startsWith(`${u.localBindAddress}:`)))
        )
          continue;
        const server = net.createServer({ noDelay: true });
        const part = createUpstream(env, u);
        server.on('connection', (s) => part.handleConnection(s));
        if (u.listener !== false)
          await bind(server, u.localBindAddress, u.localBindPort, `upstream ${u.destinationName}`);
        const l = { key, server, part };
        newUps.push(l);
        created.push(l);
      }
      terminatingSwitch = terminating.prepare(
        snapshot.terminating,
        snapshot.tls.rootsPem,
        snapshot.meshTls,
      );
      transparentSwitch = await transparent.prepare(snapshot, bind);
      exposeSwitch = await exposed.prepare(snapshot, bind);
      ingressSwitch = await ingress.prepare(snapshot, bind);
    } catch (err) {
      active = savedActive;
      transparentSwitch?.abort();
      exposeSwitch?.abort();
      for (const l of created) closeServer(l.server);
      for (const l of newUps) l.part.close();
      throw err;
    }

    // 2. switch
    const joined = joining;
    joining = false;
    terminatingSwitch?.commit();
    if (inbound === null) inbound = createInbound(env, terminating);
    inbound.update();
    if (gateway && inboundListener !== null) {
      closeServer(inboundListener.server);
      inboundListener = null;
    } else if (newInbound !== null) {
      if (inboundListener) closeServer(inboundListener.server);
      inboundListener = newInbound;
    } else if (tlsChanged && inboundListener !== null) {
      (inboundListener.server as tls.Server).setSecureContext(tlsContexts.serverOptions);
    }
    // connections past the limit are closed as they arrive (Node counts them before the handshake)
    if (inboundListener !== null) {
      inboundListener.server.maxConnections = ib.maxInboundConnections || Infinity;
      // new connections only: open ones keep the mode they were taken in
      inboundListener.part.set(ib.mutualTlsMode === 'permissive');
    }
    for (const [name, l] of upstreams) {
      const want = wantUp.get(name);
      const replaced = newUps.find((n) => n.part.cluster.name === name);
      if (want === undefined || replaced) {
        closeServer(l.server);
        l.part.drain();
        upstreams.delete(name);
      } else {
        l.part.update(want);
        if (tlsChanged) l.part.tlsChanged();
      }
    }
    for (const l of newUps) upstreams.set(l.part.cluster.name, l);
    transparentSwitch?.commit();
    exposeSwitch?.commit();
    ingressSwitch?.commit();
    publicMetrics.sync(snapshot.metrics, joined);
    for (const l of upstreams.values())
      for (const c of l.part.clusters()) {
        const ejected = c.endpoints.filter((e) => e.ejectedUntil > now).length;
        metrics.endpointsGauge.labels(c.name, 'active').set(c.endpoints.length - ejected);
        metrics.endpointsGauge.labels(c.name, 'ejected').set(ejected);
      }
    setCertMetrics(snapshot);
    env.accessLog.configure(snapshot.accessLogs);
    await seam.configure(snapshot.tracing, snapshot.instance);
    logger.info(
      {
        version: snapshot.version,
        upstreams: snapshot.upstreams.length,
        tlsChanged,
        inboundPort: (inboundListener?.server.address() as AddressInfo | null)?.port ?? null,
        ...(gateway ? { ingressListeners: snapshot.ingress!.listeners.length } : {}),
      },
      'snapshot applied',
    );
  }

  function status(): ProxyStatus {
    if (active === null)
      return { ready: false, appliedVersion: null, reason: 'no snapshot applied yet', draining };
    if (draining)
      return {
        ready: false,
        appliedVersion: active.snapshot.version,
        reason: 'draining',
        draining,
      };
    if (active.tls.certNotAfter.getTime() <= clock.now())
      return {
        ready: false,
        appliedVersion: active.snapshot.version,
        reason: 'certificate expired',
        draining,
      };
    if (
      active.snapshot.ingress === undefined &&
      (inboundListener === null || !inboundListener.server.listening)
    )
      return {
        ready: false,
        appliedVersion: active.snapshot.version,
        reason: 'inbound listener not bound',
        draining,
      };
    return { ready: true, appliedVersion: active.snapshot.version, draining };
  }

  function openConnections(): number {
    let n =
      (inbound?.connections ?? 0) +
      transparent.connections +
      exposed.connections +
      ingress.connections;
    for (const l of upstreams.values()) n += l.part.connections;
    return n;
  }

  async function drain(deadlineMs: number): Promise<void> {
    if (!draining) {
      draining = true;
      logger.info({ deadlineMs, open: openConnections() }, 'draining');
      if (inboundListener) closeServer(inboundListener.server);
      for (const l of upstreams.values()) closeServer(l.server);
      transparent.drain();
      exposed.drain();
      ingress.drain();
    }
    const until = clock.now() + deadlineMs;
    for (;;) {
      inbound?.drain();
      for (const l of upstreams.values()) l.part.drain();
      if (openConnections() === 0 || clock.now() >= until) break;
      await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, until - clock.now()))));
    }
    const left = openConnections();
    if (left > 0)
      logger.warn({ open: left }, 'drain deadline reached; closing the remaining connections');
  }

  async function close(): Promise<void> {
    draining = true;
    if (inboundListener) closeServer(inboundListener.server);
    for (const l of upstreams.values()) {
      closeServer(l.server);
      l.part.close();
    }
    upstreams.clear();
    transparent.close();
    exposed.close();
    ingress.close();
    publicMetrics.close();
    inbound?.close();
    terminating.close();
    env.accessLog.close();
    await seam.shutdown();
  }

  return {
    apply,
    status,
    get snapshot() {
      return active?.snapshot ?? null;
    },
    metrics,
    addresses() {
      const ups: Record<string, AddressInfo> = {};
      for (const [name, l] of upstreams)
        if (l.part.cluster.config.listener !== false) ups[name] = l.server.address() as AddressInfo;
      return {
        inbound: (inboundListener?.server.address() as AddressInfo | null) ?? null,
        upstreams: ups,
        exposed: exposed.addresses(),
        ingress: ingress.addresses(),
        metrics: publicMetrics.address(),
      };
    },
    clusters() {
      return [...upstreams.values()].flatMap((l) =>
        l.part.clusters().map((c, i) => ({
          ...c.snapshot(),
          // a split target is listed after the upstream whose requests it takes a share of
          ...(i > 0 ? { splitOf: l.part.cluster.name } : {}),
        })),
      );
    },
    certs() {
      if (active === null) return null;
      const leaf = new X509Certificate(active.snapshot.tls.certPem);
      const info = (x: X509Certificate) => ({
        subjectAltName: x.subjectAltName ?? '',
        serialNumber: x.serialNumber,
        validFrom: new Date(x.validFrom).toISOString(),
        validTo: new Date(x.validTo).toISOString(),
        fingerprint256: x.fingerprint256,
        issuer: x.issuer,
      });
      return {
        spiffeId: active.snapshot.instance.spiffeId,
        leaf: info(leaf),
        roots: active.snapshot.tls.rootsPem.map((r) => info(new X509Certificate(r))),
      };
    },
    drain,
    close,
  };
}
