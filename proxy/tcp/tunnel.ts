// `remora-tcp/1`: the TCP connections of one upstream share mTLS connections between two Remora
// sidecars, one stream per connection (docs/proxy.md, "TCP tunnels between sidecars").
//
// Why: a spliced TCP connection costs each sidecar one TLS read and one TLS write per message
// and direction. Over a shared connection, the messages of many streams that are ready in the
// same event-loop turn leave in one TLS write and arrive in one read.
//
// Negotiated in ALPN: the client offers `remora-tcp/1` and `http/1.1`; a sidecar whose inbound
// protocol is tcp selects the tunnel. Any other peer (an older Remora, not Remora) gets one mTLS
// connection per TCP connection, as before.
//
// Frames: type (1 byte) · stream (4) · payload length (4) · payload.
//   OPEN    client → server  payload: u32 bytes the server may send before being credited
//   ACCEPT  server → client  payload: u32 bytes the client may send before being credited
//   DATA    both             payload: stream bytes; never more than the other side granted
//   FIN     both             the sender has no more bytes for this stream (half close)
//   RST     both             payload: u8 reason; the stream is over, its sockets are destroyed
//   CREDIT  both             payload: u32 more bytes the receiver of DATA now accepts
//   GOAWAY  server → client  open no more streams here (drain); open ones continue
// The client sends no DATA before ACCEPT: a stream the server refused, denied or could not
// connect to its app never delivered a byte, so the client may open it on another endpoint.
// Flow control is per stream, so a stream whose reader is slow never stalls the others: a side
// never reads less from the shared connection, it stops reading the one local socket that has
// used up its credit.
import type { Socket } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import { SharedPool, type SharedPoolOptions } from '../outbound/shared-pool.ts';
import { CREDIT, DATA, FIN, GOAWAY, OPEN, RST, StreamConnection, u32 } from './framed.ts';

export const TUNNEL_ALPN = 'remora-tcp/1';
/** What a side may send on one stream before the other confirms it delivered it. */
export const STREAM_WINDOW = 256 * 1024;

/** Frame types (exported for tests that speak the protocol frame by frame). */
export { CREDIT, DATA, FIN, GOAWAY, OPEN, RST };
export const ACCEPT = 2;

export const RST_ABORTED = 0;
/** Not processed (draining, stream limit): safe to open elsewhere. */
export const RST_REFUSED = 1;
export const RST_DENIED = 2;
export const RST_APP_UNAVAILABLE = 3;

function noop(): void {}

class Stream {
  readonly id: number;
  local: Socket | null = null;
  /** Bytes this side may still send. */
  window = 0;
  /** Read from the local socket while the window was used up; sent on CREDIT. */
  held: Buffer[] = [];
  /** The local socket ended; FIN goes out once `held` is empty. */
  finPending = false;
  sentFin = false;
  gotFin = false;
  /** The local socket closed with bytes still held: they go out on CREDIT, then FIN. */
  localGone = false;
  /** Bytes the peer may still send (granted minus received). */
  allowance = STREAM_WINDOW;
  /** Bytes handed to the local socket, and of those already credited back to the peer. */
  written = 0;
  credited = 0;
  /** Server: the app connection is being opened; client: waiting for ACCEPT. */
  opening:
    { resolve: () => void; reject: (e: RemoraError) => void; local: Socket } | 'server' | null =
    null;
  readonly onWritten: () => void;

  constructor(id: number, onWritten: (s: Stream) => void) {
    this.id = id;
    this.onWritten = () => onWritten(this);
  }
}

/** What both halves share: per-stream flow control, half close and reset. */
abstract class Tunnel extends StreamConnection<Stream> {
  protected abstract onControl(type: number, id: number, payload: Buffer): void;
  protected abstract onStreamClosed(st: Stream): void;

  protected override gone(): void {
    if (this.dead) return;
    super.gone();
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const st of streams) {
      st.local?.destroy();
      this.onStreamClosed(st);
    }
  }

  protected reset(st: Stream, reason: number): void {
    this.streams.delete(st.id);
    this.frame(RST, st.id, Buffer.of(reason));
  }

  /** Joins a stream to its local socket (the caller's paused client socket, or the app's). */
  protected attach(st: Stream, local: Socket): void {
    st.local = local;
    // half close travels as FIN: a side that finished sending still receives
    local.allowHalfOpen = true;
    local.on('error', noop);
    local.on('data', (c: Buffer) => this.#fromLocal(st, c));
    local.on('end', () => {
      st.finPending = true;
      this.#maybeFin(st);
    });
    local.on('close', () => this.#localClosed(st));
    local.resume();
  }

  #fromLocal(st: Stream, c: Buffer): void {
    if (st.held.length > 0) {
      st.held.push(c);
      return;
    }
    if (c.length <= st.window) {
      st.window -= c.length;
      this.frame(DATA, st.id, c);
      return;
    }
    if (st.window > 0) {
      this.frame(DATA, st.id, c.subarray(0, st.window));
      c = c.subarray(st.window);
      st.window = 0;
    }
    st.held.push(c);
    st.local!.pause();
  }

  #onCredit(st: Stream, n: number): void {
    st.window += n;
    while (st.held.length > 0 && st.window > 0) {
      const c = st.held[0]!;
      if (c.length <= st.window) {
        st.held.shift();
        st.window -= c.length;
        this.frame(DATA, st.id, c);
      } else {
        this.frame(DATA, st.id, c.subarray(0, st.window));
        st.held[0] = c.subarray(st.window);
        st.window = 0;
      }
    }
    if (st.held.length === 0) {
      this.#maybeFin(st);
      if (!st.finPending) st.local?.resume();
    }
  }

  #maybeFin(st: Stream): void {
    if (st.finPending && !st.sentFin && st.held.length === 0 && this.streams.get(st.id) === st) {
      st.sentFin = true;
      this.frame(FIN, st.id);
      if (st.localGone) {
        this.streams.delete(st.id);
        this.onStreamClosed(st);
      }
    }
  }

  #localClosed(st: Stream): void {
    if (this.streams.get(st.id) !== st) return;
    // both sides finished, but what the local side sent last still waits for credit
    if (st.finPending && st.gotFin && st.held.length > 0) {
      st.localGone = true;
      return;
    }
    this.streams.delete(st.id);
    if (!(st.sentFin && st.gotFin)) this.frame(RST, st.id, Buffer.of(RST_ABORTED));
    this.onStreamClosed(st);
  }

  /** Credit goes back once bytes left for the local socket, a quarter window at a time. */
  #written(st: Stream): void {
    const local = st.local;
    if (local === null || this.streams.get(st.id) !== st) return;
    const fresh = st.written - local.writableLength - st.credited;
    if (fresh >= STREAM_WINDOW / 4) {
      st.credited += fresh;
      st.allowance += fresh;
      this.frame(CREDIT, st.id, u32(fresh));
    }
  }

  protected newStream(id: number): Stream {
    return new Stream(id, (s) => this.#written(s));
  }

  protected onDataFrame(id: number, len: number): string | null {
    const st = this.streams.get(id);
    if (st === undefined) return null; // reset meanwhile: its bytes are dropped
    if (st.opening !== null) return `DATA before ACCEPT on stream ${id}`;
    if (st.gotFin) return `DATA after FIN on stream ${id}`;
    if (len > st.allowance) return `DATA beyond what was granted on stream ${id}`;
    st.allowance -= len;
    return null;
  }

  protected onDataBytes(id: number, bytes: Buffer): void {
    const st = this.streams.get(id);
    if (st === undefined || st.local === null) return;
    st.written += bytes.length;
    st.local.write(bytes, st.onWritten);
  }

  protected maxPayload(): number {
    return 4;
  }

  protected onFrame(type: number, id: number, p: Buffer): void {
    this.#control(type, id, p);
  }

  #control(type: number, id: number, p: Buffer): void {
    const st = this.streams.get(id);
    switch (type) {
      case FIN:
        if (st === undefined) return;
        if (st.opening !== null) return this.protocolError(`FIN before ACCEPT on stream ${id}`);
        st.gotFin = true;
        st.local?.end();
        return;
      case CREDIT:
        if (p.length !== 4) return this.protocolError('CREDIT without a 4-byte increment');
        if (st !== undefined && st.opening === null) this.#onCredit(st, p.readUInt32BE(0));
        return;
      default:
        this.onControl(type, id, p);
    }
  }

  /** The peer reset the stream: its local socket is destroyed. */
  protected abortStream(st: Stream): void {
    this.streams.delete(st.id);
    st.local?.destroy();
    this.onStreamClosed(st);
  }
}

function refusedError(target: string, why: string): RemoraError {
  return new RemoraError(
    'REMORA_E_PROXY_CONNECT_FAILED',
    `${target} refused the TCP stream (${why}); it is opened on another endpoint`,
    { target, refused: true },
  );
}

/** The client half: opens a stream per local TCP connection. */
export class TunnelClient extends Tunnel {
  readonly target: string;
  /** The peer asked for no new streams (GOAWAY) or the pool is closing this connection. */
  retiring = false;
  #next = 1;
  #onGone: (c: TunnelClient) => void;

  constructor(socket: Socket, target: string, onGone: (c: TunnelClient) => void) {
    super(socket);
    this.target = target;
    this.#onGone = onGone;
  }

  /** Streams it carries (the pool's measure of how busy it is). */
  get load(): number {
    return this.streams.size;
  }

  /**
   * Carries `local` (paused) over a new stream; resolves once the peer accepted it. Rejects
   * with REMORA_E_PROXY_CONNECT_FAILED{refused} (never reached the app: open it elsewhere),
   * REMORA_E_PROXY_INTENTION_DENIED, REMORA_E_PROXY_APP_UNAVAILABLE, or
   * REMORA_E_PROXY_CONNECT_TIMEOUT when no answer came within `timeoutMs`: then, if the peer
   * sent nothing at all meanwhile, the tunnel is taken for dead and closed.
   */
  open(local: Socket, timeoutMs: number): Promise<void> {
    if (this.dead || this.retiring)
      return Promise.reject(refusedError(this.target, 'the connection is closing'));
    const st = this.newStream(this.#next++);
    this.streams.set(st.id, st);
    this.frame(OPEN, st.id, u32(STREAM_WINDOW));
    const sentAt = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (st.opening === null || this.streams.get(st.id) !== st) return;
        st.opening = null;
        const silent = this.lastRx < sentAt;
        this.reset(st, RST_ABORTED);
        reject(
          new RemoraError(
            'REMORA_E_PROXY_CONNECT_TIMEOUT',
            `${this.target} did not accept the TCP stream within ${timeoutMs} ms${silent ? '; the tunnel stayed silent and was closed' : ''}`,
            { target: this.target },
          ),
        );
        if (silent) this.gone();
        else this.#closeIfIdle();
      }, timeoutMs);
      st.opening = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
        local,
      };
    });
  }

  protected onControl(type: number, id: number, p: Buffer): void {
    const st = this.streams.get(id);
    if (type === GOAWAY) {
      this.retiring = true;
      this.#closeIfIdle();
      return;
    }
    if (type === ACCEPT) {
      if (st === undefined) return; // the local socket went away meanwhile (RST sent)
      const o = st.opening;
      if (o === null || o === 'server' || p.length !== 4)
        return this.protocolError(`unexpected ACCEPT on stream ${id}`);
      st.opening = null;
      st.window = p.readUInt32BE(0);
      if (o.local.destroyed) {
        this.reset(st, RST_ABORTED);
        o.reject(refusedError(this.target, 'the client left before it was accepted'));
        this.#closeIfIdle();
        return;
      }
      this.attach(st, o.local);
      o.resolve();
      return;
    }
    if (type === RST) {
      if (st === undefined) return;
      this.streams.delete(id);
      const o = st.opening;
      if (o !== null && o !== 'server') {
        st.opening = null;
        o.reject(this.#rstError(p.length === 1 ? p[0]! : RST_ABORTED));
        this.#closeIfIdle();
        return;
      }
      this.abortStream(st);
      return;
    }
    this.protocolError(`frame type ${type} from the server`);
  }

  #rstError(reason: number): RemoraError {
    if (reason === RST_DENIED)
      return new RemoraError(
        'REMORA_E_PROXY_INTENTION_DENIED',
        `${this.target} refused the TCP connection: an intention denies it`,
        { target: this.target },
      );
    if (reason === RST_APP_UNAVAILABLE)
      return new RemoraError(
        'REMORA_E_PROXY_APP_UNAVAILABLE',
        `${this.target}: the destination's local app did not accept the connection`,
        { target: this.target },
      );
    return refusedError(this.target, reason === RST_REFUSED ? 'draining or full' : 'reset');
  }

  protected onStreamClosed(st: Stream): void {
    const o = st.opening;
    if (o !== null && o !== 'server') {
      st.opening = null;
      o.reject(refusedError(this.target, 'the connection closed before it was accepted'));
    }
    this.#closeIfIdle();
  }

  protected override gone(): void {
    if (this.dead) return;
    super.gone();
    this.#onGone(this);
  }

  #closeIfIdle(): void {
    if (this.streams.size > 0) return;
    this.idleSince = performance.now();
    if (this.retiring) this.endSoon();
  }

  /** No new streams; closed once the open ones are done. */
  close(): void {
    this.retiring = true;
    this.#closeIfIdle();
  }
}

export interface TunnelServerOptions {
  /** Decides and connects one stream: resolves to the app socket, or rejects (coded error). */
  open(): Promise<Socket>;
  maxStreams: number;
  /** A tunnel without streams for this long is closed. */
  idleTimeoutMs: number;
  onStreamOpened(): void;
  onStreamClosed(): void;
  onProtocolError(what: string): void;
}

export interface TunnelServerConnection {
  drain(): void;
  readonly streams: number;
}

/** The server half: one app connection per stream the client opens. */
class TunnelServer extends Tunnel {
  readonly o: TunnelServerOptions;
  #lastId = 0;
  #draining = false;

  constructor(socket: Socket, o: TunnelServerOptions) {
    super(socket);
    this.o = o;
    this.#idle();
  }

  protected override protocolError(what: string): void {
    this.o.onProtocolError(what);
    super.protocolError(what);
  }

  protected onControl(type: number, id: number, p: Buffer): void {
    if (type === OPEN) {
      if (id <= this.#lastId || p.length !== 4)
        return this.protocolError(`OPEN of stream ${id} after ${this.#lastId}`);
      this.#lastId = id;
      // this side is closing the idle tunnel: the caller sees it end and opens the stream anew
      if (this.ending) return;
      // the caller's certificate expired: it must open a new tunnel (a fresh handshake)
      if (Date.now() >= this.expiresAt) this.drain();
      if (this.#draining || this.streams.size >= this.o.maxStreams) {
        this.frame(RST, id, Buffer.of(RST_REFUSED));
        return;
      }
      const st = this.newStream(id);
      st.window = p.readUInt32BE(0);
      st.opening = 'server';
      this.streams.set(id, st);
      this.keepOpen();
      this.o.onStreamOpened();
      this.o.open().then(
        (app) => {
          if (this.streams.get(id) !== st) return void app.destroy(); // reset meanwhile
          st.opening = null;
          this.attach(st, app);
          this.frame(ACCEPT, id, u32(STREAM_WINDOW));
        },
        (err: unknown) => {
          if (this.streams.get(id) !== st) return;
          const code = err instanceof RemoraError ? err.code : '';
          this.reset(
            st,
            code === 'REMORA_E_PROXY_INTENTION_DENIED' ? RST_DENIED : RST_APP_UNAVAILABLE,
          );
          this.onStreamClosed(st);
        },
      );
      return;
    }
    if (type === RST) {
      const st = this.streams.get(id);
      if (st !== undefined) this.abortStream(st);
      return;
    }
    this.protocolError(`frame type ${type} from the client`);
  }

  protected onStreamClosed(_st: Stream): void {
    this.o.onStreamClosed();
    if (this.streams.size === 0) this.#idle();
  }

  #idle(): void {
    this.idleSince = performance.now();
    this.endWhenIdle(this.#draining, this.o.idleTimeoutMs);
  }

  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    this.frame(GOAWAY, 0);
    if (this.streams.size === 0) this.endSoon();
  }
}

export function serveTunnel(socket: Socket, o: TunnelServerOptions): TunnelServerConnection {
  const t = new TunnelServer(socket, o);
  return {
    drain: () => t.drain(),
    get streams() {
      return t.streams.size;
    },
  };
}

export interface TunnelPoolOptions extends Pick<
  SharedPoolOptions<TunnelClient>,
  'dial' | 'idleTimeoutMs'
> {
  target: string;
  /** Streams on one connection before another one is opened. */
  maxStreamsPerConnection: number;
}

/**
 * The tunnels to one endpoint: a stream goes to the connection with the fewest; another one is
 * opened when all are full. When the peer does not speak the protocol, `open` says so and the
 * caller opens an mTLS connection per TCP connection.
 */
export class TunnelPool extends SharedPool<TunnelClient> {
  constructor(o: TunnelPoolOptions) {
    super({
      dial: o.dial,
      idleTimeoutMs: o.idleTimeoutMs,
      alpn: TUNNEL_ALPN,
      maxLoad: o.maxStreamsPerConnection,
      maxConnections: Infinity,
      wrap: (socket, onGone) => new TunnelClient(socket, o.target, onGone),
    });
  }

  /**
   * Carries `local` over a stream, accepted within `timeoutMs`; false when the peer has no
   * tunnel (connect it directly).
   */
  async open(local: Socket, timeoutMs: number): Promise<boolean> {
    const c = this.pick() ?? (this.unsupported ? null : await this.add());
    if (c === null) return false;
    await c.open(local, timeoutMs);
    return true;
  }
}
