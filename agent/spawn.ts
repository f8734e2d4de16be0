// Starting and signalling proxy processes. Proxies are spawned detached, in their own process
// group, with output appended to a log file, so that they outlive an agent restart.
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface SpawnedProxy {
  pid: number;
  /** Called once when the process exits (only for processes this agent started). */
  onExit(fn: (code: number | null, signal: string | null) => void): void;
}

export interface SpawnProxyRequest {
  instance: string;
  socketPath: string;
  adminPort: number;
  logFile: string;
}

export type SpawnProxy = (req: SpawnProxyRequest) => SpawnedProxy;

/** The `remora` entry script of this installation. */
export const DEFAULT_REMORA_BIN = fileURLToPath(new URL('../bin/remora.js', import.meta.url));

/**
 * Node options of every proxy process. Under load V8 grows the young generation to 2 × 16 MB;
 * capped at 4 MB per semi-space, a proxy's peak RSS stays below 90 MB with no measurable CPU
 * cost per request (docs/proxy.md, "Performance notes"). V8 reads this only at start, so it
 * must be on the command line rather than set by the proxy itself.
 */
export const PROXY_NODE_OPTIONS: readonly string[] = ['--max-semi-space-size=4'];

/** Arguments of `remora proxy` for one instance (DESIGN §6). */
export function proxyArgs(req: SpawnProxyRequest): string[] {
  return [
    'proxy',
    '--instance',
    req.instance,
    '--agent-socket',
    req.socketPath,
    '--admin',
    String(req.adminPort),
  ];
}

export function createProcessSpawner(o: {
  remoraBin: string;
  env: Record<string, string | undefined>;
}): SpawnProxy {
  return (req) => {
    const fd = openSync(req.logFile, 'a', 0o600);
    try {
      const child = spawn(
        process.execPath,
        [...PROXY_NODE_OPTIONS, o.remoraBin, ...proxyArgs(req)],
        {
          detached: true,
          stdio: ['ignore', fd, fd],
          env: o.env,
        },
      );
      child.unref();
      const pid = child.pid;
      if (pid === undefined) {
        throw new Error(`spawn of ${process.execPath} ${o.remoraBin} proxy failed`);
      }
      return {
        pid,
        onExit(fn) {
          if (child.exitCode !== null || child.signalCode !== null) {
            fn(child.exitCode, child.signalCode);
            return;
          }
          child.once('exit', (code, signal) => fn(code, signal));
        },
      };
    } finally {
      closeSync(fd);
    }
  };
}

/** True when a process with this pid exists (and may be signalled by us). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * True when `pid` still runs `remora proxy --instance <id>` (guards against a recycled pid).
 * Where /proc is not available the answer is true when the process is alive.
 */
export function isProxyProcess(pid: number, instance: string): boolean {
  if (!isProcessAlive(pid)) return false;
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return process.platform !== 'linux';
  }
  const argv = cmdline.split('\0');
  const i = argv.indexOf('--instance');
  return argv.includes('proxy') && i !== -1 && argv[i + 1] === instance;
}

export function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}
