// The client half of HTTP/1.1 on raw sockets: one request at a time per connection, strict
// response parsing, streaming bodies with backpressure, and a LIFO pool of keep-alive
// connections per destination (the hottest connection is reused first, cold ones time out).
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { RemoraError } from '../../lib/errors/index.ts';
import { BodyDecoder, BodyStream, encodeChunk, encodeLastChunk, type BodyMode } from './body.ts';
import {
  endToEndHeaders,
  findHeadEnd,
  parseResponseHead,
  responseHasNoBody,
  type HeadLimits,
} from './h1-parse.ts';
import { isIdempotent, type ProxyRequest, type ProxyResponse } from '../stages/types.ts';
import type { ConnectionLimiter } from '../stages/limits.ts';

const SMALL_BODY = 16 * 1024;

export interface UpstreamError extends RemoraError {
  details: { reused: boolean; responseStarted: boolean; requestSent: boolean };
}

function upstreamError(
  code: 'REMORA_E_PROXY_UPSTREAM_RESET' | 'REMORA_E_PROXY_REQUEST_TIMEOUT',
  message: string,
  facts: { reused: boolean; responseStarted: boolean; requestSent: boolean; target: string },
): RemoraError {
  return new RemoraError(code, message, facts);
}

/** One keep-alive HTTP/1.1 connection to an upstream. */
export class H1ClientConnection {
  readonly socket: Socket;
  readonly target: string;
  /** Requests completed on this connection. */
  served = 0;
  dead = false;
  busy = false;
  #limits: HeadLimits;
  #onRelease: (c: H1ClientConnection) => void;
  // current exchange
  #buf: Buffer | null = null;
  #req: ProxyRequest | null = null;
  #resolve: ((r: ProxyResponse) => void) | null = null;
  #reject: ((e: RemoraError) => void) | null = null;
  #decoder: BodyDecoder | null = null;
  #resBody: BodyStream | null = null;
  #responseStarted = false;
  #requestDone = false;
  #responseDone = false;
  #keepAlive = true;
  /**
   * One response timer per connection, not re-armed per request: a request records when it was
   * sent, and the timer, when it fires, fails the request that is late or waits the rest.
   */
  #timer: NodeJS.Timeout | null = null;
  #timerMs = 0;
  #timerArmed = false;
  #sentAt = 0;
  #waitingHead = false;
  /** When the connection went idle (for the pool's sweeper). */
  idleSince = 0;

  constructor(
    socket: Socket,
    target: string,
    limits: HeadLimits,
    onRelease: (c: H1ClientConnection) => void,
  ) {
    this.socket = socket;
    this.target = target;
    this.#limits = limits;
    this.#onRelease = onRelease;
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.#onData(c));
    socket.on('error', () => this.#onGone());
    socket.on('close', () => this.#onGone());
    socket.on('end', () => this.#onEnd());
  }

  /** Sends a request; resolves with the response head (body streaming or buffered). */
  request(req: ProxyRequest, timeoutMs: number): Promise<ProxyResponse> {
    this.busy = true;
    this.#req = req;
    this.#buf = null;
    this.#decoder = null;
    this.#resBody = null;
    this.#responseStarted = false;
    this.#requestDone = false;
    this.#responseDone = false;
    this.#keepAlive = true;
    return new Promise<ProxyResponse>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
      if (timeoutMs > 0) {
        this.#waitingHead = true;
        this.#sentAt = performance.now();
        if (!this.#timerArmed || this.#timerMs !== timeoutMs) this.#armTimer(timeoutMs, timeoutMs);
      }
      this.#writeRequest(req);
    });
  }

  #armTimer(timeoutMs: number, delayMs: number): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timerMs = timeoutMs;
    this.#timerArmed = true;
    this.#timer = setTimeout(() => this.#onTimer(), delayMs);
    this.#timer.unref();
  }

  #onTimer(): void {
    this.#timerArmed = false;
    if (!this.#waitingHead || !this.busy) return;
    const left = this.#timerMs - (performance.now() - this.#sentAt);
    if (left > 1) {
      this.#armTimer(this.#timerMs, left);
      return;
    }
    this.#fail(
      upstreamError(
        'REMORA_E_PROXY_REQUEST_TIMEOUT',
        `${this.target} sent no response within ${this.#timerMs} ms`,
        this.#facts(),
      ),
    );
    this.socket.destroy();
  }

  #facts() {
    return {
      reused: this.served > 0,
      responseStarted: this.#responseStarted,
      requestSent: this.#requestDone,
      target: this.target,
    };
  }

  #writeRequest(req: ProxyRequest): void {
    let head = `${req.method} ${req.target} HTTP/1.1\r\n`;
    const h = req.headers;
    for (let i = 0; i < h.length; i += 2) head += `${h[i]}: ${h[i + 1]}\r\n`;
    const body = req.body;
    const s = this.socket;
    if (body === null || Buffer.isBuffer(body)) {
      const len = body === null ? req.bodyLength : body.length;
      if (len >= 0 && (len > 0 || req.method !== 'GET')) head += `content-length: ${len}\r\n`;
      head += '\r\n';
      if (body !== null && body.length > 0 && body.length <= SMALL_BODY) {
        const out = Buffer.allocUnsafe(head.length + body.length);
        out.write(head, 0, 'latin1');
        body.copy(out, head.length);
        s.write(out);
      } else {
        s.write(Buffer.from(head, 'latin1'));
        if (body !== null && body.length > 0) s.write(body);
      }
      this.#requestDone = true;
      return;
    }
    const chunked = req.bodyLength < 0;
    head += chunked
      ? 'transfer-encoding: chunked\r\n\r\n'
      : `content-length: ${req.bodyLength}\r\n\r\n`;
    s.write(Buffer.from(head, 'latin1'));
    const onDrain = (): void => body.resume();
    s.on('drain', onDrain);
    body.attach({
      data: (c) => {
        if (this.dead) return true;
        if (!chunked) return s.write(c);
        const [a, b, cr] = encodeChunk(c);
        s.write(a!);
        s.write(b!);
        return s.write(cr!);
      },
      end: (trailers) => {
        s.off('drain', onDrain);
        if (chunked && !this.dead) s.write(encodeLastChunk(trailers));
        this.#requestDone = true;
        this.#maybeRelease();
      },
      error: (e) => {
        s.off('drain', onDrain);
        this.#fail(e);
        s.destroy();
      },
    });
  }

  #onData(chunk: Buffer): void {
    if (!this.busy) {
      // bytes while idle: the server is confused; never reuse this connection
      this.socket.destroy();
      return;
    }
    if (this.#decoder !== null) {
      this.#feedBody(chunk, 0);
      return;
    }
    if (this.#responseDone) {
      this.socket.destroy();
      return;
    }
    this.#buf = this.#buf === null ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#responseStarted = true;
    this.#parseHeads();
  }

  #parseHeads(): void {
    const req = this.#req!;
    for (;;) {
      const buf = this.#buf!;
      const end = findHeadEnd(buf);
      if (end === -1) {
        if (buf.length > this.#limits.maxHeadBytes) {
          this.#fail(
            new RemoraError(
              'REMORA_E_PROXY_UPSTREAM_RESET',
              `${this.target} sent a response head larger than ${this.#limits.maxHeadBytes} bytes`,
              this.#facts(),
            ),
          );
          this.socket.destroy();
        }
        return;
      }
      const head = parseResponseHead(buf.subarray(0, end), this.#limits);
      if (!('headers' in head)) {
        this.#fail(
          new RemoraError(
            head.code,
            `${this.target} sent an invalid response: ${head.message}`,
            this.#facts(),
          ),
        );
        this.socket.destroy();
        return;
      }
      const rest = buf.subarray(end);
      if (head.status === 101 && req.upgrade !== null) {
        this.#clearTimer();
        this.dead = true;
        this.socket.removeAllListeners('data');
        this.socket.removeAllListeners('end');
        this.socket.removeAllListeners('timeout');
        const resolve = this.#resolve!;
        this.#resolve = null;
        this.#reject = null;
        resolve({
          status: 101,
          reason: head.reason,
          headers: head.headers,
          body: null,
          bodyLength: -1,
          upgraded: { socket: this.socket, head: Buffer.from(rest) },
        });
        return;
      }
      if (head.status < 200) {
        // interim response (100, 103): drop it and read on
        this.#buf = rest;
        if (rest.length === 0) return;
        continue;
      }
      this.#clearTimer();
      this.#keepAlive = head.keepAlive;
      let mode: BodyMode;
      if (responseHasNoBody(req.method, head.status)) mode = 'none';
      else if (head.chunked) mode = 'chunked';
      else if (head.contentLength >= 0) mode = head.contentLength === 0 ? 'none' : 'length';
      else {
        mode = 'close';
        this.#keepAlive = false;
      }
      const res: ProxyResponse = {
        status: head.status,
        reason: head.reason,
        headers: endToEndHeaders(head.headers, head.connectionTokens),
        body: null,
        bodyLength: head.chunked ? -1 : head.contentLength,
      };
      this.#buf = null;
      const resolve = this.#resolve!;
      this.#resolve = null;
      this.#reject = null;
      if (mode === 'none') {
        this.#responseDone = true;
        if (rest.length > 0) this.#keepAlive = false;
        resolve(res);
        this.#maybeRelease();
        return;
      }
      if (mode === 'length' && rest.length >= head.contentLength) {
        // a view, not a copy: socket reads hand over fresh buffers that nothing else writes to
        res.body = rest.subarray(0, head.contentLength);
        if (rest.length > head.contentLength) this.#keepAlive = false;
        this.#responseDone = true;
        resolve(res);
        this.#maybeRelease();
        return;
      }
      const stream = new BodyStream();
      this.#resBody = stream;
      res.body = stream;
      stream.onPause = () => this.socket.pause();
      stream.onResume = () => this.socket.resume();
      stream.onCancel = () => {
        this.dead = true;
        this.socket.destroy();
      };
      this.#decoder = new BodyDecoder(mode, head.contentLength, 'response', this.#limits);
      resolve(res);
      if (rest.length > 0) this.#feedBody(rest, 0);
      return;
    }
  }

  #feedBody(chunk: Buffer, start: number): void {
    const d = this.#decoder!;
    const stream = this.#resBody!;
    const n = d.feed(chunk, start, {
      data: (c) => stream.push(c),
      end: (t) => {
        this.#responseDone = true;
        stream.end(t);
      },
    });
    if (typeof n !== 'number') {
      stream.fail(new RemoraError(n.code, `${this.target}: ${n.message}`, this.#facts()));
      this.socket.destroy();
      return;
    }
    if (d.done) {
      this.#decoder = null;
      if (start + n < chunk.length) this.#keepAlive = false;
      this.#maybeRelease();
    }
  }

  #maybeRelease(): void {
    if (!this.#responseDone || !this.#requestDone || !this.busy) return;
    this.busy = false;
    this.served++;
    this.#req = null;
    this.#resBody = null;
    if (!this.#keepAlive || this.dead) {
      this.dead = true;
      this.socket.destroy();
      return;
    }
    this.idleSince = performance.now();
    this.#onRelease(this);
  }

  #onEnd(): void {
    if (this.#decoder !== null && this.#resBody !== null) {
      const stream = this.#resBody;
      const ok = this.#decoder.finish({
        data: () => {},
        end: (t) => {
          this.#responseDone = true;
          stream.end(t);
        },
      });
      if (!ok)
        stream.fail(
          new RemoraError(
            'REMORA_E_PROXY_UPSTREAM_RESET',
            `${this.target} closed the connection in the middle of the response body`,
            this.#facts(),
          ),
        );
    }
    this.socket.destroy();
  }

  #onGone(): void {
    if (this.dead && !this.busy) return;
    this.dead = true;
    this.#clearTimer();
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#reject !== null) {
      this.#fail(
        upstreamError(
          'REMORA_E_PROXY_UPSTREAM_RESET',
          `${this.target} closed the connection before answering`,
          this.#facts(),
        ),
      );
    } else if (this.#resBody !== null && !this.#resBody.ended) {
      this.#resBody.fail(
        new RemoraError(
          'REMORA_E_PROXY_UPSTREAM_RESET',
          `${this.target} closed the connection in the middle of the response body`,
          this.#facts(),
        ),
      );
    }
    this.busy = false;
  }

  #fail(e: RemoraError): void {
    this.#clearTimer();
    this.dead = true;
    const reject = this.#reject;
    this.#resolve = null;
    this.#reject = null;
    reject?.(e);
  }

  #clearTimer(): void {
    this.#waitingHead = false;
  }
}

export interface PoolOptions {
  /** Opens a connected (and, for TLS, verified) socket. */
  dial: () => Promise<Socket>;
  /** Human name of the destination for messages, e.g. `api-1 (10.0.0.5:21000)`. */
  target: string;
  limits: HeadLimits;
  idleTimeoutMs: number;
  maxIdle?: number;
  /** Shared connection budget (circuit breaker); unlimited when absent. */
  limiter?: ConnectionLimiter;
  /** How long a request may wait for a connection slot. */
  pendingTimeoutMs?: number;
}

/** LIFO keep-alive pool for one destination. */
export class H1Pool {
  readonly o: PoolOptions;
  #idle: H1ClientConnection[] = [];
  /** Connections open (idle + busy). */
  open = 0;
  closed = false;

  #sweeper: NodeJS.Timeout | null = null;

  constructor(o: PoolOptions) {
    this.o = o;
  }

  /** Closes connections idle longer than idleTimeoutMs; runs while there are idle ones. */
  #sweep(): void {
    const cutoff = performance.now() - this.o.idleTimeoutMs;
    const keep: H1ClientConnection[] = [];
    for (const c of this.#idle) {
      if (c.idleSince < cutoff || c.dead) c.socket.destroy();
      else keep.push(c);
    }
    this.#idle = keep;
    if (keep.length === 0 && this.#sweeper !== null) {
      clearInterval(this.#sweeper);
      this.#sweeper = null;
    }
  }

  get idleCount(): number {
    return this.#idle.length;
  }

  /** The most recently used live idle connection, or null. */
  #takeIdle(): H1ClientConnection | null {
    while (this.#idle.length > 0) {
      const c = this.#idle.pop()!;
      if (!c.dead && !c.socket.destroyed && c.socket.writable) return c;
    }
    return null;
  }

  async acquire(): Promise<H1ClientConnection> {
    const limiter = this.o.limiter;
    for (;;) {
      const idle = this.#takeIdle();
      if (idle !== null) return idle;
      if (limiter === undefined || limiter.tryOpen()) break;
      await limiter.wait(this.o.pendingTimeoutMs ?? 5000);
    }
    const socket =
      limiter === undefined ? await this.o.dial() : await limiter.dialOpened(this.o.dial);
    this.open++;
    socket.once('close', () => this.open--);
    return new H1ClientConnection(socket, this.o.target, this.o.limits, (c) => this.#release(c));
  }

  #release(c: H1ClientConnection): void {
    if (this.closed || this.#idle.length >= (this.o.maxIdle ?? 256)) {
      c.socket.destroy();
      return;
    }
    this.#idle.push(c);
    if (this.#sweeper === null) {
      this.#sweeper = setInterval(() => this.#sweep(), Math.max(100, this.o.idleTimeoutMs / 2));
      this.#sweeper.unref();
    }
    this.o.limiter?.release(false);
  }

  /**
   * Sends `req` on a pooled connection. A reused connection that the server closed before
   * answering is replaced by a fresh one once — for idempotent methods only, with a replayable
   * body: the peer may have read the request before it went away (an app or proxy that crashed
   * mid-request looks exactly like a stale keep-alive connection), so a POST is never re-sent.
   */
  request(req: ProxyRequest, timeoutMs: number): Promise<ProxyResponse> {
    // the common case, a warm idle connection, without the asynchronous acquire
    const idle = this.#takeIdle();
    return idle !== null
      ? this.#send(idle, req, timeoutMs)
      : this.acquire().then((c) => this.#send(c, req, timeoutMs));
  }

  #send(c: H1ClientConnection, req: ProxyRequest, timeoutMs: number): Promise<ProxyResponse> {
    if (req.upgrade !== null) c.dead = true; // an upgraded connection never returns
    return c.request(req, timeoutMs).catch((err: unknown) => {
      const e = err as RemoraError;
      const d = e.details as { reused?: boolean; responseStarted?: boolean };
      const replayable = req.body === null || Buffer.isBuffer(req.body);
      if (
        e.code === 'REMORA_E_PROXY_UPSTREAM_RESET' &&
        d.reused &&
        !d.responseStarted &&
        replayable &&
        isIdempotent(req.method)
      ) {
        return this.acquireFresh().then((fresh) => fresh.request(req, timeoutMs));
      }
      throw e;
    });
  }

  async acquireFresh(): Promise<H1ClientConnection> {
    for (const c of this.#idle) c.socket.destroy();
    this.#idle = [];
    return this.acquire();
  }

  /** Closes idle connections; busy ones finish and then close. */
  close(): void {
    this.closed = true;
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    this.#sweeper = null;
    for (const c of this.#idle) c.socket.destroy();
    this.#idle = [];
  }
}
