// How much of each core went to jobs that are not the bench's during a scenario (this box is
// shared): core user time minus the user time of the bench's own processes on that core.
import { diffCore, readCoreTicks, readCpuTicks, share } from './proc-stats.ts';
import type { Pinning } from './procs.ts';

export interface ForeignShare {
  sutPp: number;
  loadgenPp: number;
}

/**
 * Starts metering; the returned function stops it. Our SUT processes are sampled every 250 ms so
 * that one which exits during the measurement still counts (up to its last sample).
 */
export function startForeignMeter(pinning: Pinning, sutPids: () => number[]): () => ForeignShare {
  const sut0 = readCoreTicks(pinning.sutCpu);
  const lg0 = readCoreTicks(pinning.loadgenCpu);
  const base = new Map<number, number>();
  const last = new Map<number, number>();
  const sample = (): void => {
    for (const pid of sutPids()) {
      const u = readCpuTicks([pid]).user;
      if (!base.has(pid)) base.set(pid, u);
      if (u >= (last.get(pid) ?? 0)) last.set(pid, u);
    }
  };
  sample();
  const timer = setInterval(sample, 250);
  timer.unref();
  const self0 = readCpuTicks([process.pid]).user;
  return () => {
    sample();
    clearInterval(timer);
    const sut = diffCore(sut0, readCoreTicks(pinning.sutCpu));
    const lg = diffCore(lg0, readCoreTicks(pinning.loadgenCpu));
    let ours = 0;
    for (const [pid, u] of last) ours += u - (base.get(pid) ?? u);
    const self = readCpuTicks([process.pid]).user - self0;
    return { sutPp: share(sut.user - ours, sut.total), loadgenPp: share(lg.user - self, lg.total) };
  };
}

export function describeForeign(f: ForeignShare): string {
  return `foreign user CPU during this measurement: SUT core ${f.sutPp} pp, loadgen core ${f.loadgenPp} pp`;
}
