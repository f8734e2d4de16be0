// A terminating gateway's linked services (docs/gateways.md, "Terminating gateways"): the
// certificate presented for each (picked by the SNI mesh callers send: the service's, or one of
// its resolver subsets'), and the way to the service outside the mesh — its healthy catalog
// instances (the subset's only), balanced by its resolver's policy with passive outlier ejection
// and retries where safe, over plain TCP or TLS the gateway originates with the entry's CA,
// client certificate and SNI.
import net, { type Socket } from 'node:net';
import { isIP } from 'node:net';
import type { ClientHttp2Session } from 'node:http2';
import { loadHttp2 } from '../lazy.ts';
import tls, { type SecureContext } from 'node:tls';
import { RemoraError } from '../../lib/errors/index.ts';
import {
  tlsOptions,
  type Endpoint,
  type MeshTlsConfig,
  type OriginationTls,
  type Protocol,
  type TerminatingConfig,
  type TerminatingService,
  DEFAULT_LOCAL_CONNECT_TIMEOUT_MS,
  DEFAULT_RESILIENCE,
} from '../../lib/proxy-api/index.ts';
import { createClock, type Clock } from '../../lib/util/index.ts';
import { dialTcp, settleDial } from '../tls/dial.ts';
import { H1Pool } from '../http/h1-client.ts';
import type { HttpLimits } from '../env.ts';
import { reconcileEndpoints, type EndpointState } from '../balance/endpoints.ts';
import { createPicker, type Picker } from '../balance/pickers.ts';
import {
  eligibleEndpoints,
  recordFailure,
  recordSuccess,
  type OutlierPolicy,
} from '../balance/outlier.ts';
import { createRetryStage, RetryBudget } from '../stages/retry.ts';
import {
  ConnectionLimiter,
  createActiveRequestsStage,
  type BreakerLimits,
  type Overflow,
} from '../stages/limits.ts';
import type { Handler, ProxyRequest, ProxyResponse } from '../stages/types.ts';

const POOL_IDLE_MS = 30_000;

/**
 * Envoy's outlier detection defaults, which Consul gives a gateway's clusters
 * (`OutlierDetection: {}`): ejected after 5 consecutive failures, for 30 s (longer each time),
 * at most 10 % of the instances at once — always one.
 */
export const GATEWAY_OUTLIER: OutlierPolicy = Object.freeze({
  consecutiveFailures: 5,
  baseEjectionMs: 30_000,
  maxEjectionPercent: 10,
});

/** Attempts of a request beyond the first, each on another instance when there is one. */
export const GATEWAY_MAX_RETRIES = 2;

/**
 * Envoy's default circuit-breaker thresholds, which a Consul gateway's clusters carry: per linked
 * service (or subset), connections to its instances, requests waiting for one, and requests in
 * flight. Beyond them a call is refused at once (`REMORA_E_PROXY_OVERLOADED`, 503).
 */
export const GATEWAY_CIRCUIT_BREAKER: BreakerLimits = Object.freeze({
  maxConnections: 1024,
  maxPendingRequests: 1024,
  maxRequests: 1024,
});

/** One linked service (or one subset of it) as the inbound side serves it. */
export interface TerminatingTarget {
  readonly service: string;
  /** The resolver subset its SNI named; undefined for the whole service. */
  readonly subset: string | undefined;
  readonly protocol: Protocol;
  /**
   * Opens a connection to one of its instances (picked by its policy among those not ejected;
   * another one on failure). `timeoutMs`: the connect timeout when its resolver sets none.
   */
  dial(timeoutMs?: number): Promise<Socket>;
  /**
   * Sends an HTTP/1.1 request to one of its instances, over keep-alive connections, retried on
   * another where safe: a failed connection for any method, and for idempotent ones a reset, a
   * timeout or a 5xx (the retry stage's rules, under a budget); a POST is never sent twice.
   */
  readonly request: Handler;
  /** An HTTP/2 session to one of its instances (h2c, or h2 over the originated TLS). */
  h2Session(timeoutMs?: number): ClientHttp2Session;
  /**
   * The `:authority` streams on that session carry: the instance's hostname when it was
   * registered by one (Consul's automatic Host rewrite); undefined to keep the caller's.
   */
  h2Authority(): string | undefined;
  /** Its resolver's `RequestTimeout` in ms; undefined when it sets none. */
  readonly requestTimeoutMs: number | undefined;
  /** The instance the last connection or request went to (access logs). */
  readonly address: { address: string; port: number };
}

export interface TerminatingSet {
  /**
   * Builds the contexts and targets of a snapshot's services (throws on material that does not
   * load, so the snapshot is refused); `commit` makes them the ones in use.
   */
  prepare(
    config: TerminatingConfig | undefined,
    rootsPem: string[],
    mesh: MeshTlsConfig | undefined,
  ): { commit(): void };
  /** The certificate to present for an SNI; undefined for none linked (the default one). */
  context(servername: string): SecureContext | undefined;
  /** The service (or subset) an SNI asks for; undefined when not linked (or no SNI). */
  target(servername: string | false | null | undefined): TerminatingTarget | undefined;
  /** A service by name, all of its instances. */
  byService(service: string): TerminatingTarget | undefined;
  close(): void;
}

export interface TerminatingSetOptions {
  limits: HttpLimits;
  clock?: Clock;
  random?: () => number;
  /** The connect timeout of a service whose resolver sets none (the gateway's local one). */
  connectTimeoutMs?: () => number;
  /** An instance was ejected after consecutive failures. */
  onEjected?: (service: string, endpoint: string, untilMs: number) => void;
  /** A call was refused by a circuit breaker. */
  onOverflow?: (service: string, what: Overflow) => void;
  /** The circuit breakers' thresholds (Envoy's defaults unless given). */
  circuitBreaker?: BreakerLimits;
}

interface Entry {
  key: string;
  context: SecureContext;
  target: Target;
}

interface Shared {
  limits: HttpLimits;
  clock: Clock;
  random: () => number;
  connectTimeoutMs: () => number;
  onEjected: (service: string, endpoint: string, untilMs: number) => void;
  onOverflow: (service: string, what: Overflow) => void;
  circuitBreaker: BreakerLimits;
}

export function createTerminatingSet(o: TerminatingSetOptions): TerminatingSet {
  const shared: Shared = {
    limits: o.limits,
    clock: o.clock ?? createClock(),
    random: o.random ?? Math.random,
    connectTimeoutMs: o.connectTimeoutMs ?? (() => DEFAULT_LOCAL_CONNECT_TIMEOUT_MS),
    onEjected: o.onEjected ?? (() => {}),
    onOverflow: o.onOverflow ?? (() => {}),
    circuitBreaker: o.circuitBreaker ?? GATEWAY_CIRCUIT_BREAKER,
  };
  let bySni = new Map<string, Entry>();
  /** By service, and by `service/subset`. */
  let byName = new Map<string, Entry>();

  return {
    prepare(config, rootsPem, mesh) {
      const nextSni = new Map<string, Entry>();
      const nextName = new Map<string, Entry>();
      for (const s of config?.services ?? []) {
        const key = JSON.stringify([s.certPem, s.keyPem, rootsPem, mesh?.incoming ?? null]);
        const was = byName.get(s.service);
        const context =
          was && was.key === key
            ? was.context
            : tls.createSecureContext({
                cert: s.certPem,
                key: s.keyPem,
                ca: rootsPem,
                ...tlsOptions(mesh?.incoming),
              });
        const targetKey = JSON.stringify([s.protocol, s.tls ?? null]);
        const add = (name: string, sni: string, subset: string | undefined, eps: Endpoint[]) => {
          const prev = byName.get(name);
          const target =
            prev && prev.target.key === targetKey
              ? prev.target
              : new Target(s, subset, targetKey, shared);
          target.update(s, eps);
          const e = { key, context, target };
          nextSni.set(sni.toLowerCase(), e);
          nextName.set(name, e);
        };
        add(s.service, s.sni, undefined, s.endpoints);
        for (const sub of s.subsets ?? [])
          add(`${s.service}/${sub.name}`, sub.sni, sub.name, sub.endpoints);
      }
      return {
        commit() {
          for (const [name, e] of byName)
            if (nextName.get(name)?.target !== e.target) e.target.close();
          bySni = nextSni;
          byName = nextName;
        },
      };
    },
    context: (servername) => bySni.get(servername.toLowerCase())?.context,
    target: (servername) => (servername ? bySni.get(servername.toLowerCase())?.target : undefined),
    byService: (service) => byName.get(service)?.target,
    close() {
      for (const e of byName.values()) e.target.close();
      byName = new Map();
      bySni = new Map();
    },
  };
}

class Target implements TerminatingTarget {
  readonly service: string;
  readonly subset: string | undefined;
  readonly protocol: Protocol;
  readonly key: string;
  readonly request: Handler;
  endpoints: EndpointState[] = [];
  address = { address: '', port: 0 };
  #connectTimeoutMs: number | undefined;
  #requestTimeoutMs = 0;
  #policy: TerminatingService['loadBalancer'] = 'round_robin';
  #picker: Picker;
  #tls: OriginationTls | undefined;
  #context: SecureContext | null = null;
  #pools = new Map<string, H1Pool>();
  #h2: ClientHttp2Session | null = null;
  #h2Host: string | undefined;
  #rewriteHost = true;
  #o: Shared;
  /** Connections to its instances, and the requests waiting for one (circuit breakers). */
  readonly #limiter: ConnectionLimiter;

  constructor(s: TerminatingService, subset: string | undefined, key: string, o: Shared) {
    this.service = s.service;
    this.subset = subset;
    this.protocol = s.protocol;
    this.key = key;
    this.#tls = s.tls;
    this.#o = o;
    this.#picker = createPicker('round_robin', o.random);
    if (s.tls)
      this.#context = tls.createSecureContext({
        ...(s.tls.caPem ? { ca: s.tls.caPem } : {}),
        ...(s.tls.certPem ? { cert: s.tls.certPem } : {}),
        ...(s.tls.keyPem ? { key: s.tls.keyPem } : {}),
      });
    const name = subset === undefined ? s.service : `${s.service}/${subset}`;
    this.#limiter = new ConnectionLimiter(name, o.circuitBreaker, (what) =>
      o.onOverflow(name, what),
    );
    const r = DEFAULT_RESILIENCE;
    const budget = new RetryBudget(r.retryBudgetRatio, r.retryBudgetMinPerSec);
    const active = createActiveRequestsStage({
      upstream: name,
      limits: () => o.circuitBreaker,
      onOverflow: (what) => o.onOverflow(name, what),
      counter: { active: 0 },
    });
    const retry = createRetryStage({
      clock: o.clock,
      budget,
      maxRetries: () => GATEWAY_MAX_RETRIES,
      maxBufferedBodyBytes: () => r.maxBufferedBodyBytes,
    });
    this.request = active(retry((req) => this.#attempt(req)));
  }

  /** Its settings and instances of a new snapshot; pools of instances that left are closed. */
  update(s: TerminatingService, endpoints: Endpoint[]): void {
    this.#connectTimeoutMs = s.connectTimeoutMs;
    this.#requestTimeoutMs = s.requestTimeoutMs ?? 0;
    this.#rewriteHost = s.disableAutoHostRewrite !== true;
    const policy = s.loadBalancer ?? 'round_robin';
    if (policy !== this.#policy) {
      this.#policy = policy;
      this.#picker = createPicker(policy, this.#o.random);
    }
    this.endpoints = reconcileEndpoints(this.endpoints, endpoints);
    const live = new Set(this.endpoints.map((e) => e.id));
    for (const [id, pool] of this.#pools)
      if (!live.has(id)) {
        pool.close();
        this.#pools.delete(id);
      }
  }

  #noEndpoints(): RemoraError {
    const what = this.subset === undefined ? '' : ` in its subset ${this.subset}`;
    return new RemoraError(
      'REMORA_E_PROXY_NO_ENDPOINTS',
      `${this.service} (outside the mesh, through this terminating gateway) has no healthy instance${what} in Consul`,
      { upstream: this.service },
    );
  }

  /** An instance among those not ejected (all when every one is), avoiding `avoid` if it can. */
  #pick(avoid: string | null): EndpointState {
    const now = this.#o.clock.now();
    let eps = eligibleEndpoints(this.endpoints, now);
    if (avoid !== null && eps.length > 1) eps = eps.filter((e) => e.id !== avoid);
    const ep = this.#picker(eps, now);
    if (ep === undefined) throw this.#noEndpoints();
    this.address = { address: ep.address, port: ep.port };
    return ep;
  }

  /** Records an attempt's outcome for outlier ejection. */
  #outcome(ep: EndpointState, ok: boolean): void {
    if (ok) return recordSuccess(ep);
    const now = this.#o.clock.now();
    if (recordFailure(ep, this.endpoints, GATEWAY_OUTLIER, now))
      this.#o.onEjected(this.service, ep.id, ep.ejectedUntil);
  }

  #timeout(fallbackMs: number | undefined): number {
    return this.#connectTimeoutMs ?? fallbackMs ?? this.#o.connectTimeoutMs();
  }

  async dial(timeoutMs?: number): Promise<Socket> {
    if (this.endpoints.length === 0) throw this.#noEndpoints();
    const ms = this.#timeout(timeoutMs);
    // a connection slot first (the circuit breakers), given back when the socket closes
    while (!this.#limiter.tryOpen()) await this.#limiter.wait(ms);
    return this.#limiter.dialOpened(() => this.#dialAny(ms));
  }

  /** A connection to one of its instances, another one after each failed connection. */
  async #dialAny(ms: number): Promise<Socket> {
    let last: unknown;
    let avoid: string | null = null;
    // up to three instances, another one after each failed connection
    for (let i = 0; i < Math.min(this.endpoints.length, 3); i += 1) {
      const ep = this.#pick(avoid);
      avoid = ep.id;
      try {
        const socket = await this.#dialOne(ep, ms);
        this.#outcome(ep, true);
        return socket;
      } catch (err) {
        last = err;
        this.#outcome(ep, false);
        if ((err as { code?: string }).code === 'REMORA_E_PROXY_UPSTREAM_IDENTITY') break;
      }
    }
    throw last;
  }

  /**
   * The Host an instance gets: its hostname when it was registered by one (Envoy's
   * `auto_host_rewrite`, which Consul sets on a gateway's routes: an external HTTPS API behind a
   * name often serves only that name), unless the entry disables it; undefined to keep the
   * caller's. An instance registered by address keeps the caller's Host, as in Envoy.
   */
  #hostFor(ep: EndpointState): string | undefined {
    return this.#rewriteHost && isIP(ep.address) === 0 ? ep.address : undefined;
  }

  /** One attempt of an HTTP/1.1 request (the retry stage above makes the others). */
  async #attempt(req: ProxyRequest): Promise<ProxyResponse> {
    const ep = this.#pick(req.ctx.retries > 0 ? req.ctx.endpointId : null);
    req.ctx.endpointId = ep.id;
    req.ctx.upstream = this.address;
    const host = this.#hostFor(ep);
    if (host !== undefined) setHost(req, host);
    ep.active++;
    try {
      const res = await this.#pool(ep).request(req, this.#requestTimeoutMs);
      this.#outcome(ep, res.status < 500);
      return res;
    } catch (err) {
      this.#outcome(ep, false);
      throw err;
    } finally {
      ep.active--;
    }
  }

  #pool(ep: EndpointState): H1Pool {
    let p = this.#pools.get(ep.id);
    if (p === undefined || p.closed) {
      p = new H1Pool({
        target: `${this.service} instance ${ep.id} (outside the mesh)`,
        limits: this.#o.limits,
        idleTimeoutMs: POOL_IDLE_MS,
        limiter: this.#limiter,
        pendingTimeoutMs: this.#timeout(undefined),
        dial: () => this.#dialOne(ep, this.#timeout(undefined)),
      });
      this.#pools.set(ep.id, p);
    }
    return p;
  }

  #dialOne(ep: EndpointState, timeoutMs: number): Promise<Socket> {
    const target = `${this.service} instance ${ep.id} (${ep.address}:${ep.port})`;
    const t = this.#tls;
    if (!t || !this.#context) return dialTcp(ep.address, ep.port, timeoutMs, target);
    const context = this.#context;
    // SNI: the entry's, checked against the server's certificate (Consul's strict SAN match);
    // without one, the instance's name when it has one, and the chain alone is verified
    const servername = t.sni ?? (isIP(ep.address) ? undefined : ep.address);
    const s = tls.connect({
      host: ep.address,
      port: ep.port,
      secureContext: context,
      rejectUnauthorized: true,
      ...(servername ? { servername } : {}),
      ...(t.sni ? {} : { checkServerIdentity: () => undefined }),
    });
    return settleDial(s, 'secureConnect', timeoutMs, target);
  }

  h2Session(timeoutMs?: number): ClientHttp2Session {
    const cur = this.#h2;
    if (cur && !cur.closed && !cur.destroyed) return cur;
    // one session at a time, to another instance when it is opened again
    const ep = this.#pick(null);
    const ms = this.#timeout(timeoutMs);
    const target = `${this.service} instance ${ep.id} (${ep.address}:${ep.port})`;
    const t = this.#tls;
    const context = this.#context;
    const authority = `${isIP(ep.address) === 6 ? `[${ep.address}]` : ep.address}:${ep.port}`;
    const session = loadHttp2().connect(`${t ? 'https' : 'http'}://${authority}`, {
      createConnection: () => {
        const servername = t?.sni ?? (isIP(ep.address) ? undefined : ep.address);
        const socket =
          t && context
            ? tls.connect({
                host: ep.address,
                port: ep.port,
                secureContext: context,
                rejectUnauthorized: true,
                ALPNProtocols: ['h2'],
                ...(servername ? { servername } : {}),
                ...(t.sni ? {} : { checkServerIdentity: () => undefined }),
              })
            : net.connect({ host: ep.address, port: ep.port, noDelay: true });
        const timer = setTimeout(
          () =>
            socket.destroy(
              new RemoraError(
                'REMORA_E_PROXY_CONNECT_TIMEOUT',
                `connecting to ${target} took longer than ${ms} ms`,
                { target },
              ),
            ),
          ms,
        );
        let connected = false;
        socket.once(t ? 'secureConnect' : 'connect', () => {
          connected = true;
          clearTimeout(timer);
          this.#outcome(ep, true);
        });
        socket.once('close', () => {
          clearTimeout(timer);
          if (!connected) this.#outcome(ep, false);
        });
        return socket;
      },
    });
    session.on('error', () => {});
    session.unref();
    this.#h2 = session;
    this.#h2Host = this.#hostFor(ep);
    return session;
  }

  h2Authority(): string | undefined {
    return this.#h2Host;
  }

  get requestTimeoutMs(): number | undefined {
    return this.#requestTimeoutMs > 0 ? this.#requestTimeoutMs : undefined;
  }

  close(): void {
    for (const p of this.#pools.values()) p.close();
    this.#pools.clear();
    this.#h2?.close();
    this.#h2 = null;
  }
}

/** Replaces the request's Host header (every one; added when it had none). */
function setHost(req: ProxyRequest, host: string): void {
  const h = req.headers;
  let found = false;
  for (let i = 0; i < h.length; i += 2)
    if (h[i]!.toLowerCase() === 'host') {
      h[i + 1] = host;
      found = true;
    }
  if (!found) h.push('host', host);
  req.host = host;
}
