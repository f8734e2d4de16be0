import type { ErrorSpec } from './catalog/types.ts';
import { CORE_ERRORS } from './catalog/core.ts';
import { IDENTITY_ERRORS } from './catalog/identity.ts';
import { CONSUL_ERRORS } from './catalog/consul.ts';
import { DEVCONSUL_ERRORS } from './catalog/devconsul.ts';
import { CONTROL_ERRORS } from './catalog/control.ts';
import { NATS_ERRORS } from './catalog/nats.ts';
import { INTENTIONS_ERRORS } from './catalog/intentions.ts';
import { AGENT_ERRORS } from './catalog/agent.ts';
import { PROXY_ERRORS } from './catalog/proxy.ts';
import { TELEMETRY_ERRORS } from './catalog/telemetry.ts';
import { DEV_ERRORS } from './catalog/dev.ts';
import { ENV_ERRORS } from './catalog/env.ts';

export type { ErrorSpec } from './catalog/types.ts';

/**
 * Every error code Remora produces, declared once. Codes are append-only: never rename or reuse
 * one. Each area keeps its own catalog file under `catalog/`; `docs/errors.md` is generated from
 * this object (`npm run docs`) and a test keeps the two in step.
 */
export const ERRORS = {
  ...CORE_ERRORS,
  ...IDENTITY_ERRORS,
  ...CONSUL_ERRORS,
  ...DEVCONSUL_ERRORS,
  ...CONTROL_ERRORS,
  ...NATS_ERRORS,
  ...INTENTIONS_ERRORS,
  ...AGENT_ERRORS,
  ...PROXY_ERRORS,
  ...TELEMETRY_ERRORS,
  ...DEV_ERRORS,
  ...ENV_ERRORS,
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** True when `code` is a declared error code. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERRORS, code);
}

/** The catalog entry for a code. */
export function describeError(code: ErrorCode): ErrorSpec {
  return ERRORS[code];
}

/**
 * An error with a stable code. Match on `code` (see `hasCode`), never on `instanceof` or on the
 * message text. `details` holds structured facts (key, value, file, field…) for logs and replies;
 * it must never hold secrets.
 */
export class RemoraError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RemoraError';
    this.code = code;
    this.details = details;
  }

  /** The remedy from the catalog, for messages shown to people. */
  get remedy(): string {
    return ERRORS[this.code].remedy;
  }

  toJSON(): { code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** True when `err` carries the given code (or any declared code when `code` is omitted). */
export function hasCode(err: unknown, code?: ErrorCode): err is RemoraError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  return code === undefined ? isErrorCode(c) : c === code;
}

/** Wraps anything thrown into a RemoraError, keeping the original as `cause`. */
export function toRemoraError(
  err: unknown,
  fallback: ErrorCode = 'REMORA_E_INTERNAL',
): RemoraError {
  if (err instanceof RemoraError) return err;
  if (hasCode(err)) {
    return new RemoraError(err.code, err.message, err.details ?? {}, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new RemoraError(fallback, message, {}, { cause: err });
}

/** Renders `code: message` plus the remedy, for a person reading a terminal. */
export function formatForHuman(err: RemoraError): string {
  return `${err.code}: ${err.message}\n  → ${err.remedy}`;
}
