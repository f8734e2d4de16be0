// An ingress gateway's listeners (docs/gateways.md): calls from outside the mesh arrive in
// HTTP/1.1, HTTP/2 or TCP — plain, or over TLS terminated here with the gateway's certificate —
// on a port of the gateway's address and are handed to an upstream, whose own outbound stack
// (routes, splits, balancing, retries, mTLS to the destination's SPIFFE ID with the gateway's
// certificate) carries them on. An HTTP listener picks the upstream per request (per stream for
// HTTP/2 and gRPC) by its Host, after adding X-Forwarded-For and X-Forwarded-Proto; a TCP
// listener hands every connection to its one upstream.
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import type {
  Http2SecureServer,
  Http2Server,
  IncomingHttpHeaders,
  ServerHttp2Stream,
} from 'node:http2';
import { RemoraError } from '../../lib/errors/index.ts';
import {
  ingressTlsOptions,
  modifyH1Headers,
  modifyH2Headers,
  type IngressListener,
  type IngressService,
  type TlsMaterial,
} from '../../lib/proxy-api/index.ts';
import type { ProxyEnv } from '../env.ts';
import { loadHttp2 } from '../lazy.ts';
import { createListenerSet } from './listener-set.ts';
import { serveH1 } from '../http/h1-server.ts';
import { respondH2Error } from '../http/h2-forward.ts';
import { errorResponse } from '../stages/responder.ts';
import { newRequestContext, type Handler } from '../stages/types.ts';
import type { ListenerSlot } from './transparent.ts';
import type { Upstream } from './index.ts';

export const INGRESS_UNKNOWN_HOST = 'REMORA_E_PROXY_INGRESS_UNKNOWN_HOST';

/** A Host or :authority value without its port and trailing dot, lower case; null if malformed. */
export function hostName(host: string | undefined | null): string | null {
  if (host === undefined || host === null) return null;
  let h = host.trim().toLowerCase();
  if (h === '') return null;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end < 0) return null;
    const rest = h.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
    return h.slice(0, end + 1);
  }
  const colon = h.lastIndexOf(':');
  if (colon >= 0) {
    if (!/^\d{1,5}$/.test(h.slice(colon + 1))) return null;
    h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h === '' ? null : h;
}

/**
 * The service of a listener whose hosts match `host` (already through `hostName`), as Envoy
 * picks a virtual host: an exact name first, then the longest `*.suffix`, then the longest
 * `prefix.*`, then `*`. A wildcard stands for one or more whole labels.
 */
export function matchIngressHost(
  services: readonly IngressService[],
  host: string,
): IngressService | null {
  let best: IngressService | null = null;
  let bestRank = -1;
  for (const s of services)
    for (const h of s.hosts) {
      let rank = -1;
      if (h === host) rank = 3_000;
      else if (h === '*') rank = 0;
      else if (h.startsWith('*.')) {
        const suffix = h.slice(1); // `.example.com`
        if (host.length > suffix.length && host.endsWith(suffix)) rank = 2_000 + suffix.length;
      } else if (h.endsWith('.*')) {
        const prefix = h.slice(0, -1); // `api.ingress.`
        if (host.length > prefix.length && host.startsWith(prefix)) rank = 1_000 + prefix.length;
      }
      if (rank > bestRank) {
        best = s;
        bestRank = rank;
      }
    }
  return best;
}

function unknownHost(listener: IngressListener, host: string | null): RemoraError {
  const known = listener.services.flatMap((s) => s.hosts);
  return new RemoraError(
    INGRESS_UNKNOWN_HOST,
    `no service of the ingress listener on port ${listener.bindPort} takes Host ${JSON.stringify(host ?? '')} (hosts: ${known.slice(0, 10).join(', ') || 'none'}${known.length > 10 ? ', …' : ''}); call it with one of them, or add the host to the service's Hosts in the ingress-gateway entry`,
    { port: listener.bindPort, host },
  );
}

/** How long an outside caller has to finish its TLS handshake. */
export const INGRESS_TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** The address a connection came from, an IPv4-mapped IPv6 one as IPv4 (as Envoy writes it). */
function clientAddress(socket: { remoteAddress?: string | undefined } | null): string | null {
  const a = socket?.remoteAddress;
  if (a === undefined || a === '') return null;
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

const isTls = (socket: unknown): boolean => (socket as { encrypted?: unknown })?.encrypted === true;

/**
 * X-Forwarded-For and X-Forwarded-Proto of a request from outside the mesh, as an Envoy edge
 * proxy with no trusted hop (`use_remote_address`, `xff_num_trusted_hops` 0) sets them: the
 * caller's address appended to what it sent, the scheme of its connection to the gateway in
 * place of what it sent.
 */
export function forwardedH1(headers: string[], address: string | null, proto: string): void {
  const chain: string[] = [];
  let w = 0;
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!.toLowerCase();
    if (n === 'x-forwarded-for') {
      chain.push(headers[i + 1]!.trim());
      continue;
    }
    if (n === 'x-forwarded-proto') continue;
    headers[w++] = headers[i]!;
    headers[w++] = headers[i + 1]!;
  }
  headers.length = w;
  if (address !== null) chain.push(address);
  const xff = chain.filter((v) => v !== '').join(', ');
  if (xff !== '') headers.push('x-forwarded-for', xff);
  headers.push('x-forwarded-proto', proto);
}

function forwardedH2(headers: IncomingHttpHeaders, address: string | null, proto: string): void {
  const had = headers['x-forwarded-for'];
  const chain = (Array.isArray(had) ? had : had === undefined ? [] : [had]).map((v) => v.trim());
  if (address !== null) chain.push(address);
  const xff = chain.filter((v) => v !== '').join(', ');
  if (xff !== '') headers['x-forwarded-for'] = xff;
  headers['x-forwarded-proto'] = proto;
}

/** Node's TLS server options for a listener: the gateway's certificate, the listener's TLS. */
function tlsServerOptions(m: TlsMaterial, l: IngressListener): tls.SecureContextOptions {
  return { cert: m.certPem, key: m.keyPem, ...ingressTlsOptions(l.tls ?? {}) };
}

/**
 * The secure context a TLS listener serves with: the gateway's certificate (which carries the
 * DNS names of its entry) and the listener's versions and suites. Built again only when one of
 * them changes: a renewed certificate reaches new handshakes, open connections keep theirs.
 */
function createTlsContexts(): (m: TlsMaterial, l: IngressListener) => SecureContext {
  const cache = new Map<string, { material: string; ctx: SecureContext }>();
  return (m, l) => {
    const params = JSON.stringify(l.tls ?? {});
    const material = m.certPem + m.keyPem;
    const hit = cache.get(params);
    if (hit !== undefined && hit.material === material) return hit.ctx;
    const ctx = tls.createSecureContext(tlsServerOptions(m, l));
    if (cache.size > 64) cache.clear();
    cache.set(params, { material, ctx });
    return ctx;
  };
}

interface Part {
  handleConnection(socket: Socket): void;
  drain(): void;
  readonly connections: number;
}

/**
 * One listener's code. `config()` is the listener as the current snapshot has it and
 * `upstream(name)` the current upstream of that name, both read per request or connection.
 */
function createListenerPart(
  env: ProxyEnv,
  config: () => IngressListener,
  upstream: (name: string) => Upstream | undefined,
  secureContext: (m: TlsMaterial, l: IngressListener) => SecureContext,
): Part {
  const conns = new Set<{ socket: Socket; drain(): void }>();
  const track = (socket: Socket, drain: () => void): void => {
    const entry = { socket, drain };
    conns.add(entry);
    socket.once('close', () => conns.delete(entry));
  };

  const refused = (): void => env.metrics.refused.labels('outbound', 'ingress_unknown_host').inc();
  // a handshake that fails (no shared version, suite or ALPN protocol; not TLS at all)
  const handshakeFailed = (err: NodeJS.ErrnoException): void =>
    env.metrics.handshakeFailures
      .labels('ingress', /SSL|TLS/.test(err.code ?? '') ? 'protocol' : 'other')
      .inc();

  const handler: Handler = async (req) => {
    const l = config();
    const host = hostName(req.host);
    const svc = host === null ? null : matchIngressHost(l.services, host);
    const up = svc === null ? undefined : upstream(svc.upstream);
    if (svc === null || up === undefined) {
      refused();
      return errorResponse(unknownHost(l, req.host));
    }
    req.ctx.destination = svc.upstream;
    const from = req.ctx.downstream;
    forwardedH1(req.headers, clientAddress(from), isTls(from) ? 'https' : 'http');
    if (svc.requestHeaders !== undefined) modifyH1Headers(req.headers, svc.requestHeaders);
    const res = await up.handleRoutedRequest(req);
    if (svc.responseHeaders !== undefined) modifyH1Headers(res.headers, svc.responseHeaders);
    return res;
  };

  const onStream = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => {
    stream.on('error', () => {});
    const l = config();
    const raw = headers[':authority'] ?? headers.host;
    const host = hostName(typeof raw === 'string' ? raw : undefined);
    const svc = host === null ? null : matchIngressHost(l.services, host);
    const up = svc === null ? undefined : upstream(svc.upstream);
    if (svc === null || up === undefined) {
      refused();
      const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
      respondH2Error(stream, unknownHost(l, typeof raw === 'string' ? raw : null), grpc);
      return;
    }
    const from = stream.session?.socket;
    forwardedH2(headers, clientAddress(from ?? null), isTls(from) ? 'https' : 'http');
    if (svc.requestHeaders !== undefined) modifyH2Headers(headers, svc.requestHeaders);
    up.handleRoutedH2Stream(
      stream,
      headers,
      flags,
      svc.responseHeaders === undefined ? undefined : { responseHeaders: [svc.responseHeaders] },
    );
  };

  let h2server: Http2Server | null = null;
  const h2 = (): Http2Server => {
    if (h2server) return h2server;
    const server = loadHttp2().createServer();
    server.on('session', (s) => s.on('error', () => {}));
    server.on('stream', onStream);
    h2server = server;
    return server;
  };

  // HTTP/2 over TLS: a secure server of its own (node:http2 does the handshake and ALPN h2 on
  // the raw connection); its context follows the certificate and the listener's parameters
  let h2secure: { server: Http2SecureServer; ctx: SecureContext } | null = null;
  const h2tls = (ctx: SecureContext, l: IngressListener): Http2SecureServer => {
    if (h2secure !== null) {
      if (h2secure.ctx !== ctx) {
        h2secure.server.setSecureContext(tlsServerOptions(env.active().snapshot.tls, l));
        h2secure.ctx = ctx;
      }
      return h2secure.server;
    }
    const server = loadHttp2().createSecureServer({
      ...tlsServerOptions(env.active().snapshot.tls, l),
      handshakeTimeout: INGRESS_TLS_HANDSHAKE_TIMEOUT_MS,
    });
    server.on('session', (s) => s.on('error', () => {}));
    server.on('stream', onStream);
    server.on('tlsClientError', (err: NodeJS.ErrnoException) => handshakeFailed(err));
    h2secure = { server, ctx };
    return server;
  };

  /** Serves a connection (plain, or TLS once its handshake is done) as its listener says. */
  function serve(socket: Socket, l: IngressListener): void {
    if (l.protocol === 'tcp') {
      const up = upstream(l.services[0]!.upstream);
      if (up === undefined) socket.destroy();
      else up.handleConnection(socket); // tracked (and drained) by the upstream
      return;
    }
    if (l.protocol === 'http2' || l.protocol === 'grpc') {
      track(socket, () => {});
      h2().emit('connection', socket);
      return;
    }
    const self = env.active().snapshot.instance.service;
    const c = serveH1(socket, {
      handler,
      limits: env.limits,
      headerTimeoutMs: env.limits.headerTimeoutMs,
      idleTimeoutMs: env.limits.clientIdleTimeoutMs,
      newContext: () => newRequestContext('outbound', self, ''),
      onRefused: (_s, reason) => env.metrics.refused.labels('outbound', reason).inc(),
    });
    track(socket, () => c.drain());
  }

  return {
    handleConnection(socket) {
      socket.on('error', () => socket.destroy());
      // the listener as it is now: a flip to or from TLS applies to the next connection
      const l = config();
      if (l.tls === undefined) {
        serve(socket, l);
        return;
      }
      const ctx = secureContext(env.active().snapshot.tls, l);
      if (l.protocol === 'http2' || l.protocol === 'grpc') {
        // ALPN h2 only, as its plain twin speaks h2c only
        track(socket, () => {});
        h2tls(ctx, l).emit('connection', socket);
        return;
      }
      const secure: TLSSocket = new tls.TLSSocket(socket, {
        isServer: true,
        secureContext: ctx,
        ...(l.protocol === 'http' ? { ALPNProtocols: ['http/1.1'] } : {}),
      });
      let secured = false;
      const timer = setTimeout(() => secure.destroy(), INGRESS_TLS_HANDSHAKE_TIMEOUT_MS);
      timer.unref();
      secure.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (!secured) handshakeFailed(err);
        secure.destroy();
      });
      secure.once('secure', () => {
        secured = true;
        clearTimeout(timer);
        serve(secure, l);
      });
      socket.once('close', () => clearTimeout(timer));
    },
    drain() {
      for (const c of conns) c.drain();
    },
    get connections() {
      return conns.size;
    },
  };
}

interface Bound {
  key: string;
  server: Server;
  part: Part;
  /** The listener as the last committed snapshot has it. */
  config: IngressListener;
}

/** `upstream(name)`: the current upstream of exactly that name. */
export function createIngressSlot(
  env: ProxyEnv,
  upstream: (name: string) => Upstream | undefined,
): ListenerSlot {
  const set = createListenerSet<Bound>();
  const secureContext = createTlsContexts();
  return {
    async prepare(snapshot, listen) {
      const next = new Map<string, Bound>();
      const created: Bound[] = [];
      const updates: Array<[Bound, IngressListener]> = [];
      try {
        for (const l of snapshot.ingress?.listeners ?? []) {
          // a listener whose protocol changed is a new one (its connections speak the old one)
          const key = `${l.bindAddress}:${l.bindPort}/${l.protocol}`;
          const have = set.current.get(key);
          if (have) {
            next.set(key, have);
            updates.push([have, l]);
            continue;
          }
          const b: Bound = {
            key,
            server: net.createServer({ noDelay: true }),
            part: createListenerPart(env, () => b.config, upstream, secureContext),
            config: l,
          };
          b.server.on('connection', (s) => b.part.handleConnection(s));
          await listen(b.server, l.bindAddress, l.bindPort, `ingress ${l.protocol} listener`);
          created.push(b);
          next.set(key, b);
        }
      } catch (err) {
        set.discard(created);
        throw err;
      }
      return set.switchTo(next, created, () => {
        for (const [b, l] of updates) b.config = l;
      });
    },
    drain: () => set.drain(),
    close: () => set.close(),
    get connections() {
      return set.connections;
    },
    addresses() {
      const out: Record<string, AddressInfo> = {};
      for (const b of set.all())
        out[`${b.config.bindAddress}:${b.config.bindPort}`] = b.server.address() as AddressInfo;
      return out;
    },
  };
}
