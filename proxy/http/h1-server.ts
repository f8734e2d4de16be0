// The server half of HTTP/1.1 on a raw net/tls socket, without node:http objects: strict head
// parsing (h1-parse.ts), streaming bodies with backpressure, keep-alive, pipelined requests
// answered in order, Expect: 100-continue, Upgrade (WebSocket) splicing, header and idle
// timeouts. Each request goes to `handler`; its response is framed and written here.
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import { RemoraError } from '../../lib/errors/index.ts';
import { BodyDecoder, BodyStream, encodeChunk, encodeLastChunk, type BodyMode } from './body.ts';
import {
  endToEndHeaders,
  findHeadEnd,
  parseRequestHead,
  responseHasNoBody,
  type HeadLimits,
  type ParseError,
  type RequestHead,
} from './h1-parse.ts';
import { errorResponse, reasonPhrase } from '../stages/responder.ts';
import type { Handler, ProxyRequest, ProxyResponse, RequestContext } from '../stages/types.ts';

export interface H1ServerOptions {
  handler: Handler;
  limits: HeadLimits;
  /** A started request head must be complete within this time (slow-client defence). */
  headerTimeoutMs: number;
  /** A keep-alive connection with no request in progress is closed after this time. */
  idleTimeoutMs: number;
  newContext(): RequestContext;
  /** A request refused while parsing (status, reason for counting). */
  onRefused(status: number, reason: string): void;
  /** Called when a response has been written (status, the request, its context). */
  onResponse?(req: ProxyRequest, res: ProxyResponse): void;
}

export interface H1ServerConnection {
  /** Stop after the current exchange; close now when idle. */
  drain(): void;
  readonly idle: boolean;
}

const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
const SMALL_BODY = 16 * 1024;
/** How long a draining proxy keeps an idle keep-alive connection for a last request. */
export const DRAIN_IDLE_LINGER_MS = 500;

const ST_HEAD = 0;
const ST_BODY = 1; // reading a request body while the handler runs
const ST_WAIT = 2; // request read completely; waiting for the response to finish
const ST_UPGRADED = 3;
const ST_CLOSED = 4;

export function serveH1(socket: Socket, o: H1ServerOptions): H1ServerConnection {
  let state = ST_HEAD;
  let buf: Buffer | null = null; // unparsed bytes (head in progress, or pipelined next requests)
  let decoder: BodyDecoder | null = null;
  let reqBody: BodyStream | null = null;
  let responding = false;
  let draining = false;
  let closeAfter = false;
  let current: RequestHead | null = null;
  let reqCtx: RequestContext | null = null;
  let headerTimer: NodeJS.Timeout | null = null;
  let bodyTimer: NodeJS.Timeout | null = null;
  let bodyPaused = false; // the request body's consumer holds the client back

  // One idle timer per connection, not re-armed per request: a request only records when the
  // connection went idle, and the timer, when it fires, closes the connection or waits the rest.
  let idleSince = performance.now();
  let timer = setTimeout(onIdle, o.idleTimeoutMs);
  timer.unref();

  socket.setNoDelay(true);
  socket.on('data', onData);
  socket.on('end', () => {
    if (state === ST_BODY && reqBody !== null && decoder !== null) {
      const d = decoder;
      if (!d.finish({ data: () => {}, end: (t) => reqBody!.end(t) }))
        reqBody.fail(
          new RemoraError(
            'REMORA_E_PROXY_BAD_REQUEST',
            'client closed the connection in the middle of the request body',
          ),
        );
    }
    if (!responding) close();
    else closeAfter = true;
  });
  socket.on('error', () => close());
  socket.on('close', () => close());

  function onIdle(): void {
    if (state === ST_CLOSED || state === ST_UPGRADED) return;
    if (state !== ST_HEAD || responding || (buf !== null && buf.length > 0)) {
      timer.refresh(); // busy: look again a full period later
      return;
    }
    const left = o.idleTimeoutMs - (performance.now() - idleSince);
    if (left > 1) {
      timer = setTimeout(onIdle, left);
      timer.unref();
      return;
    }
    socket.end();
    close();
  }

  function onHeaderTimeout(): void {
    headerTimer = null;
    if (state !== ST_HEAD || responding) return;
    refuse({
      status: 408,
      code: 'REMORA_E_PROXY_HEADER_TIMEOUT',
      reason: 'header_timeout',
      message: `the request head was not complete within ${o.headerTimeoutMs} ms`,
    });
  }

  /**
   * Slow-body defence: while a request body is being read and we are not holding the socket
   * back ourselves (backpressure), each gap between body bytes may last `idleTimeoutMs`.
   */
  function armBodyTimer(): void {
    stopBodyTimer();
    if (state !== ST_BODY || bodyPaused) return;
    bodyTimer = setTimeout(onBodyTimeout, o.idleTimeoutMs);
    bodyTimer.unref();
  }

  function stopBodyTimer(): void {
    if (bodyTimer !== null) {
      clearTimeout(bodyTimer);
      bodyTimer = null;
    }
  }

  function onBodyTimeout(): void {
    bodyTimer = null;
    if (state !== ST_BODY || reqBody === null) return;
    o.onRefused(408, 'body_timeout');
    reqBody.fail(
      new RemoraError(
        'REMORA_E_PROXY_BODY_TIMEOUT',
        `the client sent no request body bytes for ${o.idleTimeoutMs} ms`,
        { reason: 'body_timeout' },
      ),
    );
    close();
  }

  function stopHeaderTimer(): void {
    if (headerTimer !== null) {
      clearTimeout(headerTimer);
      headerTimer = null;
    }
  }

  function close(): void {
    if (state === ST_CLOSED) return;
    const wasBody = state === ST_BODY;
    state = ST_CLOSED;
    clearTimeout(timer);
    stopHeaderTimer();
    stopBodyTimer();
    if (reqCtx) reqCtx.aborted = true;
    if (wasBody && reqBody && !reqBody.ended)
      reqBody.fail(
        new RemoraError('REMORA_E_PROXY_BAD_REQUEST', 'client went away during the request body'),
      );
    if (!socket.destroyed) socket.destroy();
  }

  function refuse(e: ParseError): void {
    o.onRefused(e.status, e.reason);
    const res = errorResponse(new RemoraError(e.code, e.message, { reason: e.reason }), e.status);
    state = ST_WAIT;
    socket.pause();
    writeHeadAndBuffer(res, false, current?.method ?? 'GET');
    socket.end();
    state = ST_CLOSED;
    clearTimeout(timer);
    stopHeaderTimer();
  }

  function onData(chunk: Buffer): void {
    if (state === ST_BODY) {
      feedBody(chunk, 0);
      return;
    }
    if (state === ST_HEAD) {
      if (buf === null || buf.length === 0) {
        buf = chunk;
      } else {
        buf = Buffer.concat([buf, chunk]);
      }
      processHeads();
      return;
    }
    if (state === ST_WAIT) {
      // pipelined bytes while a response is pending: hold them, stop reading
      buf = buf === null || buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (buf.length > o.limits.maxHeadBytes * 4) socket.pause();
    }
  }

  function processHeads(): void {
    while (state === ST_HEAD && buf !== null && buf.length > 0 && !responding) {
      const end = findHeadEnd(buf);
      if (end === -1) {
        if (headerTimer === null) {
          headerTimer = setTimeout(onHeaderTimeout, o.headerTimeoutMs);
          headerTimer.unref();
        }
        if (buf.length > o.limits.maxHeadBytes)
          refuse({
            status: 431,
            code: 'REMORA_E_PROXY_HEADERS_TOO_LARGE',
            reason: 'head_too_large',
            message: `request head exceeds ${o.limits.maxHeadBytes} bytes`,
          });
        return;
      }
      stopHeaderTimer();
      const parsed = parseRequestHead(buf.subarray(0, end), o.limits);
      if ('status' in parsed) {
        refuse(parsed);
        return;
      }
      startRequest(parsed, end);
    }
  }

  function startRequest(head: RequestHead, headEnd: number): void {
    current = head;
    const rest = buf!;
    buf = null;
    let mode: BodyMode;
    if (head.chunked) mode = 'chunked';
    else if (head.contentLength > 0) mode = 'length';
    else mode = 'none';
    if (head.upgrade !== null && mode !== 'none') {
      refuse({
        status: 400,
        code: 'REMORA_E_PROXY_BAD_REQUEST',
        reason: 'upgrade_with_body',
        message: 'an Upgrade request must not carry a body',
      });
      return;
    }
    let body: ProxyRequest['body'] = null;
    let remaining = rest.subarray(headEnd);
    if (mode === 'length' && remaining.length >= head.contentLength) {
      body = remaining.subarray(0, head.contentLength);
      remaining = remaining.subarray(head.contentLength);
      mode = 'none';
    }
    const ctx = o.newContext();
    ctx.downstream = socket;
    reqCtx = ctx;
    const req: ProxyRequest = {
      method: head.method,
      target: head.target,
      host: head.host,
      versionMinor: head.versionMinor,
      headers: endToEndHeaders(head.headers, head.connectionTokens),
      body,
      bodyLength: head.chunked ? -1 : head.contentLength,
      upgrade: head.upgrade,
      ctx,
    };
    if (head.upgrade !== null) req.headers.push('connection', 'upgrade', 'upgrade', head.upgrade);
    if (!head.keepAlive) closeAfter = true;
    responding = true;
    if (mode !== 'none') {
      decoder = new BodyDecoder(mode, head.contentLength, 'request', o.limits);
      const stream = new BodyStream();
      reqBody = stream;
      req.body = stream;
      stream.onPause = () => {
        bodyPaused = true; // we hold the client back: its silence is ours
        stopBodyTimer();
        socket.pause();
      };
      stream.onResume = () => {
        bodyPaused = false;
        socket.resume();
        armBodyTimer();
      };
      stream.onCancel = () => {
        // the handler gave up on the body: we cannot find the next request boundary reliably
        closeAfter = true;
      };
      if (head.expectContinue) stream.onAttach = () => socket.write(CONTINUE);
      state = ST_BODY;
      if (remaining.length > 0) feedBody(remaining, 0);
      else armBodyTimer();
    } else {
      state = ST_WAIT;
      if (remaining.length > 0) buf = remaining;
    }
    o.handler(req).then(
      (res) => respond(req, res),
      (err: unknown) => respond(req, errorResponse(toCoded(err))),
    );
  }

  function feedBody(chunk: Buffer, start: number): void {
    const d = decoder!;
    const stream = reqBody!;
    const n = d.feed(chunk, start, {
      data: (c) => stream.push(c),
      end: (t) => stream.end(t),
    });
    if (typeof n !== 'number') {
      o.onRefused(n.status, n.reason);
      stream.fail(new RemoraError(n.code, n.message, { reason: n.reason }));
      closeAfter = true;
      if (!responding) refuse(n);
      return;
    }
    if (!d.done) {
      armBodyTimer();
      return;
    }
    stopBodyTimer();
    decoder = null;
    state = state === ST_CLOSED ? ST_CLOSED : ST_WAIT;
    const rest = chunk.subarray(start + n);
    if (rest.length > 0) buf = rest;
  }

  function respond(req: ProxyRequest, res: ProxyResponse): void {
    o.onResponse?.(req, res);
    if (state === ST_CLOSED) {
      if (res.body !== null && !Buffer.isBuffer(res.body))
        res.body.cancel(new RemoraError('REMORA_E_PROXY_UPSTREAM_RESET', 'client went away'));
      res.upgraded?.socket.destroy();
      return;
    }
    if (res.upgraded && res.status === 101) {
      upgrade(res);
      return;
    }
    // request body not fully read (e.g. refused before upload): the connection cannot continue
    if (state === ST_BODY) closeAfter = true;
    const keep = !closeAfter && !draining && req.versionMinor === 1;
    const body = res.body;
    if (body === null || Buffer.isBuffer(body) || responseHasNoBody(req.method, res.status)) {
      if (body !== null && !Buffer.isBuffer(body))
        body.cancel(new RemoraError('REMORA_E_PROXY_UPSTREAM_RESET', 'no body allowed'));
      writeHeadAndBuffer(res, keep, req.method);
      finishExchange(keep);
      return;
    }
    // streaming body
    const known = res.bodyLength >= 0;
    const chunked = !known && req.versionMinor === 1;
    const keepStream = keep && (known || chunked);
    socket.write(
      Buffer.from(headString(res, keepStream, known ? res.bodyLength : -1, chunked), 'latin1'),
    );
    const onDrain = (): void => body.resume();
    socket.on('drain', onDrain);
    body.attach({
      data(c) {
        if (state === ST_CLOSED) return true;
        let ok: boolean;
        if (chunked) {
          const [a, b, cr] = encodeChunk(c);
          socket.cork();
          socket.write(a!);
          socket.write(b!);
          ok = socket.write(cr!);
          process.nextTick(() => socket.uncork());
        } else ok = socket.write(c);
        return ok;
      },
      end(trailers) {
        socket.off('drain', onDrain);
        if (chunked) socket.write(encodeLastChunk(trailers));
        finishExchange(keepStream);
      },
      error() {
        socket.off('drain', onDrain);
        close();
      },
    });
  }

  function upgrade(res: ProxyResponse): void {
    const up = res.upgraded!;
    state = ST_UPGRADED;
    clearTimeout(timer);
    stopHeaderTimer();
    socket.write(Buffer.from(headString(res, true, -2, false), 'latin1'));
    if (up.head.length > 0) socket.write(up.head);
    if (buf !== null && buf.length > 0) up.socket.write(buf);
    buf = null;
    socket.off('data', onData);
    spliceSockets(socket, up.socket);
  }

  function finishExchange(keep: boolean): void {
    responding = false;
    current = null;
    reqCtx = null;
    reqBody = null;
    if (!keep || closeAfter || draining) {
      socket.end();
      state = ST_CLOSED;
      clearTimeout(timer);
      return;
    }
    if (state === ST_CLOSED) return;
    if (state === ST_BODY) return; // cannot happen with keep; guarded above
    state = ST_HEAD;
    idleSince = performance.now();
    if (socket.isPaused()) socket.resume();
    if (buf !== null && buf.length > 0) processHeads();
  }

  function writeHeadAndBuffer(res: ProxyResponse, keep: boolean, method: string): void {
    const body = Buffer.isBuffer(res.body) ? res.body : null;
    const noBody = responseHasNoBody(method, res.status);
    const len = noBody ? (method === 'HEAD' ? res.bodyLength : -2) : (body?.length ?? 0);
    const head = headString(res, keep, len, false);
    if (body !== null && !noBody && body.length > 0) {
      if (body.length <= SMALL_BODY) {
        const out = Buffer.allocUnsafe(head.length + body.length);
        out.write(head, 0, 'latin1');
        body.copy(out, head.length);
        socket.write(out);
      } else {
        socket.cork();
        socket.write(Buffer.from(head, 'latin1'));
        socket.write(body);
        process.nextTick(() => socket.uncork());
      }
    } else {
      socket.write(Buffer.from(head, 'latin1'));
    }
  }

  return {
    drain() {
      if (draining) return;
      draining = true;
      // An idle keep-alive connection is closed a moment later, not at once: a client sending
      // on it meanwhile is answered (with `Connection: close`) instead of finding it closed
      // under its request, which it could not tell from a failure.
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (state === ST_HEAD && !responding && (buf === null || buf.length === 0)) {
          socket.end();
          state = ST_CLOSED;
        }
      }, DRAIN_IDLE_LINGER_MS);
    },
    get idle() {
      return state === ST_HEAD && !responding && (buf === null || buf.length === 0);
    },
  };
}

/**
 * The response head. `length`: ≥0 writes Content-Length, -1 none (chunked or close-delimited),
 * -2 none at all (1xx/204/304, upgrade).
 */
function headString(res: ProxyResponse, keep: boolean, length: number, chunked: boolean): string {
  let s = `HTTP/1.1 ${res.status} ${res.reason || reasonPhrase(res.status)}\r\n`;
  const h = res.headers;
  for (let i = 0; i < h.length; i += 2) s += `${h[i]}: ${h[i + 1]}\r\n`;
  if (res.status === 101) return `${s}\r\n`;
  if (length >= 0) s += `content-length: ${length}\r\n`;
  if (chunked) s += 'transfer-encoding: chunked\r\n';
  if (!keep) s += 'connection: close\r\n';
  return `${s}\r\n`;
}

function toCoded(err: unknown): RemoraError {
  if (err instanceof RemoraError) return err;
  return new RemoraError('REMORA_E_INTERNAL', err instanceof Error ? err.message : String(err));
}

/** Copies bytes both ways between two sockets with backpressure until either side ends. */
export function spliceSockets(a: Duplex, b: Duplex): void {
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    a.destroy();
    b.destroy();
  };
  pump(a, b);
  pump(b, a);
  a.on('error', finish);
  b.on('error', finish);
  a.on('close', finish);
  b.on('close', finish);
  // half-close: when one side ends, end the other's writable side
  a.on('end', () => b.end());
  b.on('end', () => a.end());
}

function pump(from: Duplex, to: Duplex): void {
  from.on('data', (c: Buffer) => {
    if (!to.write(c)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  });
  if (from.isPaused()) from.resume();
}
