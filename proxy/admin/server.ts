// The admin listener (127.0.0.1 only): /ready, /live, /metrics, /config (secrets redacted),
// /clusters, /certs. node:http is fine here: it is not on the data path.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { loadHttp } from '../lazy.ts';
import type { AddressInfo } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import type { Proxy } from '../proxy.ts';

const REDACTED = '[redacted]';

/** The snapshot as /config shows it: the private key and exporter headers never leave. */
export function redactSnapshot(s: ProxySnapshot): unknown {
  return {
    ...s,
    tls: { ...s.tls, keyPem: REDACTED },
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
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(body, null, 2)}\n`);
  };
  const server: Server = loadHttp().createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    switch (path) {
      case '/live':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('live\n');
        return;
      case '/ready': {
        const s = proxy.status();
        res
          .writeHead(s.ready ? 200 : 503, { 'content-type': 'text/plain' })
          .end(s.ready ? 'ready\n' : `not ready: ${s.reason}\n`);
        return;
      }
      case '/metrics':
        proxy.metrics.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': proxy.metrics.registry.contentType });
            res.end(text);
          },
          () => res.writeHead(500).end(),
        );
        return;
      case '/config': {
        const s = proxy.snapshot;
        json(
          res,
          s ? 200 : 503,
          s ? { status: proxy.status(), snapshot: redactSnapshot(s) } : { status: proxy.status() },
        );
        return;
      }
      case '/clusters':
        json(res, 200, proxy.clusters());
        return;
      case '/certs':
        json(res, proxy.snapshot ? 200 : 503, proxy.certs());
        return;
      default:
        res
          .writeHead(404, { 'content-type': 'text/plain' })
          .end('not found: try /ready /live /metrics /config /clusters /certs\n');
    }
  });
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
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
