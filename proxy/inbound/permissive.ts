// Permissive mutual TLS (Consul's `MutualTLSMode = "permissive"`): the sidecar port takes, besides
// mTLS, plain connections that a transparent instance's rules send there from the app's port.
// Strict mode keeps the TLS server's own connection listener, untouched; permissive mode swaps
// it for a sniffer that reads the first byte of each new connection: a TLS record starts with
// 0x16 (handshake), so that connection goes on to the TLS server with its bytes put back; any
// other byte, or silence (a protocol where the server speaks first), makes it a plain one.
import type { Server, Socket } from 'node:net';

/** A TLS record of type handshake: the first byte of every ClientHello. */
export const TLS_HANDSHAKE_BYTE = 0x16;

/**
 * How long a new connection may stay silent before it is taken as plain: a TLS client speaks
 * first, at once; an app protocol where the server greets first (SMTP, MySQL) never does.
 */
export const DEFAULT_SNIFF_TIMEOUT_MS = 1_000;

export interface PermissiveGate {
  /** Applies to connections accepted from now on; open ones keep what they are. */
  set(permissive: boolean): void;
  readonly permissive: boolean;
}

export interface PermissiveGateOptions {
  /** A connection that is not TLS: its first bytes are still to be read from it. */
  onPlain(socket: Socket): void;
  sniffTimeoutMs?: number;
}

type ConnectionListener = (this: Server, socket: Socket) => void;

/**
 * The gate of a TLS `server` (its `connection` listeners are the TLS server's own, which it
 * hands TLS connections to). Strict until `set(true)`.
 */
export function createPermissiveGate(server: Server, o: PermissiveGateOptions): PermissiveGate {
  const tlsListeners = server.listeners('connection') as ConnectionListener[];
  const timeoutMs = o.sniffTimeoutMs ?? DEFAULT_SNIFF_TIMEOUT_MS;
  let permissive = false;

  function toTls(socket: Socket): void {
    for (const l of tlsListeners) l.call(server, socket);
  }

  function sniff(socket: Socket): void {
    const onError = () => socket.destroy();
    const done = () => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('end', onEnd);
      socket.pause();
    };
    const onData = (chunk: Buffer) => {
      done();
      // put the bytes back: the TLS socket (or the pipe to the app) reads them first
      socket.unshift(chunk);
      if (chunk[0] === TLS_HANDSHAKE_BYTE) toTls(socket);
      else o.onPlain(socket);
    };
    // a caller that closes before sending anything: nothing to carry
    const onEnd = () => {
      done();
      socket.destroy();
    };
    const timer = setTimeout(() => {
      done();
      if (!socket.destroyed) o.onPlain(socket);
    }, timeoutMs);
    socket.on('error', onError);
    socket.on('data', onData);
    socket.once('end', onEnd);
  }

  return {
    set(next) {
      if (next === permissive) return;
      permissive = next;
      if (next) {
        for (const l of tlsListeners) server.removeListener('connection', l);
        server.on('connection', sniff);
      } else {
        server.removeListener('connection', sniff);
        for (const l of tlsListeners) server.on('connection', l);
      }
    },
    get permissive() {
      return permissive;
    },
  };
}
