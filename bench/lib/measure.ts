// One measured load run with its accounting: CPU per request of each role, RSS peaks, how busy
// each core was, and how much of that was foreign (other jobs on this shared box). Disturbed runs
// are re-measured a bounded number of times.
import { setTimeout as sleep } from 'node:timers/promises';
import { readLoadOutcome, startLoad, type LoadOutcome, type LoadSpec } from './load.ts';
import {
  cpuMicrosPerRequest,
  diffCore,
  readCoreTicks,
  readCpuTicks,
  readReapedChildTicks,
  readRssKb,
  share,
  type CoreTicks,
} from './proc-stats.ts';
import type { Pinning, ProcessRegistry, Started } from './procs.ts';

export type RoleName = 'client' | 'server' | 'app';

export interface MeasureSettings {
  pinning: Pinning;
  quietPct: number;
  quietMaxWaitS: number;
  foreignMaxPp: number;
  retries: number;
  /** Epoch ms after which no more quiet waits or retries happen. */
  budgetEnd: number;
}

export interface RunRecord {
  path: string;
  kind: 'throughput' | 'latency';
  rep: number;
  seq: number;
  load: LoadOutcome;
  cpuUsPerReq: Partial<Record<RoleName, number>>;
  rssPeakKb: Partial<Record<RoleName, number>>;
  sutBusyPct: number;
  sutPathPct: number;
  loadgenBusyPct: number;
  loadgenToolPct: number;
  foreignSutPp: number;
  foreignLoadgenPp: number;
  attempts: number;
  quietWaitS: string;
}

/** Busy share of all CPUs over `windowMs`. */
async function allBusyPct(windowMs: number): Promise<number> {
  const a = readCoreTicks('all');
  await sleep(windowMs);
  const d = diffCore(a, readCoreTicks('all'));
  return share(d.busy, d.total);
}

/** Waits (bounded) until the box is quiet; returns seconds waited, "+" when it gave up. */
export async function waitQuiet(s: MeasureSettings, maxS = s.quietMaxWaitS): Promise<string> {
  if (Date.now() > s.budgetEnd || maxS <= 0) return '-';
  const start = Date.now();
  for (;;) {
    const busy = await allBusyPct(500);
    const waited = (Date.now() - start) / 1000;
    if (busy <= s.quietPct) return waited < 0.6 ? '0' : waited.toFixed(0);
    if (waited >= maxS) return `${waited.toFixed(0)}+`;
  }
}

function ownUserTicks(): number {
  return readCpuTicks([process.pid]).user;
}

export interface PathProcesses {
  roles: Partial<Record<RoleName, Started>>;
  /** Every process the bench keeps on the SUT core (for the foreign-load computation). */
  allSut: () => number[];
}

/** One bounded load run with accounting (not re-measured). */
export async function runOnce(
  registry: ProcessRegistry,
  settings: MeasureSettings,
  procs: PathProcesses,
  spec: LoadSpec,
  label: string,
  peaks: Map<string, number>,
): Promise<Omit<RunRecord, 'path' | 'kind' | 'rep' | 'seq' | 'attempts' | 'quietWaitS'>> {
  const roleNames = Object.keys(procs.roles) as RoleName[];
  const t0 = new Map(roleNames.map((r) => [r, readCpuTicks(procs.roles[r]!.pids)]));
  const sutAll0 = readCpuTicks(procs.allSut());
  const self0 = ownUserTicks();
  const lg0: CoreTicks = readCoreTicks(settings.pinning.loadgenCpu);
  const sut0: CoreTicks = readCoreTicks(settings.pinning.sutCpu);
  const reaped0 = readReapedChildTicks();

  const load = startLoad(registry, label, spec);
  const peak: Partial<Record<RoleName, number>> = {};
  const sample = (): void => {
    for (const r of roleNames) {
      const kb = readRssKb(procs.roles[r]!.pids);
      if (kb > (peak[r] ?? 0)) peak[r] = kb;
    }
  };
  const timer = setInterval(sample, 250);
  const hardLimit = setTimeout(() => void registry.stop(load, 1000), (spec.durationS + 25) * 1000);
  await load.exited;
  clearInterval(timer);
  clearTimeout(hardLimit);

  const lg = diffCore(lg0, readCoreTicks(settings.pinning.loadgenCpu));
  const sut = diffCore(sut0, readCoreTicks(settings.pinning.sutCpu));
  const sutAll = readCpuTicks(procs.allSut());
  const self = ownUserTicks() - self0;
  // the load tool is our direct child (nice and taskset exec it): once reaped, its CPU is in ours
  const reaped = readReapedChildTicks();
  const toolTicks = { total: reaped.total - reaped0.total, user: reaped.user - reaped0.user };
  const outcome = readLoadOutcome(load, spec);

  const cpuUsPerReq: Partial<Record<RoleName, number>> = {};
  let pathTicks = 0;
  for (const r of roleNames) {
    const d = readCpuTicks(procs.roles[r]!.pids).total - t0.get(r)!.total;
    pathTicks += d;
    cpuUsPerReq[r] = cpuMicrosPerRequest(d, outcome.requests);
    const key = `${procs.roles[r]!.name}`;
    peaks.set(key, Math.max(peaks.get(key) ?? 0, peak[r] ?? 0));
  }
  return {
    load: outcome,
    cpuUsPerReq,
    rssPeakKb: peak,
    sutBusyPct: share(sut.busy, sut.total),
    sutPathPct: share(pathTicks, sut.total),
    loadgenBusyPct: share(lg.busy, lg.total),
    loadgenToolPct: share(toolTicks.total, lg.total),
    foreignSutPp: share(sut.user - (sutAll.user - sutAll0.user), sut.total),
    foreignLoadgenPp: share(lg.user - toolTicks.user - self, lg.total),
  };
}

/** A measured run, re-measured (bounded) when foreign load disturbed it. */
export async function measure(
  registry: ProcessRegistry,
  settings: MeasureSettings,
  procs: PathProcesses,
  spec: LoadSpec,
  meta: { path: string; kind: RunRecord['kind']; rep: number; seq: number },
  peaks: Map<string, number>,
  log: (m: string) => void,
): Promise<RunRecord> {
  for (let attempt = 1; ; attempt++) {
    const quietWaitS = await waitQuiet(
      settings,
      attempt === 1 ? settings.quietMaxWaitS : 3 * settings.quietMaxWaitS,
    );
    const r = await runOnce(
      registry,
      settings,
      procs,
      spec,
      `${meta.path}-${meta.kind}-${meta.rep}-${attempt}`,
      peaks,
    );
    const disturbed =
      r.foreignSutPp > settings.foreignMaxPp || r.foreignLoadgenPp > settings.foreignMaxPp;
    if (disturbed && attempt <= settings.retries && Date.now() < settings.budgetEnd) {
      log(
        `  disturbed (foreign user CPU: SUT ${r.foreignSutPp} pp, loadgen ${r.foreignLoadgenPp} pp): re-measuring`,
      );
      continue;
    }
    return { ...meta, ...r, attempts: attempt, quietWaitS };
  }
}
