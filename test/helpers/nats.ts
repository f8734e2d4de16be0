import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { reapOnExit } from './reaper.ts';

export interface NatsServerHandle {
  url: string;
  port: number;
  pid: number;
  /** Stops the server (SIGTERM, then SIGKILL after 2 s) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port (for outage tests). */
  restart(): Promise<void>;
}

/**
 * Ports for tests come from below the kernel's ephemeral range (32768–60999 here), which
 * outgoing connections draw their source ports from: a port taken from that range and released
 * can be grabbed by any connect() on the box before the test's server binds it, and a busy
 * parallel suite makes thousands of connections. 22000–32000 also stays clear of the agent's
 * default sidecar range (21000–21255). Each test process starts at its own offset so that
 * parallel files rarely probe the same ports.
 */
const PORT_FLOOR = 22_000;
const PORT_CEIL = 32_000;
let nextPort = PORT_FLOOR + ((process.pid * 7919) % (PORT_CEIL - PORT_FLOOR));

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.unref();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A free loopback TCP port (bound then released), below the ephemeral range. */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries < PORT_CEIL - PORT_FLOOR; tries++) {
    const port = nextPort++;
    if (nextPort >= PORT_CEIL) nextPort = PORT_FLOOR;
    if (await canBind(port)) return port;
  }
  throw new Error(`no free port on 127.0.0.1 between ${PORT_FLOOR} and ${PORT_CEIL}`);
}

function launch(port: number, extraArgs: string[]): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), ...extraArgs], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    reapOnExit(child);
    let log = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`nats-server did not start on port ${port}:\n${log}`));
    }, 10_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(
        new Error(
          `cannot run nats-server (install with: apt-get install -y nats-server): ${err.message}`,
        ),
      );
    });
    child.stderr?.on('data', (d: Buffer) => {
      log += d.toString();
      if (log.includes('Server is ready')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited with ${code}:\n${log}`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const t = setTimeout(() => child.kill('SIGKILL'), 2000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Starts a real nats-server on a free loopback port. Call stop() in teardown. */
export async function startNatsServer(extraArgs: string[] = []): Promise<NatsServerHandle> {
  const port = await freePort();
  let child = await launch(port, extraArgs);
  const handle: NatsServerHandle = {
    url: `nats://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    stop: () => stopChild(child),
    restart: async () => {
      await stopChild(child);
      child = await launch(port, extraArgs);
      handle.pid = child.pid!;
    },
  };
  return handle;
}
