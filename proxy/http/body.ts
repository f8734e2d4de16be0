// Message bodies: a strict incremental decoder for Content-Length / chunked / close-delimited
// framing, the chunked encoder, and BodyStream — a minimal push pipe with backpressure that
// carries a body from one socket to another without node:stream objects per request.
import type { RemoraError } from '../../lib/errors/index.ts';
import {
  DEFAULT_HEAD_LIMITS,
  parseTrailers,
  type HeadLimits,
  type ParseError,
} from './h1-parse.ts';

export type BodyMode = 'none' | 'length' | 'chunked' | 'close';

const MAX_CHUNK_LINE = 4096;
const CRLF = Buffer.from('\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');

const S_SIZE = 0;
const S_DATA = 1;
const S_DATA_CR = 2;
const S_DATA_LF = 3;
const S_TRAILER = 4;
const S_DONE = 5;

export interface BodyEvents {
  data(chunk: Buffer): void;
  end(trailers: string[] | null): void;
}

/**
 * Incremental body decoder. `feed(buf, start)` consumes bytes from `buf[start..]`, calls
 * `events.data` with payload slices (views into `buf`: copy if kept beyond the call) and
 * `events.end` once; returns how many bytes it consumed, or a ParseError.
 */
export class BodyDecoder {
  readonly mode: BodyMode;
  #remaining: number;
  #state = S_SIZE;
  #line = '';
  #trailerBlock = '';
  #limits: HeadLimits;
  #side: 'request' | 'response';
  done = false;

  constructor(
    mode: BodyMode,
    length: number,
    side: 'request' | 'response',
    limits: HeadLimits = DEFAULT_HEAD_LIMITS,
  ) {
    this.mode = mode;
    this.#remaining = mode === 'length' ? length : 0;
    this.#limits = limits;
    this.#side = side;
  }

  feed(buf: Buffer, start: number, events: BodyEvents): number | ParseError {
    if (this.done) return 0;
    if (this.mode === 'length') {
      const n = Math.min(this.#remaining, buf.length - start);
      if (n > 0) events.data(buf.subarray(start, start + n));
      this.#remaining -= n;
      if (this.#remaining === 0) {
        this.done = true;
        events.end(null);
      }
      return n;
    }
    if (this.mode === 'close') {
      if (buf.length > start) events.data(buf.subarray(start));
      return buf.length - start;
    }
    if (this.mode === 'none') {
      this.done = true;
      events.end(null);
      return 0;
    }
    return this.#feedChunked(buf, start, events);
  }

  /** The peer closed: complete for close-delimited bodies, an error otherwise. */
  finish(events: BodyEvents): boolean {
    if (this.done) return true;
    if (this.mode === 'close') {
      this.done = true;
      events.end(null);
      return true;
    }
    return false;
  }

  #bad(reason: string, message: string): ParseError {
    return {
      status: this.#side === 'request' ? 400 : 502,
      code:
        this.#side === 'request' ? 'REMORA_E_PROXY_BAD_REQUEST' : 'REMORA_E_PROXY_UPSTREAM_RESET',
      reason,
      message,
    };
  }

  #feedChunked(buf: Buffer, start: number, events: BodyEvents): number | ParseError {
    let i = start;
    const len = buf.length;
    while (i < len && this.#state !== S_DONE) {
      switch (this.#state) {
        case S_SIZE: {
          const nl = buf.indexOf(0x0a, i);
          const end = nl === -1 ? len : nl + 1;
          this.#line += buf.toString('latin1', i, end);
          i = end;
          if (this.#line.length > MAX_CHUNK_LINE)
            return this.#bad('chunk_line_too_long', 'chunk size line too long');
          if (nl === -1) break;
          const line = this.#line;
          this.#line = '';
          if (!line.endsWith('\r\n'))
            return this.#bad('bad_chunk', 'chunk size line does not end in CRLF');
          const body = line.slice(0, -2);
          const semi = body.indexOf(';');
          const hex = semi === -1 ? body : body.slice(0, semi);
          if (
            semi !== -1 &&
            !/^(;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+([ \t]*=[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+|"[^"\r\n]*"))?[ \t]*)*$/.test(
              body.slice(semi),
            )
          )
            return this.#bad('bad_chunk_ext', 'malformed chunk extension');
          if (!/^[0-9A-Fa-f]{1,12}$/.test(hex))
            return this.#bad(
              'bad_chunk_size',
              `invalid chunk size ${JSON.stringify(hex.slice(0, 20))}`,
            );
          const size = parseInt(hex, 16);
          if (size === 0) {
            this.#state = S_TRAILER;
          } else {
            this.#remaining = size;
            this.#state = S_DATA;
          }
          break;
        }
        case S_DATA: {
          const n = Math.min(this.#remaining, len - i);
          events.data(buf.subarray(i, i + n));
          i += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = S_DATA_CR;
          break;
        }
        case S_DATA_CR:
          if (buf[i] !== 0x0d) return this.#bad('bad_chunk', 'chunk data not followed by CRLF');
          i++;
          this.#state = S_DATA_LF;
          break;
        case S_DATA_LF:
          if (buf[i] !== 0x0a) return this.#bad('bad_chunk', 'chunk data not followed by CRLF');
          i++;
          this.#state = S_SIZE;
          break;
        case S_TRAILER: {
          const nl = buf.indexOf(0x0a, i);
          const end = nl === -1 ? len : nl + 1;
          const piece = buf.toString('latin1', i, end);
          i = end;
          this.#line += piece;
          if (this.#trailerBlock.length + this.#line.length > this.#limits.maxHeadBytes)
            return this.#bad('trailers_too_large', 'trailer section too large');
          if (nl === -1) break;
          const line = this.#line;
          this.#line = '';
          if (!line.endsWith('\r\n'))
            return this.#bad('bad_chunk', 'trailer line does not end in CRLF');
          if (line === '\r\n') {
            this.#state = S_DONE;
            this.done = true;
            let trailers: string[] | null = null;
            if (this.#trailerBlock !== '') {
              const t = parseTrailers(`${this.#trailerBlock}\r\n`, this.#limits, this.#side);
              if (!Array.isArray(t)) return t;
              trailers = t.length > 0 ? t : null;
            }
            events.end(trailers);
          } else {
            this.#trailerBlock += line;
          }
          break;
        }
      }
    }
    return i - start;
  }
}

/** One chunk in chunked encoding: size line, data, CRLF. */
export function encodeChunk(data: Buffer): Buffer[] {
  return [Buffer.from(`${data.length.toString(16)}\r\n`, 'latin1'), data, CRLF];
}

/** The last chunk with optional trailer fields. */
export function encodeLastChunk(trailers: readonly string[] | null): Buffer {
  if (!trailers || trailers.length === 0) return LAST_CHUNK;
  let s = '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) s += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
  return Buffer.from(`${s}\r\n`, 'latin1');
}

export interface BodySink {
  /** Returns false to ask the producer to pause until `BodyStream.resume()`. */
  data(chunk: Buffer): boolean;
  end(trailers: string[] | null): void;
  error(err: RemoraError): void;
}

/**
 * A body in flight between two sockets. The producer `push`es chunks (copy them first if they
 * are views into a reused buffer) and calls `end`/`fail`; the consumer `attach`es a sink once.
 * Chunks pushed before attach are held. `onPause`/`onResume` let the producer pause its socket.
 */
export class BodyStream {
  #sink: BodySink | null = null;
  #held: Buffer[] = [];
  #heldBytes = 0;
  #ended: { trailers: string[] | null } | null = null;
  #failed: RemoraError | null = null;
  #paused = false;
  /** Bytes the producer has pushed so far. */
  bytes = 0;
  /** Set by the producer: pause/resume its source. */
  onPause: (() => void) | null = null;
  onResume: (() => void) | null = null;
  /** Set by the producer: the consumer gave up (the other side went away); stop and clean up. */
  onCancel: ((err: RemoraError) => void) | null = null;
  /** Called once when the consumer attaches (e.g. to send `100 Continue`). */
  onAttach: (() => void) | null = null;
  /** Held bytes beyond which the producer is paused before a sink attaches. */
  highWaterMark = 64 * 1024;

  get attached(): boolean {
    return this.#sink !== null;
  }

  get ended(): boolean {
    return this.#ended !== null || this.#failed !== null;
  }

  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    const sink = this.#sink;
    if (sink === null) {
      this.#held.push(chunk);
      this.#heldBytes += chunk.length;
      if (this.#heldBytes >= this.highWaterMark) this.#pause();
      return;
    }
    if (!sink.data(chunk)) this.#pause();
  }

  end(trailers: string[] | null): void {
    if (this.ended) return;
    this.#ended = { trailers };
    this.#sink?.end(trailers);
  }

  fail(err: RemoraError): void {
    if (this.ended) return;
    this.#failed = err;
    this.#sink?.error(err);
  }

  attach(sink: BodySink): void {
    if (this.#sink !== null) throw new Error('body already attached');
    this.#sink = sink;
    this.onAttach?.();
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    let ok = true;
    for (const c of held) ok = sink.data(c);
    if (this.#failed) sink.error(this.#failed);
    else if (this.#ended) sink.end(this.#ended.trailers);
    else if (ok) this.resume();
    else this.#pause();
  }

  /** The consumer gives up on the body; the producer is told through `onCancel`. */
  cancel(err: RemoraError): void {
    if (this.ended) return;
    this.#failed = err;
    this.onCancel?.(err);
  }

  /** The consumer can take more. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.onResume?.();
  }

  #pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.onPause?.();
  }

  /**
   * Reads the whole body into one buffer if it is at most `limit` bytes; null when it grows
   * larger (then the stream is consumed partially: only call this before the body is needed
   * elsewhere, with a known Content-Length ≤ limit).
   */
  collect(limit: number): Promise<{ data: Buffer; trailers: string[] | null } | null> {
    return new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      let size = 0;
      this.attach({
        data(c) {
          size += c.length;
          if (size > limit) {
            resolve(null);
            return true;
          }
          parts.push(c);
          return true;
        },
        end(trailers) {
          if (size <= limit) resolve({ data: Buffer.concat(parts, size), trailers });
        },
        error: reject,
      });
    });
  }
}

/** A request or response body: none, fully buffered, or streaming. */
export type Body = null | Buffer | BodyStream;
