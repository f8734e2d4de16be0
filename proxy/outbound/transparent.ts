// The transparent HTTP listener (docs/transparent.md): plain HTTP calls that the agent's iptables
// rules redirected here (an app calling http://api:8080/) are routed by their `Host` to the
// matching HTTP upstream, whose own outbound stack then carries them over mTLS. `api`,
// `api:8080`, `api.service.consul` and `api.service.<dc>.consul` (any port) all name `api`.
//
// The Host of the first request picks the upstream for the whole connection: HTTP clients keep
// one connection per origin, and every origin the rules send here is one mesh service. The
// connection is then handed to that upstream's listener code unchanged (same stack, metrics and
// traces as its explicit 127.0.0.1:<local_bind_port> listener).
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import type { ProxyEnv } from '../env.ts';
import type { Upstream } from './index.ts';

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
  close(): void;
}

/**
 * `upstreams(name)` returns the current HTTP upstream of that (case-insensitive) name, or
 * undefined; it is read per connection, so snapshot changes apply to new connections.
 */
export function createTransparentHttp(
  env: ProxyEnv,
  upstreams: (name: string) => Upstream | undefined,
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
      const name = host === null ? null : serviceFromHost(host);
      const up = name === null ? undefined : upstreams(name);
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
    close() {
      for (const s of waiting) s.destroy();
    },
  };
}

type ListenFn = (server: Server, host: string, port: number, what: string) => Promise<void>;

/** Holds the transparent listener across snapshots; proxy.ts calls it at its apply steps. */
export interface TransparentSlot {
  /**
   * Binds the listener `snapshot.transparent` asks for when it changed (throws when it cannot);
   * `commit` switches to it (or closes the old one when the snapshot has none).
   */
  prepare(snapshot: ProxySnapshot, listen: ListenFn): Promise<{ commit(): void }>;
  /** Stops accepting and closes connections still waiting for their first head. */
  drain(): void;
  close(): void;
  readonly connections: number;
  address(): AddressInfo | null;
}

export function createTransparentSlot(
  env: ProxyEnv,
  upstreams: (name: string) => Upstream | undefined,
): TransparentSlot {
  const part = createTransparentHttp(env, upstreams);
  let current: { key: string; server: Server } | null = null;
  return {
    async prepare(snapshot, listen) {
      const t = snapshot.transparent;
      const key = t ? `${t.httpBindAddress}:${t.httpBindPort}` : null;
      if (key === (current?.key ?? null)) return { commit() {} };
      let next: { key: string; server: Server } | null = null;
      if (t && key !== null) {
        const server = net.createServer({ noDelay: true });
        server.on('connection', (s) => part.handleConnection(s));
        await listen(server, t.httpBindAddress, t.httpBindPort, 'transparent HTTP');
        next = { key, server };
      }
      return {
        commit() {
          current?.server.close();
          current = next;
        },
      };
    },
    drain() {
      current?.server.close();
      part.drain();
    },
    close() {
      current?.server.close();
      current = null;
      part.close();
    },
    get connections() {
      return part.connections;
    },
    address: () => (current?.server.address() as AddressInfo | null) ?? null,
  };
}
