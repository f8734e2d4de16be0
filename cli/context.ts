import type { Writable } from 'node:stream';
import {
  loadConfig,
  type ConfigOf,
  type ConfigTree,
  type ProgramSchema,
} from '../lib/config/index.ts';

/** What a subcommand may touch of the outside world; only cli/main.ts builds the real one. */
export interface CliContext {
  env: Record<string, string | undefined>;
  stdout: Writable;
  stderr: Writable;
  /** Resolves when the user asks the program to stop (SIGINT/SIGTERM). */
  stopSignal: AbortSignal;
  /** Resolves on SIGHUP; the returned function unsubscribes. */
  onReload(fn: () => void): () => void;
  /** Current working directory, for relative paths. */
  cwd: string;
}

/** Thrown to end the command with an exit code and nothing more to print. */
export class CliExit extends Error {
  readonly exitCode: number;
  constructor(exitCode: number) {
    super(`exit ${exitCode}`);
    this.exitCode = exitCode;
  }
}

export function print(ctx: CliContext, text: string): void {
  ctx.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/**
 * Loads a program's configuration from `--config`, the environment and flags. `flags` holds
 * only the flags the user actually gave, keyed by config path.
 */
export function loadProgramConfig<T extends ConfigTree>(
  schema: ProgramSchema<T>,
  ctx: CliContext,
  file: string | undefined,
  flags: Record<string, unknown> = {},
): ConfigOf<T> {
  const overrides = Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined));
  return loadConfig(schema, { env: ctx.env, ...(file ? { file } : {}), overrides });
}
