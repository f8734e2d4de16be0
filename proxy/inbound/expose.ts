// Exposed paths (Consul's `proxy.expose.paths`): plain-HTTP listeners on the sidecar's address,
// one per path, each serving that path alone from a port of the local app — so a Prometheus
// server or a health checker outside the mesh reaches `/metrics` or `/health` of an app that
// listens on 127.0.0.1 only. Any other path is answered 404. There is no mTLS and no intention
// on these listeners, by design: what is listed is public. The app never sees a client's
// `x-forwarded-client-cert` there (a caller could claim any identity with it).
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import type { ExposePath } from '../../lib/proxy-api/index.ts';
import { DEFAULT_LOCAL_CONNECT_TIMEOUT_MS } from '../../lib/proxy-api/index.ts';
import type { ProxyEnv } from '../env.ts';
import { createAccessLogStage, h2Detail, h2Fields, pathOf } from '../access-log.ts';
import { serveH1, type H1ServerConnection } from '../http/h1-server.ts';
import { H1Pool } from '../http/h1-client.ts';
import { dialTcp } from '../tls/dial.ts';
import { createMetricsStage } from '../stages/metrics.ts';
import { createErrorResponderStage } from '../stages/responder.ts';
import { CLIENT_CERT_HEADER } from '../stages/headers.ts';
import {
  composeStages,
  newRequestContext,
  type Handler,
  type RequestContext,
} from '../stages/types.ts';
import { loadHttp2 } from '../lazy.ts';
import {
  endsStream,
  forwardH2Stream,
  H2AttemptError,
  H2RequestBody,
  respondH2Error,
} from '../http/h2-forward.ts';
import { closeH2cSession, h2cSession } from './h2.ts';
import { createLimitedErrorLog } from '../log-limit.ts';
import type { ListenerSlot } from '../outbound/transparent.ts';

export const NOT_EXPOSED = 'REMORA_E_PROXY_PATH_NOT_EXPOSED';
const POOL_IDLE_MS = 30_000;

interface Bound {
  key: string;
  path: ExposePath;
  server: Server;
  conns: Set<{ drain(): void }>;
  pool: H1Pool | null;
}

function notExposed(path: string, exposed: string): RemoraError {
  return new RemoraError(
    NOT_EXPOSED,
    `${path} is not exposed on this port, which serves ${exposed} only; list the path under the sidecar's proxy.expose.paths, or call the service through the mesh`,
    { path },
  );
}

/** Loopback (IPv4, IPv6, IPv4-mapped) or one of `allow`, compared without a `::ffff:` prefix. */
export function sourceAllowed(address: string | undefined, allow: readonly string[]): boolean {
  if (address === undefined) return false;
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (a === '::1' || a.startsWith('127.')) return true;
  return allow.some(
    (x) => (x.startsWith('::ffff:') ? x.slice(7) : x).toLowerCase() === a.toLowerCase(),
  );
}

export function createExposeSlot(env: ProxyEnv): ListenerSlot {
  let current = new Map<string, Bound>();
  const service = () => env.active().snapshot.instance.service;
  const logLimited = createLimitedErrorLog(env.logger);
  const meter = () => env.metrics.meter('exposed', service());
  const connectTimeout = () =>
    env.active().snapshot.inbound.localConnectTimeoutMs ?? DEFAULT_LOCAL_CONNECT_TIMEOUT_MS;

  const newContext = (): RequestContext => newRequestContext('exposed', '-', service());

  function h1Handler(b: Bound): Handler {
    const forward: Handler = async (req) => {
      if (pathOf(req.target) !== b.path.path) throw notExposed(pathOf(req.target), b.path.path);
      const app = { address: '127.0.0.1', port: b.path.localPathPort };
      for (let i = req.headers.length - 2; i >= 0; i -= 2)
        if (req.headers[i]!.toLowerCase() === CLIENT_CERT_HEADER) req.headers.splice(i, 2);
      req.ctx.upstream = app;
      b.pool ??= new H1Pool({
        target: `local app 127.0.0.1:${app.port}`,
        limits: env.limits,
        idleTimeoutMs: POOL_IDLE_MS,
        dial: () =>
          dialTcp(app.address, app.port, connectTimeout(), `local app 127.0.0.1:${app.port}`),
      });
      try {
        return await b.pool.request(req, env.active().snapshot.inbound.localRequestTimeoutMs ?? 0);
      } catch (err) {
        const e = toRemoraError(err);
        throw new RemoraError('REMORA_E_PROXY_APP_UNAVAILABLE', e.message, e.details, {
          cause: err,
        });
      }
    };
    return composeStages(
      [
        createAccessLogStage(env.accessLog),
        createMetricsStage(meter),
        createErrorResponderStage({
          onError: (e) => {
            if (e.code !== NOT_EXPOSED) logLimited(e, 'exposed path request failed');
          },
        }),
      ],
      forward,
    );
  }

  function serveH2(b: Bound, socket: Socket): { drain(): void } {
    const server = loadHttp2().createServer();
    let session: { close(): void } | null = null;
    server.on('session', (s) => {
      session = s;
      s.on('error', () => {});
    });
    server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags) => {
      stream.on('error', () => {});
      const start = performance.now();
      const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
      const app = { address: '127.0.0.1', port: b.path.localPathPort };
      const finish = (status: number, error?: string) => {
        const ms = performance.now() - start;
        meter().observe(status, ms);
        if (!env.accessLog.enabled) return;
        env.accessLog.write(
          {
            direction: 'exposed',
            source: '-',
            destination: service(),
            ...h2Fields(headers, status, ms, error),
          },
          h2Detail(env.accessLog, stream, headers, app, null),
        );
      };
      const path = pathOf(String(headers[':path'] ?? ''));
      if (path !== b.path.path) {
        respondH2Error(stream, notExposed(path, b.path.path), grpc);
        finish(404, NOT_EXPOSED);
        return;
      }
      delete headers[CLIENT_CERT_HEADER];
      const body = new H2RequestBody(stream, endsStream(flags), 0);
      const timeoutMs = env.active().snapshot.inbound.localRequestTimeoutMs ?? 0;
      const upstream = h2cSession(b, app.address, app.port, connectTimeout());
      forwardH2Stream(body, headers, upstream, { timeoutMs }).then(
        (status) => finish(status),
        (err: unknown) => {
          const timedOut = err instanceof H2AttemptError && err.kind === 'timeout';
          const e = timedOut
            ? new RemoraError(
                'REMORA_E_PROXY_REQUEST_TIMEOUT',
                `local app 127.0.0.1:${app.port} sent no response within ${timeoutMs} ms (local_request_timeout_ms)`,
              )
            : new RemoraError(
                'REMORA_E_PROXY_APP_UNAVAILABLE',
                `local app 127.0.0.1:${app.port} did not answer: ${(err as Error).message}`,
              );
          respondH2Error(stream, e, grpc);
          finish(timedOut ? 504 : 502, e.code);
        },
      );
    });
    server.emit('connection', socket);
    return { drain: () => session?.close() };
  }

  function handleConnection(b: Bound, socket: Socket): void {
    socket.on('error', () => socket.destroy());
    const allow = b.path.allowSources;
    if (allow && !sourceAllowed(socket.remoteAddress, allow)) {
      env.metrics.exposedRefused.inc();
      logLimited(
        new RemoraError(
          'REMORA_E_PROXY_EXPOSED_SOURCE_REFUSED',
          `a connection from ${socket.remoteAddress} to the exposed check path ${b.path.path} was closed: check listeners serve loopback and the Consul agent (${allow.join(', ') || 'address unknown yet'}) only; list the path under proxy.expose.paths to serve it to everyone`,
          { path: b.path.path, source: socket.remoteAddress ?? '' },
        ),
        'exposed check path refused a caller',
      );
      socket.destroy();
      return;
    }
    const c: { drain(): void } =
      b.path.protocol === 'http2'
        ? serveH2(b, socket)
        : (serveH1(socket, {
            handler: h1Handler(b),
            limits: env.limits,
            headerTimeoutMs: env.limits.headerTimeoutMs,
            idleTimeoutMs: env.limits.clientIdleTimeoutMs,
            newContext,
            onRefused: (_status, reason) => env.metrics.refused.labels('exposed', reason).inc(),
          }) satisfies H1ServerConnection);
    b.conns.add(c);
    socket.once('close', () => b.conns.delete(c));
  }

  function stop(b: Bound): void {
    b.server.close();
    for (const c of b.conns) c.drain();
    b.pool?.close();
    closeH2cSession(b);
  }

  const all = () => [...current.values()];
  return {
    async prepare(snapshot, listen) {
      const host = snapshot.inbound.bindAddress;
      const next = new Map<string, Bound>();
      const created: Bound[] = [];
      const changed = new Map<Bound, ExposePath>();
      try {
        for (const p of snapshot.expose ?? []) {
          // a port keeps its listener when what it serves changes (a second bind would fail)
          const key = `${host}:${p.listenerPort}`;
          const have = current.get(key);
          if (have) {
            next.set(key, have);
            changed.set(have, p);
            continue;
          }
          const b: Bound = {
            key,
            path: p,
            server: net.createServer({ noDelay: true }),
            conns: new Set(),
            pool: null,
          };
          b.server.on('connection', (s) => handleConnection(b, s));
          await listen(b.server, host, p.listenerPort, `exposed path ${p.path}`);
          created.push(b);
          next.set(key, b);
        }
      } catch (err) {
        for (const b of created) b.server.close();
        throw err;
      }
      return {
        commit() {
          for (const [key, b] of current) if (!next.has(key)) stop(b);
          // the next request, on any connection, is served by what the port serves now
          for (const [b, p] of changed) {
            if (JSON.stringify(b.path) === JSON.stringify(p)) continue;
            b.path = p;
            b.pool?.close();
            b.pool = null;
            closeH2cSession(b);
          }
          current = next;
        },
        abort() {
          for (const b of created) b.server.close();
        },
      };
    },
    drain() {
      for (const b of all()) {
        b.server.close();
        for (const c of b.conns) c.drain();
      }
    },
    close() {
      for (const b of all()) stop(b);
      current = new Map();
    },
    get connections() {
      return all().reduce((n, b) => n + b.conns.size, 0);
    },
    addresses() {
      const out: Record<string, AddressInfo> = {};
      for (const b of all()) out[b.path.path] = b.server.address() as AddressInfo;
      return out;
    },
  };
}
