// One upstream's endpoints and everything shared by its requests: balancer, outlier state,
// retry budget, circuit-breaker counters, keep-alive connection pools and HTTP/2 sessions.
import type { ClientHttp2Session } from 'node:http2';
import { loadHttp2 } from '../lazy.ts';
import type { Socket } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import type { UpstreamConfig } from '../../lib/proxy-api/index.ts';
import type { ProxyEnv } from '../env.ts';
import { reconcileEndpoints, type EndpointState } from '../balance/endpoints.ts';
import { createPicker, type Picker } from '../balance/pickers.ts';
import { createHashBalancer, type HashBalancer } from '../balance/hash.ts';
import { eligibleEndpoints, isEjected, recordFailure, recordSuccess } from '../balance/outlier.ts';
import { H1Pool } from '../http/h1-client.ts';
import { MuxPool } from '../http/mux-client.ts';
import { MUX_ALPN } from '../http/mux-server.ts';
import { TUNNEL_ALPN, TunnelPool } from '../tcp/tunnel.ts';
import { H2_TUNNEL_ALPN, H2TunnelPool } from '../http/h2-tunnel.ts';
import type { H2Session } from '../http/h2-forward.ts';
import { dialTls } from '../tls/dial.ts';
import { ConnectionLimiter } from '../stages/limits.ts';
import { RetryBudget } from '../stages/retry.ts';

export class Cluster {
  readonly name: string;
  config: UpstreamConfig;
  endpoints: EndpointState[] = [];
  picker: Picker;
  readonly budget: RetryBudget;
  readonly limiter: ConnectionLimiter;
  readonly counter = { active: 0 };
  readonly sessions = new Map<string, Buffer>();
  #pools = new Map<string, H1Pool>();
  #mux = new Map<string, MuxPool>();
  #tunnels = new Map<string, TunnelPool>();
  #h2Tunnels = new Map<string, H2TunnelPool>();
  #h2 = new Map<string, ClientHttp2Session>();
  #env: ProxyEnv;
  /** Consistent hashing's ring (ring_hash) or Maglev table (maglev), over every endpoint. */
  #hash: HashBalancer;

  constructor(env: ProxyEnv, config: UpstreamConfig) {
    this.#env = env;
    this.name = config.destinationName;
    this.config = config;
    this.picker = createPicker(config.loadBalancer, env.random);
    this.#hash = createHashBalancer(config.loadBalancer);
    this.budget = new RetryBudget(
      config.resilience.retryBudgetRatio,
      config.resilience.retryBudgetMinPerSec,
    );
    this.limiter = new ConnectionLimiter(this.name, config.resilience.circuitBreaker, (what) =>
      env.metrics.overflows.labels(this.name, what).inc(),
    );
    this.update(config);
  }

  update(config: UpstreamConfig): void {
    if (config.loadBalancer !== this.config.loadBalancer) {
      this.picker = createPicker(config.loadBalancer, this.#env.random);
      this.#hash = createHashBalancer(config.loadBalancer);
    }
    this.config = config;
    this.budget.ratio = config.resilience.retryBudgetRatio;
    this.budget.minPerSec = config.resilience.retryBudgetMinPerSec;
    this.limiter.limits = config.resilience.circuitBreaker;
    const before = new Set(this.endpoints);
    this.endpoints = reconcileEndpoints(this.endpoints, config.endpoints);
    // connections stay with endpoints that kept their state; one that moved (another address,
    // port or SNI under the same ID) gets new ones
    const live = new Set(this.endpoints.filter((e) => before.has(e)).map((e) => e.id));
    for (const [id, pool] of this.#pools) {
      if (!live.has(id)) {
        pool.close();
        this.#pools.delete(id);
      }
    }
    for (const pools of [this.#mux, this.#tunnels, this.#h2Tunnels])
      for (const [id, pool] of pools) {
        if (!live.has(id)) {
          pool.close();
          pools.delete(id);
        }
      }
    for (const [id, s] of this.#h2) {
      if (!live.has(id)) {
        s.close();
        this.#h2.delete(id);
      }
    }
  }

  /**
   * The TLS material changed: new handshakes use it. What is in flight continues untouched, but
   * shared connections (TCP tunnels, multiplexed HTTP) take no new work: it goes over fresh
   * handshakes with the new certificate and roots, so a shared connection never carries new
   * requests on an identity or trust that was replaced.
   */
  tlsChanged(): void {
    this.sessions.clear();
    for (const pools of [this.#mux, this.#tunnels, this.#h2Tunnels]) {
      for (const p of pools.values()) p.close();
      pools.clear();
    }
  }

  /**
   * Picks an endpoint among the non-ejected ones, avoiding `exclude` (the endpoints a request
   * already tried) while another one is left; throws REMORA_E_PROXY_NO_ENDPOINTS. With `hash`
   * (consistent hashing), the one it lands on in the ring or Maglev table, or the next one there.
   */
  pick(
    now: number,
    exclude?: EndpointState | ReadonlySet<EndpointState>,
    hash?: number,
  ): EndpointState {
    let eps = eligibleEndpoints(this.endpoints, now);
    if (exclude !== undefined && eps.length > 1) {
      const rest = eps.filter((e) => (exclude instanceof Set ? !exclude.has(e) : e !== exclude));
      if (rest.length > 0) eps = rest;
    }
    const ep =
      eps.length === 0
        ? undefined
        : hash !== undefined && this.config.hashPolicies !== undefined
          ? this.#hash(this.endpoints, eps, hash)
          : this.picker(eps, now);
    if (ep === undefined)
      throw new RemoraError(
        'REMORA_E_PROXY_NO_ENDPOINTS',
        `upstream ${this.name} has no healthy endpoint; check its instances with \`remora status\``,
        { upstream: this.name },
      );
    return ep;
  }

  /** True when an endpoint can take a call now: one is known and not every one is ejected. */
  usable(now: number): boolean {
    return this.endpoints.some((e) => !isEjected(e, now));
  }

  /** Records an attempt's outcome for outlier detection. */
  outcome(ep: EndpointState, ok: boolean, now: number): void {
    if (ok) {
      recordSuccess(ep);
      return;
    }
    if (recordFailure(ep, this.endpoints, this.config.resilience.outlier, now)) {
      this.#env.metrics.ejections.labels(this.name).inc();
      this.#env.logger.warn(
        { upstream: this.name, endpoint: ep.id, until: new Date(ep.ejectedUntil).toISOString() },
        'endpoint ejected after consecutive failures',
      );
      this.#h2.get(ep.id)?.close();
      this.#h2.delete(ep.id);
      this.#mux.get(ep.id)?.close();
      this.#mux.delete(ep.id);
      this.#tunnels.get(ep.id)?.close();
      this.#tunnels.delete(ep.id);
      this.#h2Tunnels.get(ep.id)?.close();
      this.#h2Tunnels.delete(ep.id);
    }
  }

  dial(ep: EndpointState, alpn?: string[]): Promise<Socket> {
    return dialTls({
      host: ep.address,
      port: ep.port,
      context: this.#env.active().tls.clientContext,
      expectedSpiffeId: this.config.destinationSpiffeId,
      ...(ep.sni !== undefined ? { sni: ep.sni } : {}),
      timeoutMs: this.config.resilience.connectTimeoutMs,
      target: `${this.name} endpoint ${ep.id} (${ep.address}:${ep.port})`,
      sessions: this.sessions,
      ...(alpn ? { alpn } : {}),
    });
  }

  pool(ep: EndpointState): H1Pool {
    let p = this.#pools.get(ep.id);
    if (p === undefined || p.closed) {
      p = new H1Pool({
        target: `${this.name} endpoint ${ep.id} (${ep.address}:${ep.port})`,
        limits: this.#env.limits,
        idleTimeoutMs: this.config.resilience.idleTimeoutMs || 60_000,
        limiter: this.limiter,
        pendingTimeoutMs: this.config.resilience.connectTimeoutMs,
        dial: () => this.dial(ep, ['http/1.1']),
      });
      this.#pools.set(ep.id, p);
    }
    return p;
  }

  /**
   * The `remora-mux/1` connections to an endpoint (docs/proxy.md, "Multiplexing between
   * sidecars"): up to 4, each carrying up to 64 requests at once before another is opened.
   */
  mux(ep: EndpointState): MuxPool {
    let p = this.#mux.get(ep.id);
    if (p === undefined || p.closed) {
      p = new MuxPool({
        target: `${this.name} endpoint ${ep.id} (${ep.address}:${ep.port})`,
        limits: this.#env.limits,
        maxPerConnection: 64,
        maxConnections: 4,
        idleTimeoutMs: this.config.resilience.idleTimeoutMs || 60_000,
        limiter: this.limiter,
        pendingTimeoutMs: this.config.resilience.connectTimeoutMs,
        dial: () => this.dial(ep, [MUX_ALPN, 'http/1.1']),
      });
      this.#mux.set(ep.id, p);
    }
    return p;
  }

  /**
   * The `remora-tcp/1` tunnels to an endpoint (docs/proxy.md, "TCP tunnels between sidecars"):
   * each carries up to 256 TCP connections as streams before another one is opened.
   */
  tunnel(ep: EndpointState): TunnelPool {
    let p = this.#tunnels.get(ep.id);
    if (p === undefined || p.closed) {
      p = new TunnelPool({
        target: `${this.name} endpoint ${ep.id} (${ep.address}:${ep.port})`,
        maxStreamsPerConnection: 256,
        idleTimeoutMs: this.config.resilience.idleTimeoutMs || 60_000,
        dial: () => this.dial(ep, [TUNNEL_ALPN, 'http/1.1']),
      });
      this.#tunnels.set(ep.id, p);
    }
    return p;
  }

  /**
   * Where an HTTP/2 stream to an endpoint is opened: a `remora-h2/1` connection (docs/proxy.md,
   * "HTTP/2 between sidecars"), each carrying up to 256 streams before another one is opened;
   * for a peer that does not speak it, one node:http2 session over mTLS.
   */
  async h2Session(ep: EndpointState): Promise<H2Session> {
    let p = this.#h2Tunnels.get(ep.id);
    if (p === undefined || p.closed) {
      p = new H2TunnelPool({
        maxStreamsPerConnection: 256,
        idleTimeoutMs: this.config.resilience.idleTimeoutMs || 60_000,
        dial: () => this.dial(ep, [H2_TUNNEL_ALPN, 'h2']),
      });
      this.#h2Tunnels.set(ep.id, p);
    }
    return (await p.connection()) ?? this.#nodeH2Session(ep);
  }

  /** A node:http2 session to an endpoint (created on first use). */
  async #nodeH2Session(ep: EndpointState): Promise<ClientHttp2Session> {
    const cur = this.#h2.get(ep.id);
    if (cur && !cur.closed && !cur.destroyed) return cur;
    const socket = await this.dial(ep, ['h2']);
    const again = this.#h2.get(ep.id);
    if (again && !again.closed && !again.destroyed) {
      socket.destroy();
      return again;
    }
    const session = loadHttp2().connect(`https://${ep.address}:${ep.port}`, {
      createConnection: () => socket,
    });
    session.on('error', () => {});
    session.on('close', () => {
      if (this.#h2.get(ep.id) === session) this.#h2.delete(ep.id);
    });
    this.#h2.set(ep.id, session);
    return session;
  }

  snapshot() {
    const now = this.#env.clock.now();
    return {
      name: this.name,
      protocol: this.config.protocol,
      loadBalancer: this.config.loadBalancer,
      ...(this.config.routes ? { routes: this.config.routes } : {}),
      ...(this.config.splits ? { splits: this.config.splits } : {}),
      ...(this.config.failover ? { failover: this.config.failover } : {}),
      activeRequests: this.counter.active,
      openConnections: this.limiter.open,
      pendingRequests: this.limiter.pending,
      endpoints: this.endpoints.map((e) => ({
        id: e.id,
        address: `${e.address}:${e.port}`,
        weight: e.weight,
        node: e.node,
        state: e.ejectedUntil > now ? 'ejected' : e.probing ? 'probing' : 'active',
        ejectedUntil: e.ejectedUntil > now ? new Date(e.ejectedUntil).toISOString() : null,
        ejections: e.ejections,
        active: e.active,
        tunnels:
          (this.#tunnels.get(e.id)?.connections ?? 0) +
          (this.#h2Tunnels.get(e.id)?.connections ?? 0),
        ewmaMs: Math.round(e.ewmaMs * 1000) / 1000,
        successes: e.successes,
        failures: e.failures,
      })),
    };
  }

  close(): void {
    for (const p of this.#pools.values()) p.close();
    this.#pools.clear();
    for (const s of this.#h2.values()) s.close();
    this.#h2.clear();
    for (const p of this.#mux.values()) p.close();
    this.#mux.clear();
    for (const p of this.#tunnels.values()) p.close();
    this.#tunnels.clear();
    for (const p of this.#h2Tunnels.values()) p.close();
    this.#h2Tunnels.clear();
  }
}
