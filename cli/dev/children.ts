import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../lib/log/index.ts';

/** A process `remora dev` started; stopped by its PID, never by name. */
export interface DevChild {
  name: string;
  pid: number;
  logFile: string;
  exited(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
  /** The last lines of its log, for error messages. */
  tail(lines?: number): string;
}

export function startChild(o: {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string | undefined>;
  logDir: string;
  logger: Logger;
  cwd?: string;
}): DevChild {
  const logFile = join(o.logDir, `${o.name}.log`);
  const fd = openSync(logFile, 'a', 0o600);
  let child: ChildProcess;
  try {
    // its own process group: a terminal's Ctrl-C reaches only `remora dev`, which stops the parts in order
    child = spawn(o.command, o.args, {
      env: o.env,
      cwd: o.cwd,
      stdio: ['ignore', fd, fd],
      detached: true,
    });
  } finally {
    closeSync(fd);
  }
  let done = false;
  const exitedPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      o.logger.debug({ part: o.name, code, signal }, 'exited');
      resolve();
    });
    child.once('error', (err) => {
      done = true;
      o.logger.error({ part: o.name, err: err.message }, 'could not start');
      resolve();
    });
  });
  o.logger.debug({ part: o.name, pid: child.pid, logFile }, 'started');
  return {
    name: o.name,
    pid: child.pid ?? 0,
    logFile,
    exited: () => done,
    async stop(graceMs = 10_000) {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exitedPromise;
      clearTimeout(timer);
    },
    tail(lines = 8) {
      try {
        return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
  };
}
