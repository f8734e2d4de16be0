import { spawn } from 'node:child_process';
import { reapOnExit } from './reaper.ts';

export const REMORA_BIN = new URL('../../bin/remora.js', import.meta.url).pathname;

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the `remora` command as a user would, with a deadline, and collects its output. */
export function runRemora(
  args: string[],
  options: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [REMORA_BIN, ...args], {
      env: { PATH: process.env.PATH ?? '', ...options.env },
      cwd: options.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    reapOnExit(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `remora ${args.join(' ')} did not finish in ${options.timeoutMs ?? 15000} ms\n${stderr}`,
        ),
      );
    }, options.timeoutMs ?? 15000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
