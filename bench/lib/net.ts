// Loopback helpers: free ports, waiting for a listener, and single requests used as sanity checks.
import { connect as h2connect } from 'node:http2';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createConnection, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

async function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

// Ports the bench hands to its processes come from below the kernel's ephemeral range
// (32768–60999 here), so that no outgoing connection or port-0 listener of another process
// can take one between our check and the process binding it.
const PORT_FLOOR = 12_000;
const PORT_CEIL = 32_000;
let nextPort = PORT_FLOOR + Math.floor(Math.random() * 8_000);

/** A port free on 127.0.0.1 now, below the ephemeral range, never handed out twice per run. */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < PORT_CEIL - PORT_FLOOR; tries++) {
    const port = nextPort++;
    if (nextPort >= PORT_CEIL) nextPort = PORT_FLOOR;
    if (await canBind(port)) return port;
  }
  throw new Error(`no free port on 127.0.0.1 between ${PORT_FLOOR} and ${PORT_CEIL}`);
}

export async function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Waits until something listens on the port, the process exits, or the deadline passes. */
export async function waitListening(
  port: number,
  timeoutMs: number,
  exited?: () => boolean,
): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await isListening(port)) return true;
    if (exited?.()) return false;
    await sleep(50);
  }
  return false;
}

export interface Probe {
  status: number;
  bytes: number;
  error?: string;
  headers?: Record<string, string | string[] | undefined>;
}

/** One GET over HTTP/1.1 or cleartext HTTP/2, bounded. */
export async function probe(
  port: number,
  transport: 'h1' | 'h2c',
  timeoutMs = 3000,
): Promise<Probe> {
  if (transport === 'h2c') {
    return new Promise((resolve) => {
      const session = h2connect(`http://127.0.0.1:${port}`);
      let status = 0;
      let bytes = 0;
      const t = setTimeout(() => {
        session.destroy();
        resolve({
          status,
          bytes,
          error: status
            ? `HTTP ${status} and ${bytes} body bytes arrived but the stream never ended (no END_STREAM within ${timeoutMs} ms)`
            : 'timeout',
        });
      }, timeoutMs);
      session.on('error', (err: Error) => {
        clearTimeout(t);
        resolve({ status: 0, bytes: 0, error: err.message });
      });
      const req = session.request({ ':path': '/' });
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => (bytes += d.length));
      req.on('end', () => {
        clearTimeout(t);
        session.close();
        resolve({ status, bytes });
      });
      req.on('error', (err: Error) => {
        clearTimeout(t);
        session.destroy();
        resolve({ status: 0, bytes: 0, error: err.message });
      });
      req.end();
    });
  }
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path: '/', agent: false, timeout: timeoutMs },
      (res) => {
        let bytes = 0;
        res.on('data', (d: Buffer) => (bytes += d.length));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, headers: res.headers }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, bytes: 0, error: err.message }));
    req.end();
  });
}

/** One GET over TLS to a server-side sidecar, with or without a client certificate. */
export async function probeMtls(options: {
  port: number;
  caPem: string;
  certPem?: string;
  keyPem?: string;
  servername?: string;
  timeoutMs?: number;
}): Promise<Probe> {
  return new Promise((resolve) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: options.port,
        path: '/',
        agent: false,
        ca: options.caPem,
        cert: options.certPem,
        key: options.keyPem,
        servername: options.servername,
        // the bench checks that the *server side* demands a client certificate; it does not
        // re-test hostname checking here (each client side does that in the measured path)
        checkServerIdentity: () => undefined,
        timeout: options.timeoutMs ?? 3000,
      },
      (res) => {
        let bytes = 0;
        res.on('data', (d: Buffer) => (bytes += d.length));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, headers: res.headers }));
        res.on('error', (err) =>
          resolve({ status: res.statusCode ?? 0, bytes, error: err.message }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, bytes: 0, error: err.message }));
    req.end();
  });
}

export function describeProbe(p: Probe): string {
  if (!p.error) return `HTTP ${p.status}, ${p.bytes} body bytes`;
  if (p.status) return p.error;
  // OpenSSL errors carry a long prefix: keep the reason ("tlsv13 alert certificate required")
  const first = p.error.split('\n')[0]!.trim();
  const reason = /:([^:]*alert[^:]*|[^:]*certificate[^:]*):/.exec(first)?.[1] ?? first;
  return `refused (${reason.slice(0, 120)})`;
}
