// Nothing a test started may outlive the test process. tap ends a timed-out test file with
// SIGALRM and then SIGKILL, and neither runs the file's teardowns, so the real processes it
// started (nats-server, devconsul, control, agents, apps) and the proxies an agent spawned
// detached would keep running. Every helper that spawns records the child here.
//
// Two mechanisms, both limited to what was recorded:
// - on a normal exit of the test process, an `exit` hook kills what is still recorded;
// - a small watchdog process (own process group, so signals to the test's group miss it) holds
//   the other end of a pipe from the test process. The kernel closes that pipe however the test
//   process dies, SIGKILL included; on end of input the watchdog kills every recorded process
//   that still has the recorded start time (so a reused PID is never hit), and every proxy whose
//   pid file lies in a recorded data directory and whose command line names that directory.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

interface Entry {
  pid: number;
  /** Field 22 of /proc/<pid>/stat, or '' where /proc is missing. */
  start: string;
}

const entries = new Map<number, Entry>();
const dataDirs = new Set<string>();
let watchdog: ChildProcess | undefined;
let hooked = false;

/** Start time and process group of a live process, from /proc (Linux). */
function procStat(pid: number): { start: string; pgrp: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): pgrp is field 5, starttime field 22
    return { start: fields[19] ?? '', pgrp: Number(fields[2]) };
  } catch {
    return undefined;
  }
}

/**
 * The watchdog's program. Lines on stdin: `+<pid> <start>`, `-<pid>`, `d+<dir>`, `d-<dir>`.
 * Written as plain JavaScript for `node -e` (no imports from this tree, no TypeScript).
 */
const WATCHDOG = `
const fs = require('node:fs');
const path = require('node:path');
const pids = new Map();
const dirs = new Set();
const stat = (pid) => {
  try {
    const t = fs.readFileSync('/proc/' + pid + '/stat', 'utf8');
    const f = t.slice(t.lastIndexOf(')') + 2).split(' ');
    return { start: f[19] || '', pgrp: Number(f[2]) };
  } catch { return undefined; }
};
const kill = (pid) => {
  const s = stat(pid);
  try {
    // a group leader (a detached child) takes its group with it
    if (s && s.pgrp === pid) process.kill(-pid, 'SIGKILL'); else process.kill(pid, 'SIGKILL');
  } catch {}
};
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (line.startsWith('d+')) dirs.add(line.slice(2));
    else if (line.startsWith('d-')) dirs.delete(line.slice(2));
    else if (line.startsWith('+')) { const [p, s] = line.slice(1).split(' '); pids.set(Number(p), s || ''); }
    else if (line.startsWith('-')) pids.delete(Number(line.slice(1)));
  }
});
process.stdin.on('end', () => {
  for (const [pid, start] of pids) {
    const s = stat(pid);
    if (s ? s.start === start : start === '') kill(pid);
  }
  for (const dir of dirs) {
    let names = [];
    try { names = fs.readdirSync(path.join(dir, 'instances')); } catch {}
    for (const n of names) {
      try {
        const pid = JSON.parse(fs.readFileSync(path.join(dir, 'instances', n, 'proxy.pid'), 'utf8')).pid;
        const cmd = fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8');
        if (Number.isSafeInteger(pid) && pid > 1 && cmd.includes(dir)) kill(pid);
      } catch {}
    }
  }
  process.exit(0);
});
`;

function tell(line: string): void {
  if (!watchdog?.stdin?.writable) return;
  watchdog.stdin.write(`${line}\n`);
}

function setUp(): void {
  if (hooked) return;
  hooked = true;
  watchdog = spawn(process.execPath, ['-e', WATCHDOG], {
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
    // not the test's NODE_OPTIONS (tap's loaders): a bare node is enough and starts fast
    env: { PATH: process.env.PATH ?? '' },
  });
  watchdog.on('error', () => undefined);
  watchdog.stdin?.on('error', () => undefined);
  watchdog.unref();
  (watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  process.on('exit', () => reapNow());
}

/** Kills (SIGKILL) everything still recorded, at once. Runs by itself when the process exits. */
export function reapNow(): void {
  for (const e of entries.values()) {
    const s = procStat(e.pid);
    if (s ? s.start !== e.start : e.start !== '') continue;
    try {
      if (s && s.pgrp === e.pid) process.kill(-e.pid, 'SIGKILL');
      else process.kill(e.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  entries.clear();
  for (const dir of dataDirs) {
    let names: string[];
    try {
      names = readdirSync(join(dir, 'instances'));
    } catch {
      continue;
    }
    for (const n of names) {
      try {
        const pid = (
          JSON.parse(readFileSync(join(dir, 'instances', n, 'proxy.pid'), 'utf8')) as {
            pid: number;
          }
        ).pid;
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (Number.isSafeInteger(pid) && pid > 1 && cmd.includes(dir)) process.kill(pid, 'SIGKILL');
      } catch {
        // no proxy, or not ours
      }
    }
  }
}

/**
 * Records a child this test started: it is killed if the test process ends while it still runs.
 * Its record is dropped when it exits.
 */
export function reapOnExit(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  setUp();
  const e: Entry = { pid, start: procStat(pid)?.start ?? '' };
  entries.set(pid, e);
  tell(`+${pid} ${e.start}`);
  child.once('exit', () => {
    if (entries.get(pid) === e) entries.delete(pid);
    tell(`-${pid}`);
  });
}

/**
 * Records an agent data directory: the proxies whose `instances/<id>/proxy.pid` lies in it (and
 * whose command line names it) are killed if the test process ends. Returns the un-recorder.
 */
export function reapProxiesOnExit(dataDir: string): () => void {
  setUp();
  dataDirs.add(dataDir);
  tell(`d+${dataDir}`);
  return () => {
    dataDirs.delete(dataDir);
    tell(`d-${dataDir}`);
  };
}

/** The watchdog's PID (for the reaper's own test). */
export function watchdogPid(): number | undefined {
  return watchdog?.pid;
}
