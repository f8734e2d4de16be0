// CPU and memory readings from /proc: per-process CPU ticks and RSS, per-core busy time.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

/** USER_HZ (clock ticks per second) of /proc/<pid>/stat times. */
export function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    } catch {
      ticksPerSecond = 100;
    }
    if (!Number.isFinite(ticksPerSecond) || ticksPerSecond <= 0) ticksPerSecond = 100;
  }
  return ticksPerSecond;
}

export interface CpuTicks {
  /** utime + stime, all threads. */
  total: number;
  user: number;
}

/** utime+stime summed over a PID list (fields 14 and 15 of /proc/<pid>/stat); gone PIDs count 0. */
export function readCpuTicks(pids: readonly number[]): CpuTicks {
  let total = 0;
  let user = 0;
  for (const pid of pids) {
    try {
      const line = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = line.slice(line.lastIndexOf(')') + 2).split(' ');
      const u = Number(rest[11]);
      const s = Number(rest[12]);
      total += u + s;
      user += u;
    } catch {
      // exited
    }
  }
  return { total, user };
}

/**
 * CPU ticks of the calling process's reaped children (cutime + cstime, fields 16 and 17): a load
 * generator that ran as our direct child and has exited is counted here exactly.
 */
export function readReapedChildTicks(): CpuTicks {
  const line = readFileSync('/proc/self/stat', 'utf8');
  const rest = line.slice(line.lastIndexOf(')') + 2).split(' ');
  const u = Number(rest[13]);
  const s = Number(rest[14]);
  return { total: u + s, user: u };
}

/**
 * PSS in kB summed over a PID list (`/proc/<pid>/smaps_rollup`): shared pages (the node binary,
 * shared libraries) divided among the processes that map them, so the sum over many proxies is
 * what they cost the host together, where a sum of RSS counts shared pages once per process.
 */
export function readPssKb(pids: readonly number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const m = /^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (m) sum += Number(m[1]);
    } catch {
      // exited
    }
  }
  return sum;
}

/** VmRSS in kB summed over a PID list. */
export function readRssKb(pids: readonly number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) sum += Number(m[1]);
    } catch {
      // exited
    }
  }
  return sum;
}

export interface CoreTicks {
  busy: number;
  total: number;
  /** user + nice: what processes (ours or foreign) ran in user mode. */
  user: number;
}

/** One CPU's line of /proc/stat ("all" = the aggregate first line). */
export function readCoreTicks(cpu: number | 'all'): CoreTicks {
  const key = cpu === 'all' ? 'cpu' : `cpu${cpu}`;
  const line = readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${key} `));
  if (!line) return { busy: 0, total: 0, user: 0 };
  const [us, ni, sy, id, io, irq, sirq, st] = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const busy = us! + ni! + sy! + irq! + sirq! + st!;
  return { busy, total: busy + id! + io!, user: us! + ni! };
}

export function diffCore(a: CoreTicks, b: CoreTicks): CoreTicks {
  return { busy: b.busy - a.busy, total: b.total - a.total, user: b.user - a.user };
}

/** Percentage of `part` in `whole`, rounded; 0 when `whole` is 0. */
export function share(part: number, whole: number): number {
  return whole > 0 ? Math.round((100 * part) / whole) : 0;
}

/** CPU µs per request from a tick delta. */
export function cpuMicrosPerRequest(ticks: number, requests: number): number {
  return requests > 0 ? (ticks * 1e6) / clockTicksPerSecond() / requests : 0;
}
