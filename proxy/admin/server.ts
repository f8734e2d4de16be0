// The admin listener (127.0.0.1 only): /ready, /live, /metrics, /config (secrets redacted),
// /clusters, /certs. It is served by the proxy's own HTTP/1.1 server (h1-server.ts) on a plain
// net listener: loading node:http only for this would cost every proxy about 10 MB of memory.
import net, { type AddressInfo, type Socket } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import { DEFAULT_HEAD_LIMITS } from '../http/h1-parse.ts';
import { serveH1 } from '../http/h1-server.ts';
import {
  newRequestContext,
  type ProxyRequest,
  type ProxyResponse,
  type RequestContext,
} from '../stages/types.ts';
import type { Proxy } from '../proxy.ts';
import type { ProxyMetrics } from './metrics.ts';

const REDACTED = '[redacted]';

/**
 * The snapshot as /config shows it: the private keys and exporter headers never leave; the
 * inbound's mutual TLS mode is spelled out (the agent leaves strict, the default, out).
 */
export function redactSnapshot(s: ProxySnapshot): unknown {
  return {
    ...s,
    inbound: { ...s.inbound, mutualTlsMode: s.inbound.mutualTlsMode ?? 'strict' },
    tls: { ...s.tls, keyPem: REDACTED },
    // a terminating gateway's linked services: their leaves' keys and the origination keys
    ...(s.terminating
      ? {
          terminating: {
            services: s.terminating.services.map((x) => ({
              ...x,
              keyPem: REDACTED,
              ...(x.tls
                ? { tls: { ...x.tls, ...(x.tls.keyPem ? { keyPem: REDACTED } : {}) } }
                : {}),
            })),
          },
        }
      : {}),
    tracing: {
      ...s.tracing,
      headers: Object.fromEntries(Object.keys(s.tracing.headers).map((k) => [k, REDACTED])),
    },
  };
}

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

export function answer(status: number, contentType: string | null, text: string): ProxyResponse {
  const body = Buffer.from(text, 'utf8');
  return {
    status,
    reason: '',
    headers: contentType === null ? [] : ['content-type', contentType],
    body,
    bodyLength: body.length,
  };
}

const json = (status: number, value: unknown): ProxyResponse =>
  answer(status, 'application/json', `${JSON.stringify(value, null, 2)}\n`);

const ADMIN_CONTEXT: RequestContext = newRequestContext('inbound', 'admin', 'admin');

export async function startAdminServer(o: {
  host: string;
  port: number;
  proxy: Proxy;
}): Promise<AdminServer> {
  if (o.host !== '127.0.0.1' && o.host !== '::1' && o.host !== 'localhost')
    throw new RemoraError(
      'REMORA_E_CONFIG_INVALID',
      `admin.host must be a loopback address, got ${o.host}`,
      { key: 'admin.host', value: o.host },
    );
  const { proxy } = o;

  async function handle(path: string): Promise<ProxyResponse> {
    switch (path) {
      case '/live':
        return answer(200, 'text/plain', 'live\n');
      case '/ready': {
        const s = proxy.status();
        return s.ready
          ? answer(200, 'text/plain', 'ready\n')
          : answer(503, 'text/plain', `not ready: ${s.reason}\n`);
      }
      case '/metrics':
        return metricsAnswer(proxy.metrics);
      case '/config': {
        const s = proxy.snapshot;
        return json(
          s ? 200 : 503,
          s ? { status: proxy.status(), snapshot: redactSnapshot(s) } : { status: proxy.status() },
        );
      }
      case '/clusters':
        return json(200, proxy.clusters());
      case '/certs':
        return json(proxy.snapshot ? 200 : 503, proxy.certs());
      default:
        return answer(
          404,
          'text/plain',
          'not found: try /ready /live /metrics /config /clusters /certs\n',
        );
    }
  }

  const plain = createPlainServer(handle);
  const server = plain.server;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new RemoraError(
          'REMORA_E_PROXY_LISTEN_FAILED',
          `cannot listen on ${o.host}:${o.port} for the admin API: ${err.code ?? err.message}`,
          { host: o.host, port: o.port },
        ),
      ),
    );
    server.listen(o.port, o.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        plain.destroySockets();
        server.close(() => resolve());
      }),
  };
}

/** The proxy's metrics in Prometheus text (the admin API's and the public listener's). */
export async function metricsAnswer(metrics: ProxyMetrics): Promise<ProxyResponse> {
  try {
    return answer(200, metrics.registry.contentType, await metrics.registry.metrics());
  } catch {
    return answer(500, null, '');
  }
}

/**
 * A plain HTTP/1.1 server (the proxy's own parser, its default head limits) answering GET and
 * HEAD requests with `handle(path)` (the target without its query string), others with 405;
 * `destroySockets` ends every connection it holds.
 */
export function createPlainServer(handle: (path: string) => Promise<ProxyResponse>): {
  server: net.Server;
  destroySockets(): void;
} {
  const handler = (req: ProxyRequest): Promise<ProxyResponse> => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const res = answer(405, null, '');
      res.headers.push('allow', 'GET');
      return Promise.resolve(res);
    }
    const q = req.target.indexOf('?');
    return handle(q === -1 ? req.target : req.target.slice(0, q));
  };
  const sockets = new Set<Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    serveH1(socket, {
      handler,
      limits: DEFAULT_HEAD_LIMITS,
      headerTimeoutMs: 10_000,
      idleTimeoutMs: 30_000,
      newContext: () => ({ ...ADMIN_CONTEXT }),
      onRefused: () => {},
    });
  });
  return {
    server,
    destroySockets() {
      for (const s of sockets) s.destroy();
    },
  };
}
