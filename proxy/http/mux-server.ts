// The server half of `remora-mux/1`, the protocol two Remora sidecars speak over one mTLS
// connection when both offer it in ALPN (docs/proxy.md, "Multiplexing between sidecars").
// Both directions carry ordinary, strictly parsed HTTP/1.1 messages; each request names its
// stream in a `remora-stream` header and its response carries the same header. Requests are
// handled concurrently and answered in the order they finish, so a slow request does not hold
// up the ones behind it; answers that finish in the same event-loop turn leave in one write.
// Messages are never interleaved: a streaming response body holds the others back only while
// its bytes flow.
import type { Socket } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import { encodeChunk, encodeLastChunk, type BodyStream } from './body.ts';
import {
  endToEndHeaders,
  findHeadEnd,
  parseRequestHead,
  responseHasNoBody,
  type HeadLimits,
} from './h1-parse.ts';
import { errorResponse, reasonPhrase } from '../stages/responder.ts';
import type { Handler, ProxyRequest, ProxyResponse, RequestContext } from '../stages/types.ts';

export const MUX_ALPN = 'remora-mux/1';
export const STREAM_HEADER = 'remora-stream';
/** Set on the answer to a request the server did not process (draining): safe to send again. */
export const REFUSED_HEADER = 'remora-refused';
/** Largest request body sent on a multiplexed connection; larger ones use their own connection. */
export const MUX_MAX_BODY_BYTES = 1024 * 1024;
/** Request body bytes one connection may hold in requests being handled before reading pauses. */
const MAX_HELD_BODY_BYTES = 8 * 1024 * 1024;
/** Answer bytes waiting for a peer that does not read, before reading its requests pauses. */
const MAX_UNSENT_BYTES = 1024 * 1024;

export interface MuxServerOptions {
  handler: Handler;
  limits: HeadLimits;
  /** Largest request body accepted (the client sends only buffered bodies on this protocol). */
  maxBodyBytes: number;
  /** Requests handled at once on one connection; reading pauses beyond it. */
  maxConcurrent: number;
  /** A connection with no request in progress is closed after this time. */
  idleTimeoutMs: number;
  newContext(): RequestContext;
  onRefused(status: number, reason: string): void;
}

export interface MuxServerConnection {
  drain(): void;
  readonly idle: boolean;
}

interface Pending {
  id: string;
  req: ProxyRequest;
  /** Body bytes this request holds until it is answered. */
  held: number;
}

/**
 * True for the protocol's own fields (`remora-stream`, `remora-refused`): a value an app or a
 * caller sent under those names is never forwarded, or it could confuse the peer's matching.
 */
export function isMuxField(name: string): boolean {
  const n = name.length;
  if (n !== 13 && n !== 14) return false;
  const l = name.toLowerCase();
  return l === STREAM_HEADER || l === REFUSED_HEADER;
}

/** Removes `remora-stream` from a header list; returns its value ('' when absent or repeated). */
export function takeStreamId(headers: string[]): string {
  let id: string | null = null;
  let count = 0;
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!;
    if (n.length === STREAM_HEADER.length && n.toLowerCase() === STREAM_HEADER) {
      count++;
      id = headers[i + 1]!;
      headers.splice(i, 2);
      i -= 2;
    }
  }
  return count === 1 && id !== null && /^[0-9]{1,15}$/.test(id) ? id : '';
}

export function serveMux(socket: Socket, o: MuxServerOptions): MuxServerConnection {
  let buf: Buffer | null = null;
  let closed = false;
  let draining = false;
  const active = new Map<string, Pending>();
  /** Finished answers waiting for the socket (a streaming body is being written). */
  const queue: Array<{ p: Pending; res: ProxyResponse }> = [];
  let streaming = false;
  /** The body being written, cancelled if the connection goes away meanwhile. */
  let streamingBody: BodyStream | null = null;
  let held = 0;
  let corked = false;
  let lastActive = performance.now();
  let timer = setTimeout(onIdle, o.idleTimeoutMs);
  timer.unref();

  socket.setNoDelay(true);
  socket.on('data', onData);
  socket.on('end', () => {
    if (active.size === 0 && queue.length === 0 && !streaming) close();
    else draining = true; // answer what is in progress (the client half-closed), then end
  });
  socket.on('error', () => close());
  socket.on('close', () => close());
  socket.on('drain', () => maybeResume());

  /**
   * Reading pauses while too many requests or request body bytes are held, or while the peer
   * does not read its answers ('drain' fires once the unsent bytes are written).
   */
  function mustWait(): boolean {
    return (
      active.size >= o.maxConcurrent ||
      held > MAX_HELD_BODY_BYTES ||
      socket.writableLength > MAX_UNSENT_BYTES
    );
  }

  function maybeResume(): void {
    if (closed || !socket.isPaused() || mustWait()) return;
    socket.resume();
    parse(); // heads that arrived before the pause
  }

  function onIdle(): void {
    if (closed) return;
    const left = o.idleTimeoutMs - (performance.now() - lastActive);
    if (active.size > 0 || queue.length > 0 || streaming || left > 1) {
      timer = setTimeout(onIdle, active.size > 0 ? o.idleTimeoutMs : Math.max(left, 1));
      timer.unref();
      return;
    }
    socket.end();
    close();
  }

  function close(): void {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    for (const p of active.values()) p.req.ctx.aborted = true;
    active.clear();
    for (const q of queue) cancelBody(q.res);
    queue.length = 0;
    streamingBody?.cancel(new RemoraError('REMORA_E_PROXY_UPSTREAM_RESET', 'the caller went away'));
    streamingBody = null;
    if (!socket.destroyed) socket.destroy();
  }

  /** A protocol violation by the peer: nothing on this connection can be trusted any more. */
  function fatal(status: number, reason: string): void {
    o.onRefused(status, reason);
    close();
  }

  // a body still arriving is collected as a list and joined once (no copy per chunk)
  let pending: Buffer[] = [];
  let pendingSize = 0;
  let need = 0;

  function onData(chunk: Buffer): void {
    if (need > 0) {
      pending.push(chunk);
      pendingSize += chunk.length;
      if (pendingSize < need) return;
      buf = Buffer.concat(pending, pendingSize);
      pending = [];
      pendingSize = 0;
      need = 0;
    } else buf = buf === null || buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    parse();
  }

  function parse(): void {
    while (!closed && buf !== null && buf.length > 0) {
      if (mustWait()) {
        socket.pause();
        return;
      }
      const end = findHeadEnd(buf);
      if (end === -1) {
        if (buf.length > o.limits.maxHeadBytes) fatal(431, 'head_too_large');
        return;
      }
      const head = parseRequestHead(buf.subarray(0, end), o.limits);
      if ('status' in head) {
        fatal(head.status, head.reason);
        return;
      }
      // only buffered, Content-Length bodies travel on this protocol
      if (head.chunked || head.upgrade !== null || head.expectContinue) {
        fatal(400, 'mux_unsupported_framing');
        return;
      }
      const len = Math.max(head.contentLength, 0);
      if (len > o.maxBodyBytes) {
        fatal(413, 'mux_body_too_large');
        return;
      }
      if (buf.length < end + len) {
        // the rest of the body is on its way
        need = end + len;
        pending = [buf];
        pendingSize = buf.length;
        buf = null;
        return;
      }
      const headers = endToEndHeaders(head.headers, head.connectionTokens);
      const id = takeStreamId(headers);
      if (id === '' || active.has(id)) {
        fatal(400, 'mux_bad_stream');
        return;
      }
      const body = len > 0 ? buf.subarray(end, end + len) : null;
      buf = buf.length > end + len ? buf.subarray(end + len) : null;
      const req: ProxyRequest = {
        method: head.method,
        target: head.target,
        host: head.host,
        versionMinor: 1,
        headers,
        body,
        bodyLength: len,
        upgrade: null,
        ctx: o.newContext(),
      };
      const p: Pending = { id, req, held: len };
      lastActive = performance.now();
      if (draining) {
        answer(p, REFUSED);
        continue;
      }
      active.set(id, p);
      held += len;
      o.handler(req).then(
        (res) => finish(p, res),
        (err: unknown) =>
          finish(
            p,
            errorResponse(
              err instanceof RemoraError
                ? err
                : new RemoraError(
                    'REMORA_E_INTERNAL',
                    err instanceof Error ? err.message : String(err),
                  ),
            ),
          ),
      );
    }
  }

  function finish(p: Pending, res: ProxyResponse): void {
    if (closed || active.get(p.id) !== p) {
      cancelBody(res);
      return;
    }
    active.delete(p.id);
    held -= p.held;
    answer(p, res);
    maybeResume();
  }

  function answer(p: Pending, res: ProxyResponse): void {
    if (streaming) {
      queue.push({ p, res });
      return;
    }
    write(p, res);
    afterWrite();
  }

  /** Writes one answer; a streaming body makes later answers wait in `queue`. */
  function write(p: Pending, res: ProxyResponse): void {
    lastActive = performance.now();
    if (!corked) {
      // answers finished in this event-loop turn leave in one write
      corked = true;
      socket.cork();
      setImmediate(() => {
        corked = false;
        socket.uncork();
      });
    }
    const body = res.body;
    const noBody = responseHasNoBody(p.req.method, res.status);
    if (body === null || Buffer.isBuffer(body) || noBody) {
      if (body !== null && !Buffer.isBuffer(body)) cancelBody(res);
      const len = noBody
        ? p.req.method === 'HEAD'
          ? res.bodyLength
          : -2
        : Buffer.isBuffer(body)
          ? body.length
          : 0;
      socket.write(Buffer.from(headString(p.id, res, len, false), 'latin1'));
      if (!noBody && Buffer.isBuffer(body) && body.length > 0) socket.write(body);
      return;
    }
    const known = res.bodyLength >= 0;
    socket.write(Buffer.from(headString(p.id, res, known ? res.bodyLength : -1, !known), 'latin1'));
    streaming = true;
    streamingBody = body;
    const onDrain = (): void => body.resume();
    socket.on('drain', onDrain);
    body.attach({
      data(c) {
        if (closed) return true;
        if (known) return socket.write(c);
        for (const part of encodeChunk(c)) socket.write(part);
        return socket.writableLength < 64 * 1024;
      },
      end(trailers) {
        socket.off('drain', onDrain);
        if (!known) socket.write(encodeLastChunk(trailers));
        streaming = false;
        streamingBody = null;
        flushQueue();
      },
      error() {
        socket.off('drain', onDrain);
        // the body broke off mid-message: the byte stream cannot be resynchronised
        close();
      },
    });
  }

  function flushQueue(): void {
    while (!streaming && queue.length > 0 && !closed) {
      const q = queue.shift()!;
      write(q.p, q.res);
    }
    afterWrite();
  }

  function afterWrite(): void {
    if (draining && !streaming && queue.length === 0 && active.size === 0 && !closed) {
      socket.end();
      closed = true;
      clearTimeout(timer);
    }
  }

  return {
    drain() {
      if (closed || draining) return;
      draining = true;
      afterWrite();
    },
    get idle() {
      return active.size === 0 && queue.length === 0 && !streaming;
    },
  };
}

/** The answer to a request that arrives while the connection drains: not processed, send again. */
const REFUSED: ProxyResponse = errorResponse(
  new RemoraError(
    'REMORA_E_PROXY_OVERLOADED',
    'this proxy is draining and did not process the request; send it again elsewhere',
  ),
  503,
);

function cancelBody(res: ProxyResponse): void {
  if (res.body !== null && !Buffer.isBuffer(res.body))
    res.body.cancel(new RemoraError('REMORA_E_PROXY_UPSTREAM_RESET', 'the caller went away'));
}

/** length: ≥0 Content-Length, -1 chunked, -2 none (1xx/204/304). */
function headString(id: string, res: ProxyResponse, length: number, chunked: boolean): string {
  let s = `HTTP/1.1 ${res.status} ${res.reason || reasonPhrase(res.status)}\r\n${STREAM_HEADER}: ${id}\r\n`;
  const h = res.headers;
  for (let i = 0; i < h.length; i += 2) if (!isMuxField(h[i]!)) s += `${h[i]}: ${h[i + 1]}\r\n`;
  if (res === REFUSED) s += `${REFUSED_HEADER}: 1\r\n`;
  if (length >= 0) s += `content-length: ${length}\r\n`;
  if (chunked) s += 'transfer-encoding: chunked\r\n';
  return `${s}\r\n`;
}
