// Strict JSON codec helpers: every decoder validates shape and version and fails with a coded
// RemoraError naming the message, the field and the way out.
import { RemoraError, isErrorCode, type ErrorCode } from '../errors/index.ts';

export const MESSAGE_VERSION = 1;
/** Largest message body accepted by the decoders (NATS' default max_payload is 1 MiB). */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

export type JsonObject = Record<string, unknown>;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** JSON body as bytes for `nc.publish`/`msg.respond`. */
export function encodeMessage(value: object): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function invalid(what: string, problem: string, details: JsonObject = {}): RemoraError {
  return new RemoraError(
    'REMORA_E_NATS_MESSAGE_INVALID',
    `${what}: ${problem}; send the shape documented in docs/design.md §4`,
    { message: what, ...details },
  );
}

/** Parses bytes or text into a JSON object; throws REMORA_E_NATS_MESSAGE_INVALID otherwise. */
export function parseJsonObject(data: Uint8Array | string, what: string): JsonObject {
  if (data.length > MAX_MESSAGE_BYTES)
    throw invalid(what, `body of ${data.length} bytes exceeds ${MAX_MESSAGE_BYTES}`);
  let text: string;
  try {
    text = typeof data === 'string' ? data : decoder.decode(data);
  } catch {
    throw invalid(what, 'body is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalid(what, `body is not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid(what, 'body is not a JSON object');
  return value as JsonObject;
}

/** Checks `v === 1`. */
export function checkVersion(o: JsonObject, what: string): void {
  if (!('v' in o)) throw invalid(what, 'field "v" is missing', { field: 'v' });
  if (o.v !== MESSAGE_VERSION) {
    throw new RemoraError(
      'REMORA_E_NATS_VERSION_UNSUPPORTED',
      `${what}: version ${JSON.stringify(o.v)} is not supported (this side speaks v ${MESSAGE_VERSION}); run the same Remora version on both sides`,
      { message: what, field: 'v', value: o.v },
    );
  }
}

/** Refuses fields outside `allowed` (requests are strict; replies tolerate additions). */
export function checkKeys(o: JsonObject, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k))
      throw invalid(what, `unknown field ${JSON.stringify(k)}`, { field: k });
  }
}

export interface StringRule {
  maxLength?: number;
  minLength?: number;
  pattern?: RegExp;
  patternHint?: string;
}

export function readString(
  o: JsonObject,
  key: string,
  what: string,
  rule: StringRule = {},
): string {
  const v = o[key];
  if (v === undefined) throw invalid(what, `field "${key}" is missing`, { field: key });
  if (typeof v !== 'string')
    throw invalid(what, `field "${key}" must be a string, got ${typeOf(v)}`, { field: key });
  const min = rule.minLength ?? 1;
  if (v.length < min) throw invalid(what, `field "${key}" is empty`, { field: key });
  if (rule.maxLength !== undefined && v.length > rule.maxLength)
    throw invalid(what, `field "${key}" is longer than ${rule.maxLength} characters`, {
      field: key,
    });
  if (rule.pattern && !rule.pattern.test(v))
    throw invalid(
      what,
      `field "${key}" ${JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v)} is not ${rule.patternHint ?? 'well formed'}`,
      { field: key },
    );
  return v;
}

export function readOptionalString(
  o: JsonObject,
  key: string,
  what: string,
  rule: StringRule = {},
): string | undefined {
  return o[key] === undefined ? undefined : readString(o, key, what, rule);
}

export function readNumber(
  o: JsonObject,
  key: string,
  what: string,
  rule: { integer?: boolean; min?: number; max?: number } = {},
): number {
  const v = o[key];
  if (v === undefined) throw invalid(what, `field "${key}" is missing`, { field: key });
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw invalid(what, `field "${key}" must be a finite number, got ${typeOf(v)}`, {
      field: key,
    });
  if (rule.integer && !Number.isInteger(v))
    throw invalid(what, `field "${key}" must be an integer`, { field: key });
  if (rule.min !== undefined && v < rule.min)
    throw invalid(what, `field "${key}" must be ≥ ${rule.min}`, { field: key });
  if (rule.max !== undefined && v > rule.max)
    throw invalid(what, `field "${key}" must be ≤ ${rule.max}`, { field: key });
  return v;
}

export function readBoolean(o: JsonObject, key: string, what: string): boolean {
  const v = o[key];
  if (v === undefined) throw invalid(what, `field "${key}" is missing`, { field: key });
  if (typeof v !== 'boolean')
    throw invalid(what, `field "${key}" must be a boolean, got ${typeOf(v)}`, { field: key });
  return v;
}

export function readArray(
  o: JsonObject,
  key: string,
  what: string,
  rule: { maxItems?: number; minItems?: number } = {},
): unknown[] {
  const v = o[key];
  if (v === undefined) throw invalid(what, `field "${key}" is missing`, { field: key });
  if (!Array.isArray(v))
    throw invalid(what, `field "${key}" must be an array, got ${typeOf(v)}`, { field: key });
  if (rule.minItems !== undefined && v.length < rule.minItems)
    throw invalid(what, `field "${key}" needs at least ${rule.minItems} item(s)`, { field: key });
  if (rule.maxItems !== undefined && v.length > rule.maxItems)
    throw invalid(what, `field "${key}" holds more than ${rule.maxItems} items`, { field: key });
  return v;
}

export function readObject(o: JsonObject, key: string, what: string): JsonObject {
  const v = o[key];
  if (v === undefined) throw invalid(what, `field "${key}" is missing`, { field: key });
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw invalid(what, `field "${key}" must be an object, got ${typeOf(v)}`, { field: key });
  return v as JsonObject;
}

export function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** The error reply every request may get instead of its result. */
export interface ErrorReplyV1 {
  v: 1;
  error: { code: string; message: string };
}

/** Encodes an error (coded or not) as the error-reply body. */
export function encodeErrorReply(
  err: RemoraError | { code: ErrorCode; message: string },
): Uint8Array {
  const reply: ErrorReplyV1 = { v: 1, error: { code: err.code, message: err.message } };
  return encodeMessage(reply);
}

/** True when a parsed reply is an error reply. */
export function isErrorReply(o: JsonObject): boolean {
  return 'error' in o && typeof o.error === 'object' && o.error !== null;
}

/**
 * Turns an error reply into the RemoraError it stands for: same code when it is declared here,
 * REMORA_E_NATS_REMOTE_ERROR otherwise.
 */
export function errorFromReply(o: JsonObject, what: string): RemoraError {
  const e = o.error as JsonObject;
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : `${what} failed`;
  if (isErrorCode(code)) return new RemoraError(code, message, { remote: true });
  return new RemoraError(
    'REMORA_E_NATS_REMOTE_ERROR',
    `${what} failed with ${code || 'no code'}: ${message}`,
    {
      remote: true,
      remoteCode: code,
    },
  );
}

/**
 * Decodes a reply: an error reply becomes a thrown RemoraError with its code, anything else is
 * checked for `v` and handed to `fromObject`.
 */
export function decodeReply<T>(
  data: Uint8Array | string,
  what: string,
  fromObject: (o: JsonObject) => T,
): T {
  const o = parseJsonObject(data, what);
  if (isErrorReply(o)) throw errorFromReply(o, what);
  return fromObject(o);
}
