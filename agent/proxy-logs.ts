// Each proxy's output (its log and, with AccessLogs Type stdout, its access log) is appended to
// `instances/<id>/proxy.log`. The proxy writes that file itself, through descriptors it holds for
// its whole life (it outlives the agent), so without a bound the file grows until the disk is
// full. The agent keeps it bounded the way logrotate's `copytruncate` does, without its lost
// lines: once the file passes `maxBytes`, older copies shift (`proxy.log.1` → `.2` …, the last
// dropped), the file is copied to `proxy.log.1` (0600), and then, with the proxy paused for that
// instant (SIGSTOP, SIGCONT), what it wrote during the copy is added and the file cut to zero.
// The proxy's descriptors are opened with O_APPEND, so its next line lands at the start of the
// emptied file. A proxy the agent cannot pause (its pid file is gone or names another process)
// is rotated without the pause, and a line it writes in that instant can be lost.
import { ftruncateSync, readFileSync, readSync, writeSync, constants as fsc } from 'node:fs';
import { open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { logError, type Logger } from '../lib/log/index.ts';
import { RemoraError } from '../lib/errors/index.ts';
import type { Clock } from '../lib/util/index.ts';
import { isProxyProcess, signalProcess } from './spawn.ts';

export interface ProxyLogRotatorOptions {
  /** The agent's data directory: every `instances/<id>/proxy.log` under it is kept bounded. */
  dataDir: string;
  /** Size past which a log is rotated; 0 never rotates. */
  maxBytes: number;
  /** Rotated copies kept (`proxy.log.1` … `proxy.log.<files>`); at least 1. */
  files: number;
  /** How often the sizes are looked at. */
  intervalMs: number;
  clock: Clock;
  logger: Logger;
  /** Pauses the instance's proxy and returns how to resume it; null when it cannot. */
  pause?: (id: string) => (() => void) | null;
}

export interface ProxyLogRotator {
  /** One pass over every proxy log now (also what the timer runs). */
  check(): Promise<void>;
  stop(): void;
}

const CHUNK = 1 << 20;

/** Copies `src` from `from` to its end into `dst`, without yielding; returns where it stopped. */
function copyTailSync(src: number, dst: number, from: number, buf: Buffer): number {
  let pos = from;
  for (;;) {
    const n = readSync(src, buf, 0, buf.length, pos);
    if (n === 0) return pos;
    let off = 0;
    while (off < n) off += writeSync(dst, buf, off, n - off);
    pos += n;
  }
}

/** Rotates one log: shift the copies, copy it to `.1`, cut it to zero; the bytes kept. */
async function rotate(
  path: string,
  files: number,
  pause: () => (() => void) | null,
): Promise<{ bytes: number; paused: boolean }> {
  await rm(`${path}.${files}`, { force: true });
  for (let i = files - 1; i >= 1; i--)
    await rename(`${path}.${i}`, `${path}.${i + 1}`).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  const buf = Buffer.allocUnsafe(CHUNK);
  const src = await open(path, fsc.O_RDWR);
  try {
    const dst = await open(`${path}.1`, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
    try {
      // the bulk without holding the agent's event loop ...
      let pos = 0;
      for (;;) {
        const { bytesRead } = await src.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        await dst.write(buf, 0, bytesRead);
        pos += bytesRead;
      }
      // ... then, the proxy paused, what it wrote meanwhile, and the cut, in one synchronous step
      const resume = pause();
      try {
        const bytes = copyTailSync(src.fd, dst.fd, pos, buf);
        ftruncateSync(src.fd, 0);
        return { bytes, paused: resume !== null };
      } finally {
        resume?.();
      }
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

export function createProxyLogRotator(o: ProxyLogRotatorOptions): ProxyLogRotator {
  const files = Math.max(1, o.files);
  const instancesDir = join(o.dataDir, 'instances');
  let timer: ReturnType<Clock['setTimeout']> | null = null;
  let stopped = false;
  let running: Promise<void> | null = null;
  /** Logs whose last rotation failed, so a failure is logged once, not every pass. */
  const failing = new Set<string>();

  async function pass(): Promise<void> {
    if (o.maxBytes <= 0) return;
    let ids: string[];
    try {
      ids = await readdir(instancesDir);
    } catch {
      return; // no instance yet
    }
    for (const id of ids) {
      const path = join(instancesDir, id, 'proxy.log');
      try {
        const st = await stat(path).catch(() => null);
        if (st === null || st.size <= o.maxBytes) continue;
        const { bytes, paused } = await rotate(path, files, () => o.pause?.(id) ?? null);
        failing.delete(path);
        o.logger.info(
          { instance: id, bytes, paused, file: `${path}.1` },
          `rotated the proxy log of ${id}`,
        );
      } catch (err) {
        if (failing.has(path)) continue;
        failing.add(path);
        logError(
          o.logger,
          new RemoraError(
            'REMORA_E_AGENT_PROXY_LOG_ROTATION',
            `cannot rotate ${path}: ${(err as Error).message}; the proxy keeps writing to it, unbounded, until the agent can (free disk space, or let the agent user write in ${join(instancesDir, id)})`,
            { instance: id, path },
            { cause: err },
          ),
          undefined,
          'warn',
        );
      }
    }
  }

  function check(): Promise<void> {
    // one pass at a time: a slow copy is not started twice
    running ??= pass().finally(() => {
      running = null;
    });
    return running;
  }

  function schedule(): void {
    if (stopped || o.maxBytes <= 0) return;
    timer = o.clock.setTimeout(() => {
      timer = null;
      void check().finally(schedule);
    }, o.intervalMs);
  }
  schedule();

  return {
    check,
    stop() {
      stopped = true;
      if (timer) o.clock.clearTimeout(timer);
      timer = null;
    },
  };
}

/** How long `pauseProxy` waits for a stopped proxy to be seen stopped. */
const STOP_WAIT_MS = 50;

/** The state letter of /proc/<pid>/stat (T: stopped), or null. */
function procState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/**
 * Pauses the proxy of `instance` whose pid is in `pidFile` (SIGSTOP), once /proc shows it stopped
 * — a line it was writing is then whole in the file — and returns what resumes it. Null when the
 * pid file is missing or names no proxy of that instance (a recycled pid is never signalled).
 */
export function pauseProxy(pidFile: string, instance: string): (() => void) | null {
  const pid = proxyPid(pidFile, instance);
  if (pid === null) return null;
  signalProcess(pid, 'SIGSTOP');
  const until = Date.now() + STOP_WAIT_MS;
  while (procState(pid) !== 'T' && procState(pid) !== null && Date.now() < until) {
    // a busy wait of microseconds: the kernel stops it at its next return from a system call
  }
  return () => signalProcess(pid, 'SIGCONT');
}

/** The pid of the supervisor's pid file (`{pid, instance, …}`) when it runs the proxy of `instance`. */
function proxyPid(pidFile: string, instance: string): number | null {
  let pid: unknown;
  try {
    pid = (JSON.parse(readFileSync(pidFile, 'utf8')) as { pid?: unknown }).pid;
  } catch {
    return null;
  }
  return Number.isInteger(pid) && (pid as number) > 0 && isProxyProcess(pid as number, instance)
    ? (pid as number)
    : null;
}

/**
 * Resumes every proxy under `dataDir` (SIGCONT; a running one does not notice). A starting agent
 * calls it, so a proxy paused by an agent that died within a rotation does not stay paused.
 */
export async function resumeProxies(dataDir: string): Promise<void> {
  const dir = join(dataDir, 'instances');
  const ids = await readdir(dir).catch(() => [] as string[]);
  for (const id of ids) {
    const pid = proxyPid(join(dir, id, 'proxy.pid'), id);
    if (pid !== null) signalProcess(pid, 'SIGCONT');
  }
}
