// Process bookkeeping for the benchmark: every process the bench starts is recorded with its PID
// and start time (so a recycled PID is never signalled) and stopped by PID on exit, on error and
// on SIGINT/SIGTERM.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export type Placement = 'sut' | 'loadgen' | 'none';

export interface Pinning {
  /** Pin with taskset (needs ≥ 2 CPUs). */
  pin: boolean;
  loadgenCpu: number;
  sutCpu: number;
  /** nice value for every bench process (0 = leave alone). */
  nice: number;
}

export interface Started {
  name: string;
  pid: number;
  child: ChildProcess;
  /** PIDs counted for CPU and RSS (nginx: master + workers). */
  pids: number[];
  logFile: string;
  where: Placement;
  exited: Promise<number | null>;
}

interface Tracked {
  pid: number;
  startTime: string;
}

/** Field 22 of /proc/<pid>/stat (start time in ticks) of a live, non-zombie process. */
export function processStartTime(pid: number): string | null {
  try {
    const line = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = line.slice(line.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z') return null;
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** The command prefix (nice, taskset) that places a process on the SUT or loadgen core. */
export function placementPrefix(pinning: Pinning, where: Placement): string[] {
  if (where === 'none') return [];
  const prefix: string[] = [];
  if (pinning.nice !== 0) prefix.push('nice', '-n', String(pinning.nice));
  if (pinning.pin) {
    prefix.push('taskset', '-c', String(where === 'sut' ? pinning.sutCpu : pinning.loadgenCpu));
  }
  return prefix;
}

export function createProcessRegistry(options: { logDir: string; pinning: Pinning }) {
  const tracked: Tracked[] = [];
  const started: Started[] = [];

  function track(pid: number): void {
    const startTime = processStartTime(pid);
    if (startTime !== null) tracked.push({ pid, startTime });
  }

  function isOurs(t: Tracked): boolean {
    return processStartTime(t.pid) === t.startTime;
  }

  /**
   * Starts `cmd args` in the background with its output in `<logDir>/<name>.log`. nice and
   * taskset exec their target, so the child's PID is the program's own.
   */
  function start(
    name: string,
    cmd: string,
    args: string[],
    opts: { where?: Placement; env?: NodeJS.ProcessEnv; cwd?: string } = {},
  ): Started {
    const prefix = placementPrefix(options.pinning, opts.where ?? 'sut');
    const argv = [...prefix, cmd, ...args];
    const logFile = join(options.logDir, `${name}.log`);
    const out = createWriteStream(logFile);
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    // both streams into one file, ended once the child's streams are closed: `exited` settles
    // only when everything the process printed is in its log (reading it on 'exit' could find
    // the last lines still in the pipe, and a load tool's result missing)
    child.stdout?.pipe(out, { end: false });
    child.stderr?.pipe(out, { end: false });
    if (child.pid === undefined) throw new Error(`could not start ${name}: ${argv.join(' ')}`);
    track(child.pid);
    const exited = new Promise<number | null>((resolve) => {
      child.once('close', (code) => out.end(() => resolve(code)));
      child.once('error', () => out.end(() => resolve(-1)));
    });
    const s: Started = {
      name,
      pid: child.pid,
      child,
      pids: [child.pid],
      logFile,
      where: opts.where ?? 'sut',
      exited,
    };
    started.push(s);
    return s;
  }

  /** Adds the current children of a started process (nginx workers) to its accounting. */
  function adoptChildren(s: Started): void {
    for (const c of childPids(s.pid)) {
      if (!s.pids.includes(c)) {
        s.pids.push(c);
        track(c);
      }
    }
  }

  /** Records a process started by someone else on our behalf (e.g. by a library helper). */
  function adopt(pid: number): void {
    track(pid);
  }

  async function stop(s: Started, graceMs = 3000): Promise<void> {
    const mine = tracked.filter((t) => s.pids.includes(t.pid));
    await stopTracked(mine, graceMs);
  }

  async function stopTracked(list: Tracked[], graceMs: number): Promise<void> {
    for (const t of list) if (isOurs(t)) signal(t.pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && list.some(isOurs)) await sleep(50);
    for (const t of list) if (isOurs(t)) signal(t.pid, 'SIGKILL');
  }

  /** Stops everything the bench started, by PID. Safe to call more than once. */
  async function stopAll(graceMs = 3000): Promise<void> {
    await stopTracked(tracked.slice().reverse(), graceMs);
  }

  /** Synchronous last resort (process 'exit' handler): SIGKILL whatever is still ours. */
  function killAllSync(): void {
    for (const t of tracked) if (isOurs(t)) signal(t.pid, 'SIGKILL');
  }

  /** PIDs of every started process placed on a core (for foreign-load accounting). */
  function pidsOn(where: Placement): number[] {
    return started.filter((s) => s.where === where).flatMap((s) => s.pids);
  }

  return { start, adoptChildren, adopt, stop, stopAll, killAllSync, started, pidsOn };
}

export type ProcessRegistry = ReturnType<typeof createProcessRegistry>;

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Moves the calling process to the loadgen core and lowers its nice value (shared box). */
export function placeSelf(pinning: Pinning): void {
  try {
    if (pinning.pin)
      execFileSync('taskset', ['-a', '-pc', String(pinning.loadgenCpu), String(process.pid)], {
        stdio: 'ignore',
      });
    if (pinning.nice !== 0)
      execFileSync('renice', ['-n', String(pinning.nice), '-p', String(process.pid)], {
        stdio: 'ignore',
      });
  } catch {
    // not fatal: the report records the placement that was asked for
  }
}
