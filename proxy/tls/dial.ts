// Opening upstream connections: plain TCP to the local app, mTLS to a peer sidecar with the
// instance certificate, the destination's SPIFFE ID check and TLS session resumption.
import net, { type Socket } from 'node:net';
import tls, { type SecureContext, type TLSSocket } from 'node:tls';
import { RemoraError } from '../../lib/errors/index.ts';
import { classifyDialError, expectSpiffeId } from './identity.ts';
import { meshSni } from '../../lib/identity/index.ts';

export function dialTcp(
  host: string,
  port: number,
  timeoutMs: number,
  target: string,
): Promise<Socket> {
  return settleDial(net.connect({ host, port, noDelay: true }), 'connect', timeoutMs, target);
}

/**
 * A connection being opened, as a promise: resolved once `ready` fires (its later errors are
 * the user's to handle), rejected with a coded error when it fails or takes over `timeoutMs`.
 */
export function settleDial<S extends Socket>(
  s: S,
  ready: 'connect' | 'secureConnect',
  timeoutMs: number,
  target: string,
): Promise<S> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      s.destroy();
      reject(
        new RemoraError(
          'REMORA_E_PROXY_CONNECT_TIMEOUT',
          `connecting to ${target} took longer than ${timeoutMs} ms`,
          { target },
        ),
      );
    }, timeoutMs);
    s.once(ready, () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.on('error', noop);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      s.destroy();
      reject(classifyDialError(err, target));
    });
  });
}

export interface TlsDialOptions {
  host: string;
  port: number;
  context: SecureContext;
  expectedSpiffeId: string;
  /** Sent instead of the SNI of `expectedSpiffeId` (a terminating gateway's subset). */
  sni?: string;
  timeoutMs: number;
  target: string;
  alpn?: string[];
  /** Resumption cache keyed by endpoint; cleared when the material changes. */
  sessions?: Map<string, Buffer>;
}

export function dialTls(o: TlsDialOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const key = `${o.host}:${o.port}`;
    const session = o.sessions?.get(key);
    const s = tls.connect({
      host: o.host,
      port: o.port,
      secureContext: o.context,
      checkServerIdentity: expectSpiffeId(o.expectedSpiffeId),
      rejectUnauthorized: true,
      // Consul's SNI for the destination: a terminating gateway picks the service by it
      servername: o.sni ?? sniOf(o.expectedSpiffeId),
      ...({ noDelay: true } as object),
      ...(o.alpn ? { ALPNProtocols: o.alpn } : {}),
      ...(session ? { session } : {}),
    });
    if (o.sessions) {
      const sessions = o.sessions;
      s.on('session', (sess: Buffer) => sessions.set(key, sess));
    }
    const timer = setTimeout(() => {
      s.destroy();
      reject(
        new RemoraError(
          'REMORA_E_PROXY_CONNECT_TIMEOUT',
          `connecting to ${o.target} took longer than ${o.timeoutMs} ms`,
          { target: o.target },
        ),
      );
    }, o.timeoutMs);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.on('error', noop);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      o.sessions?.delete(key);
      reject(classifyDialError(err, o.target));
    });
  });
}

function noop(): void {}

const snis = new Map<string, string>();

/** The SNI of a destination's SPIFFE ID (memoized: one per destination). */
function sniOf(spiffeId: string): string {
  let sni = snis.get(spiffeId);
  if (sni === undefined) {
    sni = meshSni(spiffeId);
    if (snis.size > 4096) snis.clear();
    snis.set(spiffeId, sni);
  }
  return sni;
}
