// The client half of `remora-mux/1` (see mux-server.ts): many requests in flight on one mTLS
// connection to a peer sidecar, each tagged with a `remora-stream` number, answers matched by
// that number in whatever order they come. Requests sent in the same event-loop turn leave in
// one write. Only requests with no body or a buffered one travel this way; streaming uploads,
// Upgrade and `Expect: 100-continue` use the one-request-per-connection pool (h1-client.ts).
import type { Socket } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import { BodyDecoder, BodyStream, type BodyMode } from './body.ts';
import {
  endToEndHeaders,
  findHeadEnd,
  parseResponseHead,
  responseHasNoBody,
  type HeadLimits,
} from './h1-parse.ts';
import {
  isMuxField,
  MUX_ALPN,
  MUX_MAX_BODY_BYTES,
  REFUSED_HEADER,
  takeStreamId,
  STREAM_HEADER,
} from './mux-server.ts';
import type { ProxyRequest, ProxyResponse } from '../stages/types.ts';
import { peerExpiry, SharedPool, type SharedPoolOptions } from '../outbound/shared-pool.ts';

/** True when a request can travel on a multiplexed connection. */
export function muxable(req: ProxyRequest): boolean {
  return (
    req.upgrade === null &&
    (req.body === null || (Buffer.isBuffer(req.body) && req.body.length <= MUX_MAX_BODY_BYTES)) &&
    !hasExpectContinue(req.headers)
  );
}

function hasExpectContinue(h: readonly string[]): boolean {
  for (let i = 0; i < h.length; i += 2)
    if (h[i]!.length === 6 && h[i]!.toLowerCase() === 'expect') return true;
  return false;
}

interface Exchange {
  method: string;
  sentAt: number;
  timeoutMs: number;
  resolve: ((r: ProxyResponse) => void) | null;
  reject: ((e: RemoraError) => void) | null;
}

function resetError(target: string, message: string, started: boolean): RemoraError {
  return new RemoraError('REMORA_E_PROXY_UPSTREAM_RESET', `${target} ${message}`, {
    target,
    reused: true,
    responseStarted: started,
    requestSent: true,
  });
}

export class MuxConnection {
  readonly socket: Socket;
  readonly target: string;
  dead = false;
  /** No new requests (the pool is closing it); closed once the last answer is in. */
  retiring = false;
  #limits: HeadLimits;
  #next = 1;
  /** Streams up to this number have been handed to the socket. */
  #flushedUpTo = 0;
  #inflight = new Map<string, Exchange>();
  #out: Buffer[] = [];
  #flushScheduled = false;
  #buf: Buffer | null = null;
  /** The answer whose body is being read. */
  #body: { decoder: BodyDecoder; stream: BodyStream | null } | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** Requests that timed out and whose answer has not come yet. */
  #abandoned = 0;
  /** When the last answer came in (for the pool's idle sweep). */
  idleSince = performance.now();
  /** When the peer's certificate expires: the pool sends no new request on it after that. */
  readonly expiresAt: number;
  #onGone: (c: MuxConnection) => void;

  constructor(
    socket: Socket,
    target: string,
    limits: HeadLimits,
    onGone: (c: MuxConnection) => void,
  ) {
    this.socket = socket;
    this.target = target;
    this.#limits = limits;
    this.#onGone = onGone;
    this.expiresAt = peerExpiry(socket);
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.#onData(c));
    socket.on('error', () => this.#gone('closed the connection'));
    socket.on('close', () => this.#gone('closed the connection'));
    socket.on('end', () => this.#gone('ended the connection'));
  }

  /** Requests in flight on it (the pool's measure of how busy it is). */
  get load(): number {
    return this.#inflight.size;
  }

  request(req: ProxyRequest, timeoutMs: number): Promise<ProxyResponse> {
    const id = String(this.#next++);
    let head = `${req.method} ${req.target} HTTP/1.1\r\n${STREAM_HEADER}: ${id}\r\n`;
    const h = req.headers;
    for (let i = 0; i < h.length; i += 2)
      if (!isMuxField(h[i]!)) head += `${h[i]}: ${h[i + 1]}\r\n`;
    const body = req.body as Buffer | null;
    const len = body === null ? 0 : body.length;
    head += `content-length: ${len}\r\n\r\n`;
    this.#out.push(Buffer.from(head, 'latin1'));
    if (len > 0) this.#out.push(body!);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
    return new Promise<ProxyResponse>((resolve, reject) => {
      this.#inflight.set(id, {
        method: req.method,
        sentAt: performance.now(),
        timeoutMs,
        resolve,
        reject,
      });
      if (timeoutMs > 0 && this.#timer === null) this.#armTimer(timeoutMs);
    });
  }

  /** Requests sent in one event-loop turn leave in one write. */
  #flush(): void {
    this.#flushScheduled = false;
    const out = this.#out;
    this.#out = [];
    if (this.dead || out.length === 0) return;
    this.#flushedUpTo = this.#next - 1;
    this.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
  }

  #armTimer(delayMs: number): void {
    this.#timer = setTimeout(() => this.#onTimer(), Math.max(delayMs, 1));
    this.#timer.unref();
  }

  /** Fails the requests whose answer is late; runs while some request has a timeout. */
  #onTimer(): void {
    this.#timer = null;
    const now = performance.now();
    let nextDue = Infinity;
    for (const [, x] of this.#inflight) {
      if (x.timeoutMs <= 0 || x.resolve === null) continue;
      const due = x.sentAt + x.timeoutMs;
      if (due - now <= 1) {
        const reject = x.reject!;
        x.resolve = null;
        x.reject = null;
        this.#abandoned++;
        reject(
          new RemoraError(
            'REMORA_E_PROXY_REQUEST_TIMEOUT',
            `${this.target} sent no response within ${x.timeoutMs} ms`,
            { target: this.target, reused: true, responseStarted: false, requestSent: true },
          ),
        );
      } else nextDue = Math.min(nextDue, due);
    }
    if (nextDue !== Infinity && !this.dead) this.#armTimer(nextDue - now);
    // answers that never come pin the connection: stop using it, end it once only those remain
    if (this.#abandoned >= 8) this.retiring = true;
    this.#settle();
  }

  #onData(chunk: Buffer): void {
    const buf = this.#buf === null ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#buf = null;
    let at = 0;
    while (at < buf.length && !this.dead) {
      if (this.#body !== null) {
        const n = this.#feedBody(buf, at);
        if (n < 0) return;
        at += n;
        continue;
      }
      const end = findHeadEnd(buf, at);
      if (end === -1) {
        if (buf.length - at > this.#limits.maxHeadBytes)
          return this.#protocolError('sent a response head that is too large');
        this.#buf = at === 0 ? buf : buf.subarray(at);
        return;
      }
      const next = this.#startAnswer(buf, at, end);
      if (next < 0) return;
      at = next;
    }
  }

  /**
   * Reads one answer whose head is `buf[at..end)`; returns where the next message starts (past
   * the body when it is all there), or -1 when the connection had to be given up.
   */
  #startAnswer(buf: Buffer, at: number, end: number): number {
    const head = parseResponseHead(buf.subarray(at, end), this.#limits);
    if (!('headers' in head)) {
      this.#protocolError(`sent an invalid response: ${head.message}`);
      return -1;
    }
    const headers = endToEndHeaders(head.headers, head.connectionTokens);
    const id = takeStreamId(headers);
    const x = id === '' ? undefined : this.#inflight.get(id);
    if (x === undefined || head.status < 200) {
      this.#protocolError(`answered a stream it was not asked (${id || 'none'})`);
      return -1;
    }
    this.#inflight.delete(id);
    let refused = false;
    for (let i = 0; i < headers.length; i += 2)
      if (headers[i] === REFUSED_HEADER) {
        refused = true;
        headers.splice(i, 2);
        break;
      }
    let mode: BodyMode;
    if (responseHasNoBody(x.method, head.status)) mode = 'none';
    else if (head.chunked) mode = 'chunked';
    else if (head.contentLength >= 0) mode = head.contentLength === 0 ? 'none' : 'length';
    else {
      this.#protocolError('sent an answer without framing');
      return -1;
    }
    const res: ProxyResponse = {
      status: head.status,
      reason: head.reason,
      headers,
      body: null,
      bodyLength: head.chunked ? -1 : head.contentLength,
    };
    const resolve = x.resolve;
    const reject = x.reject;
    x.resolve = null;
    x.reject = null;
    if (resolve === null && refused) this.#abandoned--;
    // the common case: the whole body came with the head — a view of it, no stream
    if (
      mode === 'length' &&
      buf.length - end >= head.contentLength &&
      !refused &&
      resolve !== null
    ) {
      res.body = buf.subarray(end, end + head.contentLength);
      resolve(res);
      this.#settle();
      return end + head.contentLength;
    }
    const decoder =
      mode === 'none' ? null : new BodyDecoder(mode, head.contentLength, 'response', this.#limits);
    if (refused) {
      // the peer is draining and did not process it: any method may be sent again, elsewhere
      this.retiring = true;
      this.#body = decoder === null ? null : { decoder, stream: null };
      reject?.(
        new RemoraError(
          'REMORA_E_PROXY_CONNECT_FAILED',
          `${this.target} is draining and did not process the request`,
          { target: this.target, refused: true },
        ),
      );
    } else if (decoder === null || resolve === null) {
      // nothing to stream, or nobody waits any more (timed out): a body is read and dropped
      this.#body = decoder === null ? null : { decoder, stream: null };
      if (resolve !== null) resolve(res);
      else this.#abandoned--;
    } else {
      const stream = new BodyStream();
      stream.onPause = () => this.socket.pause();
      stream.onResume = () => this.socket.resume();
      stream.onCancel = () => {
        // the caller gave up mid-body: read the rest and drop it
        if (this.#body !== null && this.#body.stream === stream) this.#body.stream = null;
        this.socket.resume();
      };
      res.body = stream;
      this.#body = { decoder, stream };
      resolve(res);
    }
    this.#settle();
    return end;
  }

  /** Feeds the current answer's body; returns bytes consumed or -1 when the connection failed. */
  #feedBody(buf: Buffer, at: number): number {
    const b = this.#body!;
    const n = b.decoder.feed(buf, at, {
      data: (c) => b.stream?.push(Buffer.from(c)),
      end: (t) => b.stream?.end(t),
    });
    if (typeof n !== 'number') {
      b.stream?.fail(
        new RemoraError(n.code, `${this.target}: ${n.message}`, { target: this.target }),
      );
      this.#protocolError(n.message);
      return -1;
    }
    if (b.decoder.done) {
      this.#body = null;
      this.#settle();
    }
    return n;
  }

  #settle(): void {
    if (this.#inflight.size === 0 && this.#body === null) this.idleSince = performance.now();
    if (!this.retiring || this.#body !== null || this.dead) return;
    if (this.#inflight.size === 0) this.close();
    else if (this.#inflight.size === this.#abandoned) this.socket.destroy(); // nobody waits
  }

  #protocolError(message: string): void {
    this.#gone(message);
    this.socket.destroy();
  }

  #gone(message: string): void {
    if (this.dead) return;
    this.dead = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#body?.stream?.fail(
      resetError(this.target, `${message} in the middle of a response body`, true),
    );
    this.#body = null;
    for (const [id, x] of this.#inflight) {
      if (Number(id) > this.#flushedUpTo)
        // never written: the peer cannot have seen it, so any method may be sent again
        x.reject?.(
          new RemoraError(
            'REMORA_E_PROXY_CONNECT_FAILED',
            `${this.target} ${message} before the request was sent`,
            { target: this.target, refused: true },
          ),
        );
      else x.reject?.(resetError(this.target, `${message} before answering`, false));
    }
    this.#inflight.clear();
    this.#onGone(this);
  }

  close(): void {
    this.retiring = true;
    if (this.#inflight.size === 0 && this.#body === null) {
      this.dead = true;
      this.socket.end();
      this.socket.destroy();
      this.#onGone(this);
    }
  }
}

export interface MuxPoolOptions extends Omit<
  SharedPoolOptions<MuxConnection>,
  'alpn' | 'wrap' | 'maxLoad'
> {
  target: string;
  limits: HeadLimits;
  /** Requests in flight on one connection before another one is opened. */
  maxPerConnection: number;
}

/**
 * The multiplexed connections to one endpoint: a request goes to the least busy one; another is
 * opened only when all are full. When the peer does not speak the protocol (an older Remora, or
 * not Remora) the caller's fallback (the HTTP/1.1 pool) takes the request.
 */
export class MuxPool extends SharedPool<MuxConnection> {
  constructor(o: MuxPoolOptions) {
    super({
      ...o,
      alpn: MUX_ALPN,
      maxLoad: o.maxPerConnection,
      wrap: (socket, onGone) => new MuxConnection(socket, o.target, o.limits, onGone),
    });
  }

  /** Sends `req` on a multiplexed connection, or through `fallback` when the peer has none. */
  request(
    req: ProxyRequest,
    timeoutMs: number,
    fallback: () => Promise<ProxyResponse>,
  ): Promise<ProxyResponse> {
    const c = this.pick();
    if (c !== null) return c.request(req, timeoutMs);
    if (this.unsupported) return fallback();
    return this.add().then((fresh) =>
      fresh === null ? fallback() : fresh.request(req, timeoutMs),
    );
  }
}
