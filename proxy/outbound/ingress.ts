// An ingress gateway's listeners (docs/gateways.md): calls from outside the mesh arrive in
// plain HTTP/1.1, h2c or TCP on a port of the gateway's address and are handed to an upstream,
// whose own outbound stack (routes, splits, balancing, retries, mTLS to the destination's
// SPIFFE ID with the gateway's certificate) carries them on. An HTTP listener picks the upstream
// per request (per stream for HTTP/2 and gRPC) by its Host; a TCP listener hands every
// connection to its one upstream.
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import type { Http2Server, IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { RemoraError } from '../../lib/errors/index.ts';
import {
  modifyH1Headers,
  modifyH2Headers,
  type IngressListener,
  type IngressService,
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
): Part {
  const conns = new Set<{ socket: Socket; drain(): void }>();
  const track = (socket: Socket, drain: () => void): void => {
    const entry = { socket, drain };
    conns.add(entry);
    socket.once('close', () => conns.delete(entry));
  };

  const refused = (): void => env.metrics.refused.labels('outbound', 'ingress_unknown_host').inc();

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
    if (svc.requestHeaders !== undefined) modifyH1Headers(req.headers, svc.requestHeaders);
    const res = await up.handleRoutedRequest(req);
    if (svc.responseHeaders !== undefined) modifyH1Headers(res.headers, svc.responseHeaders);
    return res;
  };

  let h2server: Http2Server | null = null;
  const h2 = (): Http2Server => {
    if (h2server) return h2server;
    const server = loadHttp2().createServer();
    server.on('session', (s) => s.on('error', () => {}));
    server.on(
      'stream',
      (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => {
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
        if (svc.requestHeaders !== undefined) modifyH2Headers(headers, svc.requestHeaders);
        up.handleRoutedH2Stream(
          stream,
          headers,
          flags,
          svc.responseHeaders === undefined
            ? undefined
            : { responseHeaders: [svc.responseHeaders] },
        );
      },
    );
    h2server = server;
    return server;
  };

  return {
    handleConnection(socket) {
      socket.on('error', () => socket.destroy());
      const l = config();
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
            part: createListenerPart(env, () => b.config, upstream),
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
