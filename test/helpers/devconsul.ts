import { spawn, type ChildProcess } from 'node:child_process';
import {
  startDevConsul,
  type DevConsul,
  type StartDevConsulOptions,
} from '../../lib/devconsul/index.ts';
import { decodeConfigEntry } from '../../lib/devconsul/config-entries.ts';
import { REMORA_BIN } from './cli.ts';
import { freePort } from './nats.ts';
import { reapOnExit } from './reaper.ts';

/**
 * Starts the embedded catalog in this process on a free loopback port and registers its
 * teardown with the given tap test.
 */
export async function startTestConsul(
  t: { teardown(fn: () => unknown): void },
  opts: StartDevConsulOptions = {},
): Promise<DevConsul> {
  const dc = await startDevConsul({ port: 0, ...opts });
  t.teardown(() => dc.close());
  return dc;
}

/** A config entry of `kind` (named as that kind requires, else `api`) decoded as a write is. */
export function decodeEntry(kind: string, body: Record<string, unknown>) {
  return decodeConfigEntry(
    JSON.stringify({
      Kind: kind,
      Name: kind === 'proxy-defaults' ? 'global' : kind === 'mesh' ? 'mesh' : 'api',
      ...body,
    }),
  );
}

export interface DevConsulProcess {
  url: string;
  port: number;
  pid: number;
  /** SIGTERM, then SIGKILL after 3 s; waits for the exit. */
  stop(): Promise<void>;
  /** Starts a fresh catalog (empty state, like a wiped Consul) on the same port. */
  restart(): Promise<void>;
}

function launch(port: number, env: Record<string, string>): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [REMORA_BIN, 'devconsul', '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'],
      { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    reapOnExit(child);
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`remora devconsul did not start on port ${port}:\n${out}${err}`));
    }, 60_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (/listening on http:\/\/\S+/.test(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`remora devconsul exited with ${code}:\n${out}${err}`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/**
 * Runs `remora devconsul --listen 127.0.0.1:<free port>` as a separate real process, for
 * restart and outage tests. Call stop() in teardown.
 */
export async function startDevConsulProcess(
  env: Record<string, string> = {},
): Promise<DevConsulProcess> {
  const port = await freePort();
  let child = await launch(port, env);
  const handle: DevConsulProcess = {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    stop: () => stopChild(child),
    restart: async () => {
      await stopChild(child);
      child = await launch(port, env);
      handle.pid = child.pid!;
    },
  };
  return handle;
}
