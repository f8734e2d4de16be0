// Newline-delimited JSON frames on the agent↔proxy Unix socket. One frame = one JSON object on
// one line (JSON.stringify never emits a raw newline). Both sides use this codec.
import { RemoraError } from '../errors/index.ts';
import { MAX_FRAME_BYTES, type AgentFrame, type ProxyFrame } from './types.ts';
import { decodeProxySnapshot } from './snapshot.ts';

const NEWLINE = 0x0a;

/** One frame as bytes: its JSON followed by a newline. */
export function encodeFrame(frame: AgentFrame | ProxyFrame): Buffer {
  return Buffer.from(`${JSON.stringify(frame)}\n`, 'utf8');
}

export interface FrameDecoderOptions {
  /** Largest accepted frame in bytes (without the newline); defaults to MAX_FRAME_BYTES. */
  maxFrameBytes?: number;
}

/**
 * A streaming decoder: feed it chunks as they arrive, get back the complete frames parsed as
 * JSON (still `unknown` — pass them to `decodeAgentFrame` / `decodeProxyFrame`). Throws
 * REMORA_E_PROXY_FRAME_TOO_LARGE when a line grows past the limit (the stream cannot be
 * resynchronised then: close it) and REMORA_E_PROXY_FRAME_INVALID for a line that is not JSON.
 */
export class FrameDecoder {
  readonly maxFrameBytes: number;
  #parts: Buffer[] = [];
  #pending = 0;

  constructor(options: FrameDecoderOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
  }

  /** Bytes of an incomplete frame held so far. */
  get pendingBytes(): number {
    return this.#pending;
  }

  push(chunk: Buffer): unknown[] {
    const out: unknown[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl === -1) break;
      const piece = chunk.subarray(start, nl);
      const size = this.#pending + piece.length;
      if (size > this.maxFrameBytes) throw this.#tooLarge(size);
      const line = this.#parts.length === 0 ? piece : Buffer.concat([...this.#parts, piece], size);
      this.#parts = [];
      this.#pending = 0;
      start = nl + 1;
      if (line.length === 0 || (line.length === 1 && line[0] === 0x0d)) continue; // blank line
      out.push(parseLine(line));
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.#pending += rest.length;
      if (this.#pending > this.maxFrameBytes) throw this.#tooLarge(this.#pending);
      this.#parts.push(Buffer.from(rest)); // copy: the caller may reuse its buffer
    }
    return out;
  }

  #tooLarge(size: number): RemoraError {
    this.#parts = [];
    this.#pending = 0;
    return new RemoraError(
      'REMORA_E_PROXY_FRAME_TOO_LARGE',
      `frame of at least ${size} bytes exceeds the limit of ${this.maxFrameBytes} bytes; closing the socket`,
      { size, limit: this.maxFrameBytes },
    );
  }
}

function parseLine(line: Buffer): unknown {
  try {
    return JSON.parse(line.toString('utf8')) as unknown;
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_PROXY_FRAME_INVALID',
      `frame is not valid JSON (${(err as Error).message}); first bytes: ${JSON.stringify(line.subarray(0, 40).toString('utf8'))}`,
      { bytes: line.length },
    );
  }
}

function invalid(message: string, details: Record<string, unknown> = {}): RemoraError {
  return new RemoraError('REMORA_E_PROXY_FRAME_INVALID', message, details);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function frameHeader(value: unknown): { type: string; obj: Record<string, unknown> } {
  if (!isObject(value)) throw invalid('frame is not a JSON object');
  if (value.v !== 1)
    throw invalid(`frame has version ${JSON.stringify(value.v)}, expected 1`, { v: value.v });
  if (typeof value.type !== 'string') throw invalid('frame has no string `type`');
  return { type: value.type, obj: value };
}

function nonNegInt(obj: Record<string, unknown>, key: string, type: string): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw invalid(
      `${type} frame: \`${key}\` must be a non-negative integer, got ${JSON.stringify(v)}`,
    );
  return v;
}

function versionOrNull(obj: Record<string, unknown>, key: string, type: string): number | null {
  return obj[key] === null ? null : nonNegInt(obj, key, type);
}

/**
 * Validates a frame sent by the agent. A `snapshot` frame's snapshot is fully validated with
 * `decodeProxySnapshot` (REMORA_E_PROXY_SNAPSHOT_INVALID); anything else malformed is
 * REMORA_E_PROXY_FRAME_INVALID.
 */
export function decodeAgentFrame(value: unknown): AgentFrame {
  const { type, obj } = frameHeader(value);
  switch (type) {
    case 'snapshot':
      return { v: 1, type, snapshot: decodeProxySnapshot(obj.snapshot) };
    case 'drain':
      return { v: 1, type, deadlineMs: nonNegInt(obj, 'deadlineMs', type) };
    case 'ping':
      return { v: 1, type };
    default:
      throw invalid(`unknown agent frame type ${JSON.stringify(type)}`, { type });
  }
}

/** Validates a frame sent by a proxy. */
export function decodeProxyFrame(value: unknown): ProxyFrame {
  const { type, obj } = frameHeader(value);
  switch (type) {
    case 'hello': {
      if (typeof obj.instance !== 'string' || obj.instance === '')
        throw invalid('hello frame: `instance` must be a non-empty string');
      return {
        v: 1,
        type,
        instance: obj.instance,
        pid: nonNegInt(obj, 'pid', type),
        adminPort: nonNegInt(obj, 'adminPort', type),
        appliedVersion: versionOrNull(obj, 'appliedVersion', type),
      };
    }
    case 'ack': {
      const version = nonNegInt(obj, 'version', type);
      if (obj.ok === true) return { v: 1, type, version, ok: true };
      if (obj.ok !== false) throw invalid('ack frame: `ok` must be a boolean');
      const e = obj.error;
      if (!isObject(e) || typeof e.code !== 'string' || typeof e.message !== 'string')
        throw invalid('ack frame with ok:false needs `error: { code, message }` strings');
      return { v: 1, type, version, ok: false, error: { code: e.code, message: e.message } };
    }
    case 'status': {
      if (typeof obj.ready !== 'boolean') throw invalid('status frame: `ready` must be a boolean');
      const f: ProxyFrame = {
        v: 1,
        type,
        ready: obj.ready,
        appliedVersion: versionOrNull(obj, 'appliedVersion', type),
      };
      if (obj.reason !== undefined) {
        if (typeof obj.reason !== 'string')
          throw invalid('status frame: `reason` must be a string');
        f.reason = obj.reason;
      }
      return f;
    }
    case 'pong':
      return { v: 1, type };
    default:
      throw invalid(`unknown proxy frame type ${JSON.stringify(type)}`, { type });
  }
}
