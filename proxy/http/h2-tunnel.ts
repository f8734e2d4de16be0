// `remora-h2/1`: the HTTP/2 and gRPC streams of one upstream share mTLS connections between two
// Remora sidecars, framed by Remora instead of node:http2 (docs/proxy.md, "HTTP/2 between
// sidecars"). The app still speaks HTTP/2 to its sidecar, and the destination's sidecar still
// speaks h2c to its app; node:http2 runs on those two hops only.
//
// Why: node:http2 costs each sidecar about as much per stream as the rest of its work together
// (profiles in docs/proxy.md, tenth and twelfth rounds). Here a stream is a plain Duplex, its
// head a JSON object, and the frames of every stream ready in one event-loop turn leave in one
// TLS write (the framing of `remora-tcp/1`, proxy/tcp/framed.ts).
//
// Frames: type (1 byte) · stream (4) · payload length (4) · payload.
//   OPEN      client → server  u8 flags (1: END_STREAM, no body follows) · request head (JSON)
//   HEADERS   server → client  u8 flags (1: END_STREAM, a trailers-only answer) · answer head
//   DATA      both             body bytes; never more than the other side granted
//   FIN       both             the sender's body is over (after its TRAILERS, if any)
//   RST       both             u32 HTTP/2 error code; the stream is over
//   CREDIT    both             u32 more body bytes the receiver of DATA now accepts
//   GOAWAY    server → client  u32 last stream it takes: open no more here (drain); those above
//                              it were not processed (the client opens them again elsewhere)
//   TRAILERS  both             trailers (JSON), then FIN
// Each side may send STREAM_WINDOW bytes of body on a stream before the other credits them, from
// the start: a request body leaves with its OPEN, without a round trip.
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { CREDIT, DATA, FIN, GOAWAY, OPEN, RST, StreamConnection, u32 } from '../tcp/framed.ts';
import { SharedPool, type SharedPoolOptions } from '../outbound/shared-pool.ts';

export const H2_TUNNEL_ALPN = 'remora-h2/1';
/** What a side may send on one stream before the other confirms it consumed it. */
export const STREAM_WINDOW = 256 * 1024;
/** The largest head or trailers a frame carries (node:http2's default header list size). */
export const MAX_HEAD_BYTES = 64 * 1024;

export { CREDIT, DATA, FIN, GOAWAY, OPEN, RST };
export const HEADERS = 2;
export const TRAILERS = 8;

const END_STREAM = 1;
/** HTTP/2 error codes a stream is reset with (RFC 9113 §7). */
export const NO_ERROR = 0;
export const INTERNAL_ERROR = 2;
export const REFUSED_STREAM = 7;
export const CANCEL = 8;
/** node:http2's flag for a head that ended the stream (what `endsStream` reads). */
const NGHTTP2_FLAG_END_STREAM = 1;

const PSEUDO = new Set([':method', ':path', ':scheme', ':authority', ':status', ':protocol']);
const NAME = /^[a-z0-9!#$%&'*+\-.^_`|~]+$/;
const BAD_VALUE = /[\r\n\0]/;
/** Fields HTTP/2 forbids, which node:http2 would refuse to send. */
const CONNECTION_FIELDS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

function encodeHead(flags: number, headers: OutgoingHttpHeaders): Buffer {
  const json = Buffer.from(JSON.stringify(headers), 'utf8');
  const out = Buffer.allocUnsafe(1 + json.length);
  out[0] = flags;
  json.copy(out, 1);
  return out;
}

/** A field value node:http2 would send on: a string without CR, LF or NUL. */
const goodValue = (s: unknown): boolean => typeof s === 'string' && !BAD_VALUE.test(s);

/**
 * A head or trailers from the peer, checked as node:http2 would before sending it on: lower-case
 * names (known pseudo-fields only), string values without CR, LF or NUL (`:status` a number).
 * Null when it is not.
 */
export function decodeHead(b: Buffer): IncomingHttpHeaders | null {
  let v: unknown;
  try {
    v = JSON.parse(b.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return null;
  const out: IncomingHttpHeaders = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (k.startsWith(':') ? !PSEUDO.has(k) : !NAME.test(k) || CONNECTION_FIELDS.has(k)) return null;
    if (k === ':status') {
      // node:http2 gives the status as a number
      if (!Number.isInteger(x) || (x as number) < 100 || (x as number) > 999) return null;
    } else if (Array.isArray(x) ? !x.every(goodValue) : !goodValue(x)) return null;
    (out as Record<string, unknown>)[k] = x;
  }
  return out;
}

function noop(): void {}

function streamError(code: number): Error & { code: string } {
  return Object.assign(new Error(`Stream closed with error code ${code}`), {
    code: 'ERR_HTTP2_STREAM_ERROR',
  });
}

/**
 * One HTTP/2 stream carried by a tunnel: a Duplex whose writable side is this side's body and
 * readable side the peer's, with the parts of node:http2's stream API the forwarding code uses
 * (`respond`, `sendTrailers`, `close`, `rstCode`; 'response', 'trailers', 'wantTrailers').
 */
export class H2TunnelStream extends Duplex {
  readonly id: number;
  readonly session: { readonly socket: Socket };
  rstCode: number | undefined;
  headersSent = false;
  sentHeaders: OutgoingHttpHeaders = {};
  readonly #conn: H2Tunnel;
  /** Body bytes this side may still send, and the write waiting for more. */
  #window = STREAM_WINDOW;
  #held: { chunk: Buffer; cb: (err?: Error | null) => void } | null = null;
  /** Body bytes the peer may still send; what was pushed, and credited back. */
  allowance = STREAM_WINDOW;
  #pushed = 0;
  #credited = 0;
  #waitForTrailers = false;
  #final: ((err?: Error | null) => void) | null = null;
  sentFin = false;
  gotFin = false;
  #reset = false;

  constructor(conn: H2Tunnel, id: number) {
    super({ allowHalfOpen: true });
    this.#conn = conn;
    this.id = id;
    this.session = { socket: conn.socket };
    // as with node:http2's streams, a reset is also said by 'close' and `rstCode`
    this.on('error', noop);
  }

  // --- this side's body -------------------------------------------------------------------

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.#reset) return cb();
    this.#send(chunk, cb);
  }

  #send(chunk: Buffer, cb: (err?: Error | null) => void): void {
    if (chunk.length <= this.#window) {
      this.#window -= chunk.length;
      this.#conn.send(DATA, this.id, chunk);
      cb();
      return;
    }
    if (this.#window > 0) {
      this.#conn.send(DATA, this.id, chunk.subarray(0, this.#window));
      chunk = chunk.subarray(this.#window);
      this.#window = 0;
    }
    this.#held = { chunk, cb };
  }

  /** The peer consumed `n` more bytes: what waited goes out. */
  credit(n: number): void {
    this.#window += n;
    const held = this.#held;
    if (held === null) return;
    this.#held = null;
    this.#send(held.chunk, held.cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.sentFin || this.#reset) return cb();
    if (this.#waitForTrailers) {
      this.#final = cb;
      this.emit('wantTrailers');
      return;
    }
    this.#fin();
    cb();
  }

  #fin(): void {
    this.sentFin = true;
    this.#conn.send(FIN, this.id);
  }

  /** Sends the trailers (none: the body just ends), then FIN. */
  sendTrailers(trailers: OutgoingHttpHeaders): void {
    if (this.sentFin || this.#reset) return;
    if (Object.keys(trailers).length > 0)
      this.#conn.send(TRAILERS, this.id, encodeHead(0, trailers).subarray(1));
    this.#fin();
    const cb = this.#final;
    this.#final = null;
    cb?.();
  }

  /** Server side: the answer's head; with `endStream`, the whole answer. */
  respond(
    headers: OutgoingHttpHeaders,
    o: { endStream?: boolean; waitForTrailers?: boolean } = {},
  ): void {
    if (this.headersSent) throw new Error('the answer head was already sent');
    this.headersSent = true;
    this.sentHeaders = headers;
    this.#conn.send(HEADERS, this.id, encodeHead(o.endStream ? END_STREAM : 0, headers));
    this.opened(o);
  }

  /** After the head went out: an empty body ends now, else trailers may be asked for. */
  opened(o: { endStream?: boolean; waitForTrailers?: boolean }): void {
    this.#waitForTrailers = o.waitForTrailers === true;
    if (o.endStream) {
      this.sentFin = true;
      this.end();
    }
  }

  // --- the peer's body --------------------------------------------------------------------

  receive(bytes: Buffer): void {
    this.#pushed += bytes.length;
    this.push(bytes);
    this.#creditBack();
  }

  override _read(): void {
    this.#creditBack();
  }

  // what leaves the read buffer goes through read() (paused or flowing), whatever the encoding
  override read(size?: number): unknown {
    const chunk: unknown = super.read(size);
    this.#creditBack();
    return chunk;
  }

  /** Credit goes back once bytes left the read buffer, a quarter window at a time. */
  #creditBack(): void {
    const fresh = this.#pushed - this.readableLength - this.#credited;
    if (fresh >= STREAM_WINDOW / 4) {
      this.#credited += fresh;
      this.allowance += fresh;
      this.#conn.send(CREDIT, this.id, u32(fresh));
    }
  }

  receiveHead(flags: number, headers: IncomingHttpHeaders): void {
    const end = (flags & END_STREAM) !== 0;
    this.emit('response', headers, end ? NGHTTP2_FLAG_END_STREAM : 0);
    if (end) this.receiveFin();
  }

  receiveTrailers(trailers: IncomingHttpHeaders): void {
    this.emit('trailers', trailers);
  }

  receiveFin(): void {
    this.gotFin = true;
    this.push(null);
    // nothing left to read: let 'end' come even if nobody reads (an empty request, a
    // trailers-only answer), so the stream closes once this side is done too
    if (this.readableLength === 0) this.resume();
  }

  /** The peer reset the stream (or its connection went). */
  receiveRst(code: number): void {
    this.#reset = true;
    this.rstCode = code;
    this.destroy(code === NO_ERROR ? undefined : streamError(code));
  }

  /** Resets the stream (CANCEL unless told otherwise), as node:http2's `close`. */
  close(code: number = NO_ERROR): void {
    if (this.#reset || this.destroyed) return;
    this.#reset = true;
    this.rstCode = code;
    this.#conn.send(RST, this.id, u32(code));
    this.destroy();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // gone before both bodies ended and nobody reset it: the peer is told
    if (!this.#reset && !(this.sentFin && this.gotFin)) {
      this.#reset = true;
      this.rstCode ??= CANCEL;
      this.#conn.send(RST, this.id, u32(CANCEL));
    }
    this.#held?.cb(err ?? new Error('stream closed'));
    this.#held = null;
    this.#conn.closed(this);
    cb(err);
  }
}

/** What both halves share: streams, their DATA and flow control, trailers, FIN and RST. */
abstract class H2Tunnel extends StreamConnection<H2TunnelStream> {
  protected abstract onControl(type: number, id: number, payload: Buffer): void;
  protected abstract onIdle(): void;

  send(type: number, id: number, payload?: Buffer): void {
    this.frame(type, id, payload);
  }

  /** A stream is over (destroyed): forgotten, and the connection may go idle. */
  closed(st: H2TunnelStream): void {
    if (this.streams.get(st.id) !== st) return;
    this.streams.delete(st.id);
    if (this.streams.size === 0) {
      this.idleSince = performance.now();
      this.onIdle();
    }
  }

  protected override gone(): void {
    if (this.dead) return;
    super.gone();
    for (const st of [...this.streams.values()]) st.receiveRst(CANCEL);
  }

  protected onDataFrame(id: number, len: number): string | null {
    const st = this.streams.get(id);
    if (st === undefined) return null; // reset meanwhile: its bytes are dropped
    if (st.gotFin) return `DATA after FIN on stream ${id}`;
    if (len > st.allowance) return `DATA beyond what was granted on stream ${id}`;
    st.allowance -= len;
    return null;
  }

  protected onDataBytes(id: number, bytes: Buffer): void {
    this.streams.get(id)?.receive(bytes);
  }

  protected maxPayload(type: number): number {
    return type === OPEN || type === HEADERS || type === TRAILERS ? 1 + MAX_HEAD_BYTES : 4;
  }

  protected onFrame(type: number, id: number, p: Buffer): void {
    const st = this.streams.get(id);
    switch (type) {
      case FIN:
        if (st !== undefined && !st.gotFin) st.receiveFin();
        return;
      case CREDIT:
        if (p.length !== 4) return this.protocolError('CREDIT without a 4-byte increment');
        st?.credit(p.readUInt32BE(0));
        return;
      case RST:
        if (p.length !== 4) return this.protocolError('RST without a 4-byte code');
        if (st !== undefined) {
          this.streams.delete(id);
          st.receiveRst(p.readUInt32BE(0));
        }
        return;
      case TRAILERS: {
        const t = decodeHead(p);
        if (t === null) return this.protocolError(`bad trailers on stream ${id}`);
        st?.receiveTrailers(t);
        return;
      }
      default:
        this.onControl(type, id, p);
    }
  }
}

/** The client half: opens a stream per request. */
export class H2TunnelClient extends H2Tunnel {
  /** The peer asked for no new streams (GOAWAY) or the pool is closing this connection. */
  retiring = false;
  #next = 1;
  readonly #onGone: (c: H2TunnelClient) => void;

  constructor(socket: Socket, onGone: (c: H2TunnelClient) => void) {
    super(socket);
    this.#onGone = onGone;
  }

  get load(): number {
    return this.streams.size;
  }

  /** A new stream carrying `headers` (as node:http2's `ClientHttp2Session.request`). */
  request(
    headers: OutgoingHttpHeaders,
    o: { endStream?: boolean; waitForTrailers?: boolean } = {},
  ): H2TunnelStream {
    if (this.dead || this.retiring) throw new Error('the connection is closing');
    const st = new H2TunnelStream(this, this.#next++);
    this.streams.set(st.id, st);
    this.frame(OPEN, st.id, encodeHead(o.endStream ? END_STREAM : 0, headers));
    st.opened(o);
    return st;
  }

  protected onControl(type: number, id: number, p: Buffer): void {
    if (type === HEADERS) {
      const st = this.streams.get(id);
      if (st === undefined) return; // reset meanwhile
      const head = p.length > 0 ? decodeHead(p.subarray(1)) : null;
      if (head === null) return this.protocolError(`bad answer head on stream ${id}`);
      st.receiveHead(p[0]!, head);
      return;
    }
    if (type === GOAWAY) {
      if (p.length !== 4) return this.protocolError('GOAWAY without a 4-byte stream id');
      this.retiring = true;
      const last = p.readUInt32BE(0);
      // not processed by the peer: the caller's sidecar opens them again elsewhere
      for (const st of [...this.streams.values()])
        if (st.id > last) {
          this.streams.delete(st.id);
          st.receiveRst(REFUSED_STREAM);
        }
      this.onIdle();
      return;
    }
    this.protocolError(`frame type ${type} from the server`);
  }

  protected onIdle(): void {
    if (this.retiring && this.streams.size === 0) this.endSoon();
  }

  protected override gone(): void {
    if (this.dead) return;
    super.gone();
    this.#onGone(this);
  }

  /** No new streams; closed once the open ones are done. */
  close(): void {
    this.retiring = true;
    this.onIdle();
  }
}

export interface H2TunnelServerOptions {
  /** A new stream, as node:http2's server 'stream' event (flags: its END_STREAM). */
  onStream(stream: H2TunnelStream, headers: IncomingHttpHeaders, flags: number): void;
  maxStreams: number;
  /** A connection without streams for this long is closed. */
  idleTimeoutMs: number;
  onProtocolError(what: string): void;
}

/** The server half: hands each stream the client opens to `onStream`. */
class H2TunnelServer extends H2Tunnel {
  readonly o: H2TunnelServerOptions;
  #lastId = 0;
  #draining = false;

  constructor(socket: Socket, o: H2TunnelServerOptions) {
    super(socket);
    this.o = o;
    this.onIdle();
  }

  protected override protocolError(what: string): void {
    this.o.onProtocolError(what);
    super.protocolError(what);
  }

  protected onControl(type: number, id: number, p: Buffer): void {
    if (type !== OPEN) return this.protocolError(`frame type ${type} from the client`);
    if (id <= this.#lastId) return this.protocolError(`OPEN of stream ${id} after ${this.#lastId}`);
    const head = p.length > 0 ? decodeHead(p.subarray(1)) : null;
    if (head === null) return this.protocolError(`bad request head on stream ${id}`);
    // this side is closing the idle connection: the caller sees it end and opens the stream anew
    if (this.ending) return;
    // the caller's certificate expired: it must open a new connection (a fresh handshake)
    if (Date.now() >= this.expiresAt) this.drain();
    if (this.#draining || this.streams.size >= this.o.maxStreams) {
      this.frame(RST, id, u32(REFUSED_STREAM));
      return;
    }
    this.#lastId = id;
    const st = new H2TunnelStream(this, id);
    this.streams.set(id, st);
    this.keepOpen();
    const end = (p[0]! & END_STREAM) !== 0;
    if (end) st.receiveFin();
    this.o.onStream(st, head, end ? NGHTTP2_FLAG_END_STREAM : 0);
  }

  protected onIdle(): void {
    this.endWhenIdle(this.#draining, this.o.idleTimeoutMs);
  }

  /** Takes no new streams (GOAWAY); open ones continue, then the connection ends. */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.frame(GOAWAY, 0, u32(this.#lastId));
    this.onIdle();
  }
}

export function serveH2Tunnel(
  socket: Socket,
  o: H2TunnelServerOptions,
): { drain(): void; readonly streams: number } {
  const t = new H2TunnelServer(socket, o);
  return {
    drain: () => t.drain(),
    get streams() {
      return t.streams.size;
    },
  };
}

/**
 * The `remora-h2/1` connections to one endpoint: a stream goes to the connection with the fewest,
 * another one is opened when all carry `maxStreamsPerConnection`. `unsupported` says the peer
 * answered without the protocol (an older Remora, another proxy): the caller then uses
 * node:http2 over mTLS.
 */
export class H2TunnelPool extends SharedPool<H2TunnelClient> {
  constructor(
    o: Pick<SharedPoolOptions<H2TunnelClient>, 'dial' | 'idleTimeoutMs'> & {
      maxStreamsPerConnection: number;
    },
  ) {
    super({
      dial: o.dial,
      idleTimeoutMs: o.idleTimeoutMs,
      alpn: H2_TUNNEL_ALPN,
      maxLoad: o.maxStreamsPerConnection,
      maxConnections: Infinity,
      wrap: (socket, onGone) => new H2TunnelClient(socket, onGone),
    });
  }

  /** A connection with room for one more stream; null when the peer lacks the protocol. */
  async connection(): Promise<H2TunnelClient | null> {
    return this.pick() ?? (this.unsupported ? null : await this.add());
  }
}
