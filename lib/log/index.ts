import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
import { toRemoraError } from '../errors/index.ts';

export type Logger = PinoLogger;
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/** Field paths never written to a log line, wherever they appear. */
export const REDACT_PATHS = [
  'token',
  '*.token',
  'nodeToken',
  '*.nodeToken',
  'operatorToken',
  '*.operatorToken',
  'key',
  '*.key',
  'keyPem',
  '*.keyPem',
  'privateKey',
  '*.privateKey',
  'password',
  '*.password',
  'secret',
  '*.secret',
  'headers.authorization',
  '*.headers.authorization',
];

export interface CreateLoggerOptions {
  level?: string;
  /** `remora.component` of the program: control, agent, proxy, dev, devconsul, cli. */
  component: string;
  /** Extra fields on every line (instance, node…). */
  base?: Record<string, unknown>;
  /** Where lines go; stderr by default so stdout stays free for command output. */
  destination?: DestinationStream;
}

/**
 * Structured JSON lines: `level` as a label, `time` in ISO 8601, `component`, and for errors a
 * stable `code` field (use `logError`). Secrets listed in REDACT_PATHS are censored.
 */
export function createLogger(options: CreateLoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { component: options.component, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    options.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything (tests, libraries given no logger). */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Logs an error with its stable `code`, structured `details` and the message. Anything thrown
 * is mapped to a code first (REMORA_E_INTERNAL when it has none, with the stack).
 */
export function logError(
  logger: Logger,
  err: unknown,
  msg?: string,
  level: 'warn' | 'error' | 'fatal' = 'error',
): void {
  const e = toRemoraError(err);
  const fields: Record<string, unknown> = { code: e.code, details: e.details };
  if (e.code === 'REMORA_E_INTERNAL' && err instanceof Error) fields.stack = err.stack;
  logger[level](fields, msg ? `${msg}: ${e.message}` : e.message);
}
