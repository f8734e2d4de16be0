// Transparent HTTP listeners (docs/transparent.md): plain HTTP calls that the agent's iptables
// rules redirected here (an app calling http://api:8080/) are handed to an HTTP upstream, whose
// own outbound stack then carries them over mTLS. There is one listener per HTTP upstream: the
// rules send the addresses of that upstream's instances to it, so the listener knows the original
// destination's service. A `Host` naming another HTTP upstream goes to that one (`api`,
// `api:8080`, `api.service.consul` and `api.service.<dc>.consul`, any port, all name `api`);
// any other Host (an IP address, a container name) goes to the listener's own upstream.
//
// The Host of the first request picks the upstream for the whole connection: HTTP clients keep
// one connection per origin. The connection is then handed to that upstream's listener code
// unchanged (same stack, metrics and traces as its explicit 127.0.0.1:<local_bind_port> listener).
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import type { ProxyEnv } from '../env.ts';
import type { Upstream } from './index.ts';
import { createListenerSet } from './listener-set.ts';

export const UNKNOWN_HOST = 'REMORA_E_PROXY_TRANSPARENT_UNKNOWN_HOST';
/** A request head larger than this is not routed (the HTTP stack allows 16 KiB too). */
export const MAX_ROUTING_HEAD_BYTES = 16 * 1024;
const ROUTING_TIMEOUT_MS = 10_000;

/**
 * The service a Host header names, lower-cased: the name before any port, with a trailing
 * `.service.consul` or `.service.<dc>.consul` removed. Null for an empty or malformed value.
 */
export function serviceFromHost(host: string): string | null {
  let h = host.trim().toLowerCase();
  if (h === '' || h.startsWith('[')) return null; // IPv6 literals name no service
  const colon = h.lastIndexOf(':');
  if (colon >= 0) {
    if (!/^\d{1,5}$/.test(h.slice(colon + 1))) return null;
    h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  const m = /^([a-z0-9][a-z0-9_-]*)(?:\.service(?:\.[a-z0-9-]+)?\.consul)?$/.exec(h);
  return m ? m[1]! : null;
}

/** The value of the first Host field of a request head (bytes up to the blank line), or null. */
export function hostOfHead(head: string): string | null {
  const m = /\r\nhost[ \t]*:[ \t]*([^\r\n]*)\r\n/i.exec(head);
  return m ? m[1]!.trim() : null;
}

export interface TransparentHttp {
  handleConnection(socket: Socket): void;
  readonly connections: number;
  /** Closes connections still waiting for their first request head. */
  drain(): void;
}

/**
 * `upstreams(name)` returns the current HTTP upstream of that (lower-cased) name, or undefined;
 * it is read per connection, so snapshot changes apply to new connections. `fallback` is the
 * upstream for a Host that names none (the original destination's service).
 */
export function createTransparentHttp(
  env: ProxyEnv,
  upstreams: (name: string) => Upstream | undefined,
  fallback: () => string | null,
): TransparentHttp {
  const waiting = new Set<Socket>();

  function refuse(socket: Socket, host: string | null): void {
    env.metrics.refused.labels('outbound', 'transparent_unknown_host').inc();
    const known = env
      .active()
      .snapshot.upstreams.filter((u) => u.protocol === 'http')
      .map((u) => u.destinationName);
    const body = `${UNKNOWN_HOST}: intercepted HTTP call for Host ${JSON.stringify(host ?? '')} names no HTTP upstream of ${env.active().snapshot.instance.id} (known: ${known.join(', ') || 'none'}); call a service by its Consul name (http://<service>:<port>/ or http://<service>.service.consul/) or add it to the upstreams\n`;
    const b = Buffer.from(body, 'utf8');
    socket.end(
      `HTTP/1.1 421 Misdirected Request\r\nx-remora-error: ${UNKNOWN_HOST}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${b.length}\r\nconnection: close\r\n\r\n${body}`,
    );
  }

  function route(host: string | null): Upstream | undefined {
    const name = host === null ? null : serviceFromHost(host);
    const named = name === null ? undefined : upstreams(name);
    if (named) return named;
    const d = fallback();
    return d === null ? undefined : upstreams(d.toLowerCase());
  }

  function handleConnection(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    waiting.add(socket);
    let buf: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), ROUTING_TIMEOUT_MS);
    timer.unref();
    const done = () => {
      clearTimeout(timer);
      waiting.delete(socket);
      socket.off('data', onData);
    };
    socket.once('close', done);
    function onData(chunk: Buffer): void {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > MAX_ROUTING_HEAD_BYTES) {
          done();
          refuse(socket, null);
        }
        return;
      }
      done();
      socket.pause();
      const host = hostOfHead(buf.subarray(0, end + 2).toString('latin1'));
      const up = route(host);
      if (!up) return refuse(socket, host);
      socket.unshift(buf);
      up.handleConnection(socket);
      socket.resume();
    }
    socket.on('data', onData);
  }

  return {
    handleConnection,
    get connections() {
      return waiting.size;
    },
    drain() {
      for (const s of waiting) s.destroy();
    },
  };
}

/** A forward listener's part: each connection goes to the upstream's own code unchanged. */
function forwardTo(upstream: () => Upstream | undefined): TransparentHttp {
  return {
    handleConnection(socket) {
      const u = upstream();
      if (u) u.handleConnection(socket);
      else socket.destroy(); // gone with a snapshot change since the rule sent it here
    },
    connections: 0,
    drain() {},
  };
}

export type ListenFn = (server: Server, host: string, port: number, what: string) => Promise<void>;

/**
 * Listeners a snapshot part asks for (transparent ones, exposed paths, an ingress gateway's),
 * held across snapshots;
 * proxy.ts calls it at its apply steps.
 */
export interface ListenerSlot {
  /**
   * Binds the listeners the snapshot asks for that are not bound yet (throws when one cannot
   * be, closing those it bound); `commit` switches to the new set and closes the rest, `abort`
   * closes what it bound (another part of the snapshot failed).
   */
  prepare(snapshot: ProxySnapshot, listen: ListenFn): Promise<{ commit(): void; abort(): void }>;
  /** Stops accepting; connections finish what they carry (or close, if they carry nothing yet). */
  drain(): void;
  close(): void;
  readonly connections: number;
  /** Bound addresses: by upstream (transparent), by path (exposed), by listener (ingress). */
  addresses(): Record<string, AddressInfo>;
}

interface Bound {
  key: string;
  upstream: string;
  server: Server;
  part: TransparentHttp;
}

/**
 * `upstreams(name)`: the HTTP upstream of that lower-cased name (Host routing);
 * `upstream(name)`: the upstream of exactly that name, any protocol (forward listeners).
 */
export function createTransparentSlot(
  env: ProxyEnv,
  upstreams: (name: string) => Upstream | undefined,
  upstream: (name: string) => Upstream | undefined,
): ListenerSlot {
  const set = createListenerSet<Bound>();
  return {
    async prepare(snapshot, listen) {
      const wanted = [
        ...(snapshot.transparent?.http ?? []).map((l) => ({ ...l, kind: 'http' as const })),
        ...(snapshot.transparent?.forward ?? []).map((l) => ({ ...l, kind: 'forward' as const })),
      ];
      const next = new Map<string, Bound>();
      const created: Bound[] = [];
      try {
        for (const l of wanted) {
          const key = `${l.kind}:${l.bindAddress}:${l.bindPort}:${l.upstream}`;
          const have = set.current.get(key);
          if (have) {
            next.set(key, have);
            continue;
          }
          const name = l.upstream;
          const part =
            l.kind === 'http'
              ? createTransparentHttp(env, upstreams, () => name)
              : forwardTo(() => upstream(name));
          const server = net.createServer({ noDelay: true });
          server.on('connection', (s) => part.handleConnection(s));
          const what = l.kind === 'http' ? 'transparent HTTP' : 'transparent listener';
          await listen(server, l.bindAddress, l.bindPort, `${what} for ${name}`);
          const b = { key, upstream: name, server, part };
          created.push(b);
          next.set(key, b);
        }
      } catch (err) {
        set.discard(created);
        throw err;
      }
      return set.switchTo(next, created);
    },
    drain: () => set.drain(),
    close: () => set.close(),
    get connections() {
      return set.connections;
    },
    addresses() {
      // the first listener of each upstream: its HTTP one on 127.0.0.1, as the agent lists them
      const out: Record<string, AddressInfo> = {};
      for (const b of set.all()) out[b.upstream] ??= b.server.address() as AddressInfo;
      return out;
    },
  };
}
