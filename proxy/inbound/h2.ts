// Inbound HTTP/2 and gRPC over an accepted mTLS socket: per-stream L7 intentions, then each
// stream is forwarded to the local app over one h2c session.
import type { ClientHttp2Session, IncomingHttpHeaders, ServerHttp2Session } from 'node:http2';
import { H2, loadHttp2 } from '../lazy.ts';
import type { TLSSocket } from 'node:tls';
import net from 'node:net';
import { DEFAULT_LOCAL_CONNECT_TIMEOUT_MS } from '../../lib/proxy-api/index.ts';
import { evaluateIntentions } from '../../lib/intentions/index.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import type { ProxyEnv } from '../env.ts';
import type { RequestContext } from '../stages/types.ts';
import type { RateLimiter } from '../stages/rate-limit.ts';
import { denialError } from '../stages/intentions.ts';
import { createRequestJwt, jwtDenialError } from '../stages/jwt.ts';
import { CLIENT_CERT_HEADER } from '../stages/headers.ts';
import {
  endsStream,
  forwardH2Stream,
  H2AttemptError,
  H2RequestBody,
  respondH2Error,
  type H2Downstream,
} from '../http/h2-forward.ts';
import { performance } from 'node:perf_hooks';
import { h2Detail, h2Fields } from '../access-log.ts';

const sessions = new WeakMap<object, { key: string; session: ClientHttp2Session }>();

/**
 * The h2c session `owner` keeps to an app port, opened again once it closed or the port changed.
 * Its TCP connect is bounded like HTTP/1.1's (local_connect_timeout_ms): a session whose socket
 * never connects fails the streams waiting on it.
 */
export function h2cSession(
  owner: object,
  host: string,
  port: number,
  timeoutMs: number,
): ClientHttp2Session {
  const key = `${host}:${port}`;
  const cur = sessions.get(owner);
  if (cur && cur.key === key && !cur.session.closed && !cur.session.destroyed) return cur.session;
  const session = loadHttp2().connect(`http://${key}`, {
    createConnection: () => {
      const socket = net.connect({ host, port, noDelay: true });
      const timer = setTimeout(
        () =>
          socket.destroy(
            new RemoraError(
              'REMORA_E_PROXY_CONNECT_TIMEOUT',
              `connecting to local app ${key} took longer than ${timeoutMs} ms (local_connect_timeout_ms)`,
            ),
          ),
        timeoutMs,
      );
      const done = () => clearTimeout(timer);
      socket.once('connect', done);
      socket.once('close', done);
      return socket;
    },
  });
  session.on('error', () => {});
  session.unref();
  sessions.set(owner, { key, session });
  return session;
}

/** Closes the h2c session `owner` keeps, if any (its listener went away). */
export function closeH2cSession(owner: object): void {
  sessions.get(owner)?.session.close();
  sessions.delete(owner);
}

function appSession(env: ProxyEnv): ClientHttp2Session {
  const ib = env.active().snapshot.inbound;
  return h2cSession(
    env,
    ib.localAppAddress,
    ib.localAppPort,
    ib.localConnectTimeoutMs ?? DEFAULT_LOCAL_CONNECT_TIMEOUT_MS,
  );
}

function headersRecordH2(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const r: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !k.startsWith(':')) r[k] = v;
  return r;
}

export interface InboundH2Options {
  newContext: () => RequestContext;
  /**
   * Where the streams go instead of the local app (a terminating gateway's linked service), the
   * `:authority` they carry there (undefined: the caller's), and how long a stream may wait for
   * its response head (its resolver's `RequestTimeout`; undefined: the inbound's local one).
   */
  session?: () => {
    session: ClientHttp2Session;
    authority: string | undefined;
    timeoutMs: number | undefined;
  };
  onDenied: (layer: 'l4' | 'l7', enforced: boolean) => void;
  limiter: RateLimiter;
  onLimited: (scope: string) => void;
}

/**
 * What happens to each stream from a peer sidecar, over node:http2 or `remora-h2/1`: L7
 * intentions, the rate limit, then the local app over h2c.
 */
export function inboundH2Handler(
  env: ProxyEnv,
  o: InboundH2Options,
): (stream: H2Downstream, headers: IncomingHttpHeaders, flags: number) => void {
  return (stream, headers, flags) => {
    stream.on('error', () => {});
    const ctx = o.newContext();
    const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
    const start = performance.now();
    const meter = env.metrics.meter('inbound', ctx.destination);
    /** Counts the answer the caller got, and logs it when access logs are on. */
    const finish = (status: number, error?: string): void => {
      const ms = performance.now() - start;
      meter.observe(status, ms);
      if (!env.accessLog.enabled) return;
      env.accessLog.write(
        {
          direction: 'inbound',
          source: ctx.source,
          destination: ctx.destination,
          ...h2Fields(headers, status, ms, error),
        },
        h2Detail(env.accessLog, stream, headers, ctx.upstream, ctx.peerSpiffeId),
      );
    };
    let d = ctx.l4!;
    let layer: 'l4' | 'l7' = 'l4';
    let jwt: ReturnType<typeof createRequestJwt> | null = null;
    let jwtDenied = false;
    if (d.needsRequest) {
      layer = 'l7';
      const plain = headersRecordH2(headers);
      const path = String(headers[':path']);
      jwt = createRequestJwt({
        providers: env.active().snapshot.jwtProviders ?? [],
        headers: plain,
        target: path,
        nowMs: env.clock.now(),
        onFailure: (provider, reason) => env.metrics.jwtFailures.labels(provider, reason).inc(),
      });
      const full = evaluateIntentions(env.active().snapshot.intentions, {
        source: ctx.source,
        destination: ctx.destination,
        request: { method: String(headers[':method']), path, headers: plain, jwt: jwt.check },
      });
      jwtDenied = full.jwt !== undefined;
      d = full;
      if (!full.allowed && full.enforced && full.jwt) {
        o.onDenied(layer, true);
        const err = jwtDenialError(ctx.source, ctx.destination, full);
        respondH2Error(stream, err, grpc);
        finish(401, err.code);
        return;
      }
    }
    if (!d.allowed) {
      o.onDenied(layer, d.enforced);
      if (d.enforced) {
        respondH2Error(stream, denialError(ctx.source, ctx.destination, d), grpc);
        finish(403, 'REMORA_E_PROXY_INTENTION_DENIED');
        return;
      }
    }
    if (jwt && !jwtDenied) {
      const changes = jwt.headerChanges();
      for (const n of changes.remove) delete headers[n];
      for (const [n, v] of changes.add) headers[n.toLowerCase()] = v;
    }
    const limited = o.limiter.admit(String(headers[':path'] ?? ''), env.clock.now());
    if (limited !== null) {
      o.onLimited(String(limited.details.scope));
      respondH2Error(stream, limited, grpc);
      finish(429, limited.code);
      return;
    }
    const { instance, inbound } = env.active().snapshot;
    delete headers[CLIENT_CERT_HEADER];
    const body = new H2RequestBody(stream, endsStream(flags), 0);
    let timeoutMs = inbound.localRequestTimeoutMs ?? 0;
    let session: ClientHttp2Session;
    let authority: string | undefined;
    try {
      if (o.session) {
        const linked = o.session();
        ({ session, authority } = linked);
        if (linked.timeoutMs !== undefined) timeoutMs = linked.timeoutMs;
      } else session = appSession(env);
    } catch (err) {
      // a terminating gateway's service without an instance to take the stream
      const e =
        err instanceof RemoraError
          ? err
          : new RemoraError('REMORA_E_PROXY_APP_UNAVAILABLE', String(err));
      respondH2Error(stream, e, grpc);
      finish(503, e.code);
      return;
    }
    const extra: Record<string, string> = {};
    if (inbound.sanitizeClientCert !== true)
      extra[CLIENT_CERT_HEADER] = `By=${instance.spiffeId};URI=${ctx.peerSpiffeId}`;
    if (authority !== undefined) extra[':authority'] = authority;
    forwardH2Stream(body, headers, session, { extra, timeoutMs }).then(
      (status) => finish(status),
      (err: unknown) => {
        if (err instanceof H2AttemptError && err.kind === 'refused') {
          // the app did not process it: say so, so that the caller's sidecar may retry
          if (!stream.destroyed) stream.close(H2.REFUSED_STREAM);
          finish(503, 'REFUSED_STREAM');
          return;
        }
        const timedOut = err instanceof H2AttemptError && err.kind === 'timeout';
        const e = timedOut
          ? new RemoraError(
              'REMORA_E_PROXY_REQUEST_TIMEOUT',
              o.session
                ? `${ctx.destination} (outside the mesh) sent no response within ${timeoutMs} ms (its service-resolver's RequestTimeout, else local_request_timeout_ms)`
                : `local app sent no response within ${timeoutMs} ms (local_request_timeout_ms)`,
            )
          : new RemoraError(
              'REMORA_E_PROXY_APP_UNAVAILABLE',
              `${o.session ? `${ctx.destination} (outside the mesh)` : 'local app'} did not answer: ${(err as Error).message}`,
            );
        respondH2Error(stream, e, grpc);
        finish(timedOut ? 504 : 502, e.code);
      },
    );
  };
}

/** A peer sidecar's HTTP/2 connection (node:http2 over mTLS). */
export function serveInboundH2(
  socket: TLSSocket,
  env: ProxyEnv,
  o: InboundH2Options,
): { drain(): void } {
  const server = loadHttp2().createServer();
  let session: ServerHttp2Session | null = null;
  server.on('session', (s) => {
    session = s;
    s.on('error', () => {});
  });
  server.on('stream', inboundH2Handler(env, o));
  server.emit('connection', socket);
  return {
    drain() {
      session?.close();
    },
  };
}
