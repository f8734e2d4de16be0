// Access logs (Consul's proxy-defaults `AccessLogs`): one line per HTTP request, HTTP/2 or gRPC
// stream and TCP connection — the proxy's own JSON, or the format the settings give
// (lib/access-log/format.ts) — to the proxy's standard output or error or appended to a file.
// Off unless the snapshot asks for them. Writing never holds traffic back: a line that finds more
// than MAX_PENDING_BYTES not yet written is dropped and counted, and so is every line while the
// file cannot be written.
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http2';
import type { H2Downstream } from './http/h2-forward.ts';
import { RemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { AccessLogConfig } from '../lib/proxy-api/index.ts';
import {
  compileAccessFormat,
  type AccessDetail,
  type AccessEntry,
  type AccessLineRenderer,
} from '../lib/access-log/format.ts';
import type { ProxyRequest, ProxyResponse, Stage } from './stages/types.ts';
import type { Body } from './http/body.ts';
import { performance } from 'node:perf_hooks';

export type { AccessDetail, AccessEntry } from '../lib/access-log/format.ts';

/** Bytes of lines waiting for the output, past which new lines are dropped. */
export const MAX_PENDING_BYTES = 1 << 20;

export interface AccessLog {
  /** True while the snapshot asks for access logs: callers skip building entries otherwise. */
  readonly enabled: boolean;
  /** True while a custom format is set: only then is a line's `detail` read. */
  readonly detailed: boolean;
  /** Applies a snapshot's setting (undefined: off). */
  configure(cfg: AccessLogConfig | undefined): void;
  /** `detail` is what only a custom format reads (headers, addresses). */
  write(entry: AccessEntry, detail?: AccessDetail): void;
  close(): void;
}

/** The fields of an HTTP/2 or gRPC stream's line that its answer and timing do not give. */
export function h2Fields(
  headers: { [name: string]: string | string[] | number | undefined },
  status: number,
  ms: number,
  error: string | undefined,
): Pick<AccessEntry, 'protocol' | 'method' | 'path' | 'status' | 'error' | 'durationMs'> {
  return {
    protocol: 'HTTP/2',
    method: String(headers[':method']),
    path: pathOf(String(headers[':path'] ?? '')),
    status,
    ...(error ? { error } : {}),
    durationMs: roundMs(ms),
  };
}

/** What a custom format reads of an HTTP/2 or gRPC stream, when one is set. */
export function h2Detail(
  log: AccessLog,
  stream: H2Downstream,
  headers: IncomingHttpHeaders,
  upstream: AccessDetail['upstream'],
  downstreamPeer: string | null,
): AccessDetail | undefined {
  if (!log.detailed) return undefined;
  return {
    requestHeaders: headers,
    responseHeaders: stream.sentHeaders,
    downstream: stream.session?.socket ?? null,
    upstream,
    downstreamPeer,
  };
}

/** Milliseconds to the microsecond. */
export function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** The path of a request target without its query string. */
export function pathOf(target: string): string {
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

export function createAccessLog(o: {
  logger: Logger;
  onDrop: () => void;
  stdout?: Writable;
  stderr?: Writable;
}): AccessLog {
  let current: AccessLogConfig | undefined;
  /** The settings' format, compiled; undefined: the proxy's own JSON line. */
  let custom: AccessLineRenderer | undefined;
  let out: Writable | null = null;
  let file: WriteStream | null = null;
  let broken = false;
  /** Standard streams watched for errors (a closed pipe must not end the proxy). */
  const watched = new WeakSet<Writable>();

  function standard(stream: Writable): Writable {
    if (!watched.has(stream)) {
      watched.add(stream);
      stream.on('error', () => {
        if (out === stream) broken = true;
      });
    }
    return stream;
  }

  let batch: string[] = [];
  let batchBytes = 0;
  function flush(): void {
    if (batch.length === 0) return;
    const text = batch.join('');
    batch = [];
    batchBytes = 0;
    if (out !== null && !broken) out.write(text);
  }

  // one Date per millisecond at most
  let stampMs = 0;
  let stamp = '';
  function timestamp(): string {
    const now = Date.now();
    if (now !== stampMs) {
      stampMs = now;
      stamp = new Date(now).toISOString();
    }
    return stamp;
  }

  function closeFile(): void {
    file?.end();
    file = null;
  }

  return {
    get enabled() {
      return current !== undefined;
    },
    get detailed() {
      return custom !== undefined;
    },
    configure(cfg) {
      // the snapshot's decoder checked the format: it compiles
      if (cfg?.textFormat !== current?.textFormat || cfg?.jsonFormat !== current?.jsonFormat)
        custom = cfg === undefined ? undefined : compileAccessFormat(cfg);
      if (cfg?.type === current?.type && cfg?.path === current?.path) {
        current = cfg;
        return;
      }
      flush();
      current = cfg;
      closeFile();
      broken = false;
      if (cfg === undefined) out = null;
      else if (cfg.type === 'stdout') out = standard(o.stdout ?? process.stdout);
      else if (cfg.type === 'stderr') out = standard(o.stderr ?? process.stderr);
      else {
        const f = createWriteStream(cfg.path!, { flags: 'a', mode: 0o600 });
        f.on('error', (err: NodeJS.ErrnoException) => {
          if (file !== f) return;
          broken = true;
          logError(
            o.logger,
            new RemoraError(
              'REMORA_E_PROXY_ACCESS_LOG_FAILED',
              `cannot write access logs to ${cfg.path}: ${err.code ?? err.message}; they are dropped until the setting changes`,
              { path: cfg.path },
            ),
            undefined,
            'warn',
          );
        });
        file = f;
        out = f;
      }
    },
    write(entry, detail) {
      if (out === null) return;
      if (broken || out.writableLength + batchBytes > MAX_PENDING_BYTES) {
        o.onDrop();
        return;
      }
      // the lines of one event-loop turn leave in one write (a file write is a thread-pool job)
      const line =
        custom === undefined
          ? `{"time":"${timestamp()}","log":"access",${JSON.stringify(entry).slice(1)}\n`
          : custom(entry, detail, Date.now());
      batch.push(line);
      batchBytes += line.length;
      if (batch.length === 1) setImmediate(flush);
    },
    close() {
      flush();
      closeFile();
      out = null;
      current = undefined;
      custom = undefined;
    },
  };
}

/** A body's length when it is known before it has passed (a stream's, if it declared one). */
function bodyBytes(body: Body, declared: number): number | undefined {
  if (body === null) return 0;
  if (Buffer.isBuffer(body)) return body.length;
  return declared >= 0 ? declared : undefined;
}

/** The access log of HTTP/1.1 requests (and those `remora-mux/1` carries), at the top of a stack. */
export function createAccessLogStage(log: AccessLog): Stage {
  return (next) => {
    const logged = async (req: ProxyRequest): Promise<ProxyResponse> => {
      const start = performance.now();
      const res: ProxyResponse = await next(req);
      const ctx = req.ctx;
      log.write(
        {
          direction: ctx.direction,
          source: ctx.source,
          destination: ctx.destination,
          protocol: 'HTTP/1.1',
          method: req.method,
          path: pathOf(req.target),
          status: res.status,
          ...(res.errorCode ? { error: res.errorCode } : {}),
          durationMs: roundMs(performance.now() - start),
          ...(ctx.direction === 'outbound'
            ? { endpoint: ctx.endpointId, retries: ctx.retries }
            : {}),
        },
        log.detailed
          ? {
              requestHeaders: req.headers,
              responseHeaders: res.headers,
              authority: req.host,
              downstream: ctx.downstream,
              upstream: ctx.upstream,
              downstreamPeer: ctx.direction === 'inbound' ? ctx.peerSpiffeId : null,
              requestBytes: bodyBytes(req.body, req.bodyLength),
              responseBytes: bodyBytes(res.body, res.bodyLength),
            }
          : undefined,
      );
      return res;
    };
    // while the logs are off, a request costs one property read here
    return (req) => (log.enabled ? logged(req) : next(req));
  };
}
