// A terminating gateway's linked services (docs/gateways.md, "Terminating gateways"): the
// certificate presented for each (picked by the SNI mesh callers send), and the way to the
// service outside the mesh — its healthy catalog instances, in turn, over plain TCP or TLS the
// gateway originates with the entry's CA, client certificate and SNI.
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
} from '../../lib/proxy-api/index.ts';
import { dialTcp, settleDial } from '../tls/dial.ts';
import { H1Pool } from '../http/h1-client.ts';
import type { HttpLimits } from '../env.ts';

const POOL_IDLE_MS = 30_000;

/** One linked service as the inbound side serves it. */
export interface TerminatingTarget {
  readonly service: string;
  readonly protocol: Protocol;
  /** Opens a connection to one of its instances (the next in turn; the others on failure). */
  dial(timeoutMs: number): Promise<Socket>;
  /** Keep-alive connections to its instances, for HTTP. */
  pool(timeoutMs: number): H1Pool;
  /** An HTTP/2 session to one of its instances (h2c, or h2 over the originated TLS). */
  h2Session(timeoutMs: number): ClientHttp2Session;
  /** The instance the last connection went to (access logs). */
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
  /** The service an SNI asks for; undefined when not linked (or no SNI). */
  target(servername: string | false | null | undefined): TerminatingTarget | undefined;
  /** A service by name (HTTP requests carry it as their destination). */
  byService(service: string): TerminatingTarget | undefined;
  close(): void;
}

interface Entry {
  key: string;
  context: SecureContext;
  target: Target;
}

export function createTerminatingSet(o: { limits: HttpLimits }): TerminatingSet {
  let bySni = new Map<string, Entry>();
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
        const target =
          was && was.target.key === targetKey ? was.target : new Target(s, targetKey, o.limits);
        target.endpoints = s.endpoints;
        const e = { key, context, target };
        nextSni.set(s.sni.toLowerCase(), e);
        nextName.set(s.service, e);
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
  readonly protocol: Protocol;
  readonly key: string;
  endpoints: Endpoint[] = [];
  address = { address: '', port: 0 };
  #tls: OriginationTls | undefined;
  #context: SecureContext | null = null;
  #next = 0;
  #pool: H1Pool | null = null;
  #h2: ClientHttp2Session | null = null;
  #limits: HttpLimits;

  constructor(s: TerminatingService, key: string, limits: HttpLimits) {
    this.service = s.service;
    this.protocol = s.protocol;
    this.key = key;
    this.#tls = s.tls;
    this.#limits = limits;
    if (s.tls)
      this.#context = tls.createSecureContext({
        ...(s.tls.caPem ? { ca: s.tls.caPem } : {}),
        ...(s.tls.certPem ? { cert: s.tls.certPem } : {}),
        ...(s.tls.keyPem ? { key: s.tls.keyPem } : {}),
      });
  }

  #noEndpoints(): RemoraError {
    return new RemoraError(
      'REMORA_E_PROXY_NO_ENDPOINTS',
      `${this.service} (outside the mesh, through this terminating gateway) has no healthy instance in Consul`,
      { upstream: this.service },
    );
  }

  async dial(timeoutMs: number): Promise<Socket> {
    const list = this.endpoints;
    if (list.length === 0) throw this.#noEndpoints();
    let last: unknown;
    // every instance at most once, starting with the next in turn
    for (let i = 0; i < Math.min(list.length, 3); i += 1) {
      const ep = list[this.#next++ % list.length]!;
      this.address = { address: ep.address, port: ep.port };
      try {
        return await this.#dialOne(ep, timeoutMs);
      } catch (err) {
        last = err;
        if ((err as { code?: string }).code === 'REMORA_E_PROXY_UPSTREAM_IDENTITY') break;
      }
    }
    throw last;
  }

  #dialOne(ep: Endpoint, timeoutMs: number): Promise<Socket> {
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

  pool(timeoutMs: number): H1Pool {
    if (this.#pool === null || this.#pool.closed)
      this.#pool = new H1Pool({
        target: `${this.service} (outside the mesh)`,
        limits: this.#limits,
        idleTimeoutMs: POOL_IDLE_MS,
        dial: () => this.dial(timeoutMs),
      });
    return this.#pool;
  }

  h2Session(timeoutMs: number): ClientHttp2Session {
    const cur = this.#h2;
    if (cur && !cur.closed && !cur.destroyed) return cur;
    const list = this.endpoints;
    if (list.length === 0) throw this.#noEndpoints();
    // one session at a time, to the next instance in turn when it is opened again
    const ep = list[this.#next++ % list.length]!;
    this.address = { address: ep.address, port: ep.port };
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
                `connecting to ${target} took longer than ${timeoutMs} ms`,
                { target },
              ),
            ),
          timeoutMs,
        );
        const done = () => clearTimeout(timer);
        socket.once(t ? 'secureConnect' : 'connect', done);
        socket.once('close', done);
        return socket;
      },
    });
    session.on('error', () => {});
    session.unref();
    this.#h2 = session;
    return session;
  }

  close(): void {
    this.#pool?.close();
    this.#pool = null;
    this.#h2?.close();
    this.#h2 = null;
  }
}
