// The programs a lab test runs on its namespace hosts: started with a bounded output tail,
// optionally restarted on failure (as systemd's Restart=on-failure or a container restart policy
// would), and listed in the diagnostics a failed wait throws. REMORA_LAB_LOG=<file> also writes
// the longer diagnostics to that file.
import { writeFileSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { waitFor } from '../../lib/util/index.ts';
import type { LabHost } from './netns.ts';

export interface LabProc {
  name: string;
  child: ChildProcess;
  output(): string;
  exited(): boolean;
}

const OUTPUT_TAIL = 30_000;
const RESTARTS = 3;

export function createLabProcs(
  o: {
    /** Characters of each program's output in a failure message. */
    diagnosticsTail?: number;
    /** Programs whose whole output is kept (tests that count its lines). */
    keepAllOutput?: (name: string) => boolean;
  } = {},
) {
  const procs: LabProc[] = [];
  let stopping = false;

  /**
   * Starts a program on a host. With `restart`, a program that exits with an error is started
   * again after a second (at most 3 times): on a loaded machine a first NATS connection can time
   * out.
   */
  function start(
    host: LabHost,
    name: string,
    args: string[],
    env: Record<string, string> = {},
    restart = false,
  ): LabProc {
    let out = '';
    const keepAll = o.keepAllOutput?.(name) ?? false;
    const keep = (d: Buffer): void => {
      out += d.toString();
      if (!keepAll) out = out.slice(-OUTPUT_TAIL); // a tail for diagnostics; always drained
    };
    let restarts = 0;
    const launch = (): ChildProcess => {
      const c = host.spawn(args[0]!, args.slice(1), {
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      c.stdout?.on('data', keep);
      c.stderr?.on('data', keep);
      c.once('exit', (code) => {
        if (!restart || stopping || code === 0 || code === null || restarts >= RESTARTS) return;
        restarts++;
        out += `\n[lab] ${name} exited with ${code}; restart ${restarts} of ${RESTARTS}\n`;
        setTimeout(() => {
          if (!stopping) p.child = launch();
        }, 1000);
      });
      return c;
    };
    const p: LabProc = {
      name: `${name}@${host.name}`,
      child: launch(),
      output: () => out,
      exited: () => p.child.exitCode !== null || p.child.signalCode !== null,
    };
    procs.push(p);
    return p;
  }

  function diagnostics(tail = o.diagnosticsTail ?? 1500): string {
    return procs
      .map(
        (p) =>
          `--- ${p.name}${p.exited() ? ` (exited ${p.child.exitCode})` : ''}\n${p.output().slice(-tail)}`,
      )
      .join('\n');
  }

  /** waitFor with every program's output tail in the error. */
  async function until<T>(
    what: string,
    check: () => Promise<T | undefined | false> | T | undefined | false,
    ms: number,
  ): Promise<T> {
    try {
      return (await waitFor(what, check, ms, 250)) as T;
    } catch (err) {
      const log = process.env.REMORA_LAB_LOG;
      if (log) writeFileSync(log, diagnostics(OUTPUT_TAIL));
      throw new Error(`${(err as Error).message}\n${diagnostics()}`, { cause: err });
    }
  }

  return {
    procs,
    start,
    until,
    /** The lab is being torn down: programs that exit now are not restarted. */
    stopRestarts: (): void => {
      stopping = true;
    },
  };
}
