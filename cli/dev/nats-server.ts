import { spawn, type ChildProcess } from 'node:child_process';
import { RemoraError } from '../../lib/errors/index.ts';
import type { Logger } from '../../lib/log/index.ts';

export interface NatsChild {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts `nats-server` bound to 127.0.0.1:<port> as a child process and resolves once it
 * reports ready. `remora dev` stops it by PID when it stops.
 */
export async function startNatsChild(options: {
  executable: string;
  port: number;
  logger: Logger;
  readyTimeoutMs?: number;
}): Promise<NatsChild> {
  const child: ChildProcess = spawn(
    options.executable,
    ['-a', '127.0.0.1', '-p', String(options.port)],
    // its own process group: a terminal's Ctrl-C reaches only `remora dev`, which stops it last
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer);
      reject(
        new RemoraError(
          'REMORA_E_DEV_START_FAILED',
          `nats-server on 127.0.0.1:${options.port} ${why}`,
          {
            part: 'nats-server',
            port: options.port,
            log: log.slice(-2000),
          },
        ),
      );
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(`did not become ready in ${options.readyTimeoutMs ?? 10_000} ms`);
    }, options.readyTimeoutMs ?? 10_000);
    child.once('error', (err) => fail(`could not start: ${err.message}`));
    const onEarlyExit = (code: number | null): void =>
      fail(`exited with code ${code}: ${log.trim().split('\n').pop() ?? ''}`);
    child.once('exit', onEarlyExit);
    const onLog = (d: Buffer): void => {
      log += d.toString();
      if (log.includes('Server is ready')) {
        clearTimeout(timer);
        child.off('exit', onEarlyExit);
        child.stderr?.off('data', onLog);
        child.stderr?.resume(); // keep draining its log so it never blocks on a full pipe
        resolve();
      }
    };
    child.stderr?.on('data', onLog);
  });
  options.logger.info({ pid: child.pid, port: options.port }, 'nats-server ready');
  return {
    url: `nats://127.0.0.1:${options.port}`,
    pid: child.pid ?? 0,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}
