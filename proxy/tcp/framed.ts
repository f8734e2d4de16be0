// The framing both sidecar-to-sidecar stream protocols share (`remora-tcp/1`, `remora-h2/1`):
// frames of `type (1 byte) · stream (4) · payload length (4) · payload` on one mTLS connection,
// the frames of one event-loop turn written together, DATA payloads handed on as they arrive
// (never waiting for a whole frame), and everything else delivered whole.
import type { Socket } from 'node:net';
import { peerExpiry } from '../outbound/shared-pool.ts';

export const FRAME_HEADER = 9;
/**
 * The frame types both protocols share (each adds its own type 2, and `remora-h2/1` type 8).
 * DATA's payload is stream bytes, handed on piece by piece.
 */
export const OPEN = 1;
export const DATA = 3;
export const FIN = 4;
export const RST = 5;
export const CREDIT = 6;
export const GOAWAY = 7;

/** A frame as bytes (tests that speak a protocol frame by frame use it too). */
export function encodeFrame(type: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER);
  h[0] = type;
  h.writeUInt32BE(id, 1);
  h.writeUInt32BE(payload.length, 5);
  return Buffer.concat([h, payload]);
}

export function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export abstract class FramedConnection {
  readonly socket: Socket;
  dead = false;
  /** When the peer last sent anything. */
  lastRx = performance.now();
  /**
   * The peer's certificate expires then: no stream is opened over this connection afterwards,
   * so a long-lived connection never outlives the identity it was authenticated with.
   */
  readonly expiresAt: number;
  #out: Buffer[] = [];
  #flushScheduled = false;
  #ending = false;
  #partial: Buffer | null = null;
  /** The DATA frame being received: bytes left, and its stream. */
  #dataLeft = 0;
  #dataId = 0;

  constructor(socket: Socket) {
    this.socket = socket;
    this.expiresAt = peerExpiry(socket);
    socket.setNoDelay(true);
    // a connection may sit with open but quiet streams for hours: let the kernel notice a dead
    // peer
    socket.setKeepAlive(true, 30_000);
    socket.on('data', (c: Buffer) => this.#onData(c));
    socket.on('error', () => this.gone());
    socket.on('close', () => this.gone());
    socket.on('end', () => this.gone());
  }

  /** A DATA frame of `len` bytes starts on stream `id`: null to take it, else why it breaks the protocol. */
  protected abstract onDataFrame(id: number, len: number): string | null;
  /** The next piece of the current DATA frame's payload. */
  protected abstract onDataBytes(id: number, bytes: Buffer): void;
  /** The most payload a frame of `type` (not DATA) may carry. */
  protected abstract maxPayload(type: number): number;
  /** Any other frame, whole. */
  protected abstract onFrame(type: number, id: number, payload: Buffer): void;

  /** The peer broke the protocol: the connection and all its streams are closed. */
  protected protocolError(_what: string): void {
    this.socket.destroy();
    this.gone();
  }

  /** The connection is over; subclasses close their streams (and call this first). */
  protected gone(): void {
    if (this.dead) return;
    this.dead = true;
    this.#out = [];
    this.socket.destroy();
  }

  protected frame(type: number, id: number, payload?: Buffer): void {
    if (this.dead || this.socket.writableEnded) return;
    const h = Buffer.allocUnsafe(FRAME_HEADER);
    h[0] = type;
    h.writeUInt32BE(id, 1);
    h.writeUInt32BE(payload === undefined ? 0 : payload.length, 5);
    this.#out.push(h);
    if (payload !== undefined) this.#out.push(payload);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  /** Frames of one event-loop turn, whatever their stream, leave in one write. */
  #flush(): void {
    this.#flushScheduled = false;
    const out = this.#out;
    this.#out = [];
    if (this.dead || this.socket.writableEnded) return;
    if (out.length > 0) this.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out));
    if (this.#ending) this.socket.end();
  }

  /** This side ends the connection (no new streams; the peer sees it end). */
  protected get ending(): boolean {
    return this.#ending || this.socket.writableEnded;
  }

  /** Ends the connection once the frames already queued have been written. */
  protected endSoon(): void {
    if (this.#ending || this.dead) return;
    this.#ending = true;
    if (!this.#flushScheduled) this.socket.end();
  }

  #onData(chunk: Buffer): void {
    this.lastRx = performance.now();
    let buf = chunk;
    if (this.#partial !== null) {
      buf = Buffer.concat([this.#partial, chunk]);
      this.#partial = null;
    }
    let i = 0;
    while (i < buf.length && !this.dead) {
      if (this.#dataLeft > 0) {
        const n = Math.min(this.#dataLeft, buf.length - i);
        this.onDataBytes(this.#dataId, buf.subarray(i, i + n));
        this.#dataLeft -= n;
        i += n;
        continue;
      }
      if (buf.length - i < FRAME_HEADER) {
        this.#partial = Buffer.from(buf.subarray(i));
        return;
      }
      const type = buf[i]!;
      const id = buf.readUInt32BE(i + 1);
      const len = buf.readUInt32BE(i + 5);
      if (type === DATA) {
        i += FRAME_HEADER;
        const problem = this.onDataFrame(id, len);
        if (problem !== null) return this.protocolError(problem);
        this.#dataId = id;
        this.#dataLeft = len;
        continue;
      }
      if (len > this.maxPayload(type))
        return this.protocolError(`control frame ${type} of ${len} bytes`);
      if (buf.length - i < FRAME_HEADER + len) {
        this.#partial = Buffer.from(buf.subarray(i));
        return;
      }
      const payload = buf.subarray(i + FRAME_HEADER, i + FRAME_HEADER + len);
      i += FRAME_HEADER + len;
      this.onFrame(type, id, payload);
    }
  }
}

/** A framed connection that carries streams: them by number, and when the last one closed. */
export abstract class StreamConnection<S> extends FramedConnection {
  readonly streams = new Map<number, S>();
  /** When the last stream closed (for idle handling). */
  idleSince = performance.now();
  #idleTimer: NodeJS.Timeout | null = null;

  /**
   * A server half with no stream left: it ends now when draining, else once it stayed without
   * streams for `idleTimeoutMs` (a stream opened meanwhile calls `keepOpen`).
   */
  protected endWhenIdle(draining: boolean, idleTimeoutMs: number): void {
    if (this.streams.size > 0) return;
    if (draining) {
      this.endSoon();
      return;
    }
    if (this.#idleTimer === null && !this.dead) {
      this.#idleTimer = setTimeout(() => {
        this.#idleTimer = null;
        if (this.streams.size === 0) this.endSoon();
      }, idleTimeoutMs);
      this.#idleTimer.unref();
    }
  }

  /** A stream opened: the idle timer stops. */
  protected keepOpen(): void {
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
  }

  protected override gone(): void {
    if (this.dead) return;
    this.keepOpen();
    super.gone();
  }
}
