// HTTP/2 (and gRPC) forwarding between node:http2 streams: headers, body streaming both ways
// with backpressure (pipe), trailers relayed end to end in both directions, and the request body
// kept (up to a bound) so that a refused or reset attempt can be replayed on a new stream.
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { RemoraError } from '../../lib/errors/index.ts';
import { describeError } from '../../lib/errors/index.ts';
import { ERROR_HEADER, authChallenge, retryAfter } from '../stages/responder.ts';
import { H2 } from '../lazy.ts';
import { modifyH2Headers, type HeaderModifiers } from '../../lib/proxy-api/index.ts';

const {
  CANCEL: NGHTTP2_CANCEL,
  INTERNAL_ERROR: NGHTTP2_INTERNAL_ERROR,
  NO_ERROR: NGHTTP2_NO_ERROR,
  REFUSED_STREAM: NGHTTP2_REFUSED_STREAM,
  FLAG_END_STREAM: NGHTTP2_FLAG_END_STREAM,
} = H2;

const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'host',
]);

/**
 * What the forwarding code uses of a stream toward the upstream: node:http2's
 * `ClientHttp2Stream`, or a `remora-h2/1` stream (h2-tunnel.ts).
 */
export interface H2Upstream extends Duplex {
  readonly rstCode?: number | undefined;
  close(code?: number): void;
  sendTrailers(trailers: OutgoingHttpHeaders): void;
}

/** Where upstream streams are opened: a `ClientHttp2Session`, or a `remora-h2/1` connection. */
export interface H2Session {
  request(
    headers: OutgoingHttpHeaders,
    options?: { endStream?: boolean; waitForTrailers?: boolean },
  ): H2Upstream;
}

/**
 * What the forwarding code uses of a stream from the caller: node:http2's `ServerHttp2Stream`,
 * or a `remora-h2/1` stream.
 */
export interface H2Downstream extends Duplex {
  readonly headersSent: boolean;
  readonly sentHeaders: OutgoingHttpHeaders;
  readonly session?: { readonly socket?: Socket | null } | undefined;
  respond(
    headers: OutgoingHttpHeaders,
    options?: { endStream?: boolean; waitForTrailers?: boolean },
  ): void;
  close(code?: number): void;
  sendTrailers(trailers: OutgoingHttpHeaders): void;
}

function copyHeaders(h: IncomingHttpHeaders, drop: Set<string>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const k in h) {
    const v = h[k];
    if (v === undefined || drop.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** True when a HEADERS frame carried END_STREAM (`flags` of the 'stream'/'response' events). */
export function endsStream(flags: number | undefined): boolean {
  return flags !== undefined && (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
}

/** The gRPC status for a proxy answer: denied 7, over a rate limit 8, anything else 14. */
function grpcStatusOf(status: number): string {
  // gRPC's own mapping of HTTP statuses: 404 (a gateway's unknown :authority) is UNIMPLEMENTED
  return status === 403
    ? '7'
    : status === 401
      ? '16'
      : status === 429
        ? '8'
        : status === 404
          ? '12'
          : '14';
}

/**
 * Answers a stream with a coded error (gRPC callers get a grpc-status and the message instead,
 * see `grpcStatusOf`).
 */
export function respondH2Error(stream: H2Downstream, err: RemoraError, grpc: boolean): void {
  if (stream.destroyed || stream.closed) return;
  const status = describeError(err.code).status ?? 502;
  const msg = `${err.code}: ${err.message}`;
  if (stream.headersSent) {
    stream.close(NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (grpc) {
    stream.respond(
      {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': grpcStatusOf(status),
        'grpc-message': encodeURIComponent(msg),
        [ERROR_HEADER]: err.code,
      },
      { endStream: true },
    );
    return;
  }
  const after = retryAfter(err);
  const challenge = authChallenge(err);
  stream.respond({
    ':status': status,
    'content-type': 'text/plain; charset=utf-8',
    [ERROR_HEADER]: err.code,
    ...(after !== null ? { 'retry-after': after } : {}),
    ...(challenge !== null ? { 'www-authenticate': challenge } : {}),
  });
  stream.end(`${msg}\n`);
}

/**
 * The request side of one downstream stream, shared by every attempt: whether it has a body,
 * the body chunks seen so far while they fit in `maxBuffered` bytes (so an attempt can be
 * replayed), the request trailers, and whether the body has ended. The body flows (with
 * backpressure) into the upstream stream attached last; nothing is read before the first one.
 */
export class H2RequestBody {
  readonly stream: H2Downstream;
  /** END_STREAM came with the request headers: no body, no trailers. */
  readonly empty: boolean;
  /** Body chunks so far; null once more than maxBuffered bytes went by (not replayable). */
  chunks: Buffer[] | null;
  bytes = 0;
  trailers: OutgoingHttpHeaders | null = null;
  ended: boolean;
  readonly #max: number;
  #target: H2Upstream | null = null;
  #listening = false;

  constructor(stream: H2Downstream, empty: boolean, maxBuffered: number) {
    this.stream = stream;
    this.empty = empty;
    this.ended = empty;
    this.#max = maxBuffered;
    this.chunks = maxBuffered > 0 ? [] : null;
    if (!empty) {
      stream.pause();
      stream.on('trailers', (t: IncomingHttpHeaders) => {
        this.trailers = copyHeaders(t, HOP);
      });
    }
  }

  /** Whether a new attempt can send the whole body again. */
  get replayable(): boolean {
    return this.empty || this.chunks !== null;
  }

  #onDrain = (): void => {
    this.stream.resume();
  };

  #onData = (c: Buffer): void => {
    if (this.chunks !== null) {
      this.bytes += c.length;
      if (this.bytes > this.#max) this.chunks = null;
      else this.chunks.push(c);
    }
    const t = this.#target;
    if (t === null) {
      this.stream.pause();
      return;
    }
    if (!t.write(c)) {
      this.stream.pause();
      t.once('drain', this.#onDrain);
    }
  };

  #onEnd = (): void => {
    this.ended = true;
    this.#target?.end();
  };

  /** Sends the body (what was kept, then the rest as it comes) to `up`. */
  attach(up: H2Upstream): void {
    if (this.empty) return;
    this.#target = up;
    up.on('wantTrailers', () => up.sendTrailers(this.trailers ?? {}));
    if (this.chunks !== null) for (const c of this.chunks) up.write(c);
    if (this.ended) {
      up.end();
      return;
    }
    if (!this.#listening) {
      this.#listening = true;
      this.stream.on('data', this.#onData);
      this.stream.once('end', this.#onEnd);
    }
    this.stream.resume();
  }

  /** Stops feeding `up` (a failed attempt). */
  detach(up: H2Upstream): void {
    if (this.#target !== up) return;
    this.#target = null;
    up.off('drain', this.#onDrain);
    if (!this.ended) this.stream.pause();
  }
}

/** Why an attempt failed before its answer was relayed (see `H2AttemptError`). */
export type H2FailureKind = 'refused' | 'reset' | 'status' | 'timeout';

export class H2AttemptError extends Error {
  readonly kind: H2FailureKind;
  readonly rstCode: number;
  readonly status: number;
  constructor(kind: H2FailureKind, message: string, rstCode = 0, status = 0) {
    super(message);
    this.kind = kind;
    this.rstCode = rstCode;
    this.status = status;
  }
}

export interface ForwardH2Options {
  /** Extra request headers for the upstream. */
  extra?: OutgoingHttpHeaders;
  /**
   * Asked for the upstream's answer status (and its `grpc-status` when the answer is
   * trailers-only, all in its head): true means "do not relay this answer, I will retry"; the
   * attempt then rejects with an `H2AttemptError` of kind `status`.
   */
  retryStatus?: (status: number, grpcStatus?: number) => boolean;
  /**
   * How long the upstream may take to send its response head (0: no limit). Past it, the
   * upstream stream is cancelled and the attempt rejects with kind `timeout`. A stream whose
   * head arrived is never cut, however long its body runs.
   */
  timeoutMs?: number;
  /** Changes to the response head before it is relayed (a route's and its split's), in order. */
  responseHeaders?: readonly HeaderModifiers[];
}

/**
 * Sends the request of `body.stream` to `session` (a new upstream stream) and relays the
 * answer back: headers, body, trailers. Resolves with the upstream status once the response
 * head is relayed; rejects with an `H2AttemptError` when the upstream stream failed, or sent
 * no head within `timeoutMs`, before that (nothing was sent to the client, so the caller may
 * answer or retry).
 */
export function forwardH2Stream(
  body: H2RequestBody,
  headers: IncomingHttpHeaders,
  session: H2Session,
  o: ForwardH2Options = {},
): Promise<number> {
  return new Promise((resolve, reject) => {
    const stream = body.stream;
    const reqHeaders = copyHeaders(headers, HOP);
    if (o.extra) Object.assign(reqHeaders, o.extra);
    let up: H2Upstream;
    try {
      up = body.empty
        ? session.request(reqHeaders, { endStream: true })
        : session.request(reqHeaders, { waitForTrailers: true });
    } catch (err) {
      reject(new H2AttemptError('refused', `could not open a stream: ${(err as Error).message}`));
      return;
    }
    let settled = false;
    let relayed = false;
    const onDownClose = (): void => {
      if (!up.closed) up.close(NGHTTP2_CANCEL);
    };
    stream.on('close', onDownClose);
    const detach = (): void => {
      stream.off('close', onDownClose);
      body.detach(up);
    };
    body.attach(up);
    let timer: NodeJS.Timeout | null = null;
    const fail = (e: H2AttemptError): void => {
      if (settled) return;
      settled = true;
      if (timer !== null) clearTimeout(timer);
      detach();
      if (!up.closed) up.close(NGHTTP2_CANCEL);
      reject(e);
    };
    const timeoutMs = o.timeoutMs ?? 0;
    if (timeoutMs > 0) {
      timer = setTimeout(
        () => fail(new H2AttemptError('timeout', `sent no response head within ${timeoutMs} ms`)),
        timeoutMs,
      );
    }
    up.on('response', (h: IncomingHttpHeaders, flags: number) => {
      if (timer !== null) clearTimeout(timer);
      const status = Number(h[':status'] ?? 502);
      const grpcStatus =
        endsStream(flags) && h['grpc-status'] !== undefined ? Number(h['grpc-status']) : undefined;
      if (o.retryStatus?.(status, grpcStatus)) {
        fail(new H2AttemptError('status', `upstream answered ${status}`, 0, status));
        return;
      }
      settled = true;
      relayed = true;
      if (stream.destroyed || stream.closed) {
        up.close(NGHTTP2_CANCEL);
        resolve(status);
        return;
      }
      const head = copyHeaders(h, HOP);
      for (const m of o.responseHeaders ?? []) modifyH2Headers(head, m);
      if (endsStream(flags)) {
        // a trailers-only answer (gRPC errors): one HEADERS frame with END_STREAM
        stream.respond(head, { endStream: true });
        resolve(status);
        return;
      }
      let trailers: OutgoingHttpHeaders | null = null;
      up.on('trailers', (t: IncomingHttpHeaders) => {
        trailers = copyHeaders(t, HOP);
      });
      stream.respond(head, { waitForTrailers: true });
      // empty trailers make node send an empty DATA frame with END_STREAM
      stream.on('wantTrailers', () => stream.sendTrailers(trailers ?? {}));
      up.pipe(stream);
      resolve(status);
    });
    up.on('error', (err: Error) => {
      if (!settled) {
        const refused = up.rstCode === NGHTTP2_REFUSED_STREAM;
        fail(
          new H2AttemptError(
            refused ? 'refused' : 'reset',
            `upstream stream failed: ${err.message}`,
            up.rstCode ?? 0,
          ),
        );
      } else if (relayed && !stream.destroyed && !stream.writableEnded)
        stream.close(NGHTTP2_INTERNAL_ERROR);
    });
    up.on('close', () => {
      if (!settled) {
        const code = up.rstCode ?? 0;
        fail(
          new H2AttemptError(
            code === NGHTTP2_REFUSED_STREAM ? 'refused' : 'reset',
            `upstream stream closed with code ${code} before answering`,
            code,
          ),
        );
        return;
      }
      if (!relayed || stream.destroyed || stream.writableEnded || up.readableEnded) return;
      // the upstream stream ended without END_STREAM: pass the reset on
      stream.close(up.rstCode && up.rstCode !== NGHTTP2_NO_ERROR ? up.rstCode : NGHTTP2_CANCEL);
    });
  });
}
