// The only place that touches process globals for the `remora` command.
import { CommanderError } from 'commander';
import { createProgram } from './program.ts';
import { CliExit, type CliContext } from './context.ts';
import { formatForHuman, hasCode, toRemoraError } from '../lib/errors/index.ts';

const stop = new AbortController();
const reloaders = new Set<() => void>();
let signals = 0;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    signals += 1;
    if (signals > 1) process.exit(130); // a second Ctrl-C forces the exit
    stop.abort(sig);
  });
}
process.on('SIGHUP', () => {
  for (const fn of reloaders) fn();
});

const ctx: CliContext = {
  env: process.env,
  stdout: process.stdout,
  stderr: process.stderr,
  stopSignal: stop.signal,
  onReload(fn) {
    reloaders.add(fn);
    return () => reloaders.delete(fn);
  },
  cwd: process.cwd(),
};

function exitCodeFor(err: unknown): number {
  if (hasCode(err, 'REMORA_E_CONFIG_INVALID') || hasCode(err, 'REMORA_E_CONFIG_FILE_UNREADABLE'))
    return 78;
  if (hasCode(err, 'REMORA_E_USAGE')) return 2;
  return 1;
}

try {
  await (await createProgram(ctx, process.argv)).parseAsync(process.argv);
} catch (err) {
  if (err instanceof CliExit) {
    process.exitCode = err.exitCode;
  } else if (err instanceof CommanderError) {
    // commander already printed help, version or the usage error
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    const e = toRemoraError(err);
    process.stderr.write(`${formatForHuman(e)}\n`);
    if (e.code === 'REMORA_E_INTERNAL' && err instanceof Error && err.stack)
      process.stderr.write(`${err.stack}\n`);
    process.exitCode = exitCodeFor(e);
  }
}
