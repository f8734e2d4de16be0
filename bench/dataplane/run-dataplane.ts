// The data-plane scenario: every path in one run, same pinning, alternating order, medians of
// repeats. Phase 1: throughput at N connections (closed loop). Phase 2: latency at one fixed
// request rate below every pair's knee (open loop, latency from the intended send time).
import { setTimeout as sleep } from 'node:timers/promises';
import { describeLoad, type LoadSpec } from '../lib/load.ts';
import { measure, runOnce, type MeasureSettings, type RunRecord } from '../lib/measure.ts';
import { readRssKb } from '../lib/proc-stats.ts';
import type { ProcessRegistry } from '../lib/procs.ts';
import { median } from '../lib/stats.ts';
import type { BenchPki } from '../lib/certs.ts';
import { startApp, startPath, type PathContext, type PathId, type ReadyPath } from './paths.ts';

export interface DataplaneOptions {
  paths: PathId[];
  durationS: number;
  latencyDurationS: number;
  warmupS: number;
  prewarmS: number;
  reps: number;
  conns: number;
  /** Fixed request rate for the latency phase; 0 = half the slowest pair's median throughput. */
  rate: number;
  rateCap: number;
  /** The Remora pairs write access logs to files in the run directory, in their own JSON or a TextFormat. */
  accessLogs: 'off' | 'json' | 'text';
  settings: MeasureSettings;
}

export interface ProxyMemory {
  name: string;
  idleKb: number;
  peakKb: number;
  afterKb: number;
}

export interface DataplaneResult {
  ready: ReadyPath[];
  skipped: Array<{ id: PathId; label: string; reason: string }>;
  runs: RunRecord[];
  memory: Map<string, ProxyMemory>;
  rate: number;
  rateRule: string;
  loadCommands: string[];
  appCommand: string;
  elapsedS: number;
  repsDone: number;
}

function throughputSpec(p: ReadyPath, o: DataplaneOptions, durationS: number): LoadSpec {
  return p.transport === 'h1'
    ? {
        tool: 'wrk',
        mode: 'closed',
        transport: 'h1',
        port: p.port,
        conns: o.conns,
        rate: 0,
        durationS,
      }
    : {
        tool: 'generator',
        mode: 'closed',
        transport: 'h2c',
        port: p.port,
        conns: o.conns,
        rate: 0,
        durationS,
      };
}

function latencySpec(p: ReadyPath, o: DataplaneOptions, rate: number): LoadSpec {
  return {
    tool: 'generator',
    mode: 'open',
    transport: p.transport,
    port: p.port,
    conns: o.conns,
    rate,
    durationS: o.latencyDurationS,
  };
}

function ordered<T>(list: T[], rep: number): T[] {
  return rep % 2 === 1 ? list : [...list].reverse();
}

export async function runDataplane(
  registry: ProcessRegistry,
  pki: BenchPki,
  runDir: string,
  o: DataplaneOptions,
  log: (m: string) => void,
): Promise<DataplaneResult> {
  const t0 = Date.now();
  const app = await startApp(registry, runDir, log);
  const ctx: PathContext = { registry, pki, runDir, log, app, accessLogs: o.accessLogs };
  const ready: ReadyPath[] = [];
  const skipped: DataplaneResult['skipped'] = [];
  const wanted = [...o.paths];
  for (const id of wanted) {
    if (id === 'direct-h2c' && !wanted.includes('remora-http2')) continue;
    log(`starting path ${id}`);
    const r = await startPath(ctx, id);
    if (r.ok) ready.push(r.path);
    else {
      skipped.push({ id: r.id, label: r.label, reason: r.reason });
      log(`  path ${id} not measured: ${r.reason.split('\n')[0]}`);
    }
  }
  // the h2c baseline is only needed when a pair is driven over h2c
  const needsH2c = ready.some((p) => p.transport === 'h2c' && p.id !== 'direct-h2c');
  const paths = ready.filter((p) => p.id !== 'direct-h2c' || needsH2c);

  const memory = new Map<string, ProxyMemory>();
  const sutProcs = new Set<number>();
  for (const p of paths) {
    for (const s of Object.values(p.roles)) {
      for (const pid of s.pids) sutProcs.add(pid);
      if (!memory.has(s.name))
        memory.set(s.name, { name: s.name, idleKb: readRssKb(s.pids), peakKb: 0, afterKb: 0 });
    }
  }
  const allSut = (): number[] => [...sutProcs];
  const peaks = new Map<string, number>();
  const runs: RunRecord[] = [];
  let seq = 0;

  if (o.prewarmS > 0) {
    for (const p of paths) {
      log(`pre-warm ${p.id} (${o.prewarmS}s, not recorded)`);
      await runOnce(
        registry,
        o.settings,
        { roles: p.roles, allSut },
        throughputSpec(p, o, o.prewarmS),
        `${p.id}-prewarm`,
        peaks,
      );
    }
  }

  let repsDone = 0;
  for (let rep = 1; rep <= o.reps; rep++) {
    for (const p of ordered(paths, rep)) {
      seq++;
      log(`rep ${rep}/${o.reps} throughput ${p.id} (c${o.conns}, ${o.durationS}s)`);
      if (o.warmupS > 0) {
        await runOnce(
          registry,
          o.settings,
          { roles: p.roles, allSut },
          throughputSpec(p, o, o.warmupS),
          `${p.id}-warm-${rep}`,
          peaks,
        );
      }
      runs.push(
        await measure(
          registry,
          o.settings,
          { roles: p.roles, allSut },
          throughputSpec(p, o, o.durationS),
          { path: p.id, kind: 'throughput', rep, seq },
          peaks,
          log,
        ),
      );
    }
    repsDone = rep;
  }

  // the fixed rate: below the knee of every pair measured in this run
  const pairRps = paths
    .filter((p) => !p.id.startsWith('direct'))
    .map((p) =>
      median(runs.filter((r) => r.path === p.id && r.kind === 'throughput').map((r) => r.load.rps)),
    )
    // a pair that failed under load (no answers) says nothing about the knee of the others
    .filter((v) => v > 0);
  let rate = o.rate;
  let rateRule = `fixed by RATE=${o.rate}`;
  if (rate <= 0) {
    const slowest = pairRps.length ? Math.min(...pairRps) : o.rateCap * 2;
    rate = Math.max(100, Math.min(o.rateCap, Math.floor(slowest / 2 / 100) * 100));
    rateRule = `half the slowest pair's median throughput in this run (${Math.round(slowest)} req/s), rounded down to 100, capped at RATE_CAP=${o.rateCap}`;
  }

  for (let rep = 1; rep <= o.reps; rep++) {
    for (const p of ordered(paths, rep)) {
      seq++;
      log(`rep ${rep}/${o.reps} latency ${p.id} (open loop ${rate} req/s, ${o.latencyDurationS}s)`);
      runs.push(
        await measure(
          registry,
          o.settings,
          { roles: p.roles, allSut },
          latencySpec(p, o, rate),
          { path: p.id, kind: 'latency', rep, seq },
          peaks,
          log,
        ),
      );
    }
  }

  await sleep(1000);
  for (const m of memory.values()) {
    m.peakKb = Math.max(peaks.get(m.name) ?? 0, m.idleKb);
    const s = registry.started.find((x) => x.name === m.name);
    m.afterKb = s ? readRssKb(s.pids) : 0;
  }

  const sample = paths.find((p) => p.transport === 'h1') ?? paths[0];
  const loadCommands: string[] = [];
  if (sample) {
    loadCommands.push(
      `${describeLoad(throughputSpec(sample, o, o.durationS))}   # throughput, HTTP/1.1 paths`,
    );
    if (paths.some((p) => p.transport === 'h2c')) {
      const h2 = paths.find((p) => p.transport === 'h2c')!;
      loadCommands.push(
        `${describeLoad(throughputSpec(h2, o, o.durationS))}   # throughput, h2c paths (wrk has no HTTP/2)`,
      );
    }
    loadCommands.push(
      `${describeLoad(latencySpec(sample, o, rate))}   # latency at a fixed rate (open loop)`,
    );
    if (o.warmupS > 0)
      loadCommands.push(
        `same throughput command with -d${o.warmupS}s before every measured throughput run (warm-up, not recorded)`,
      );
    if (o.prewarmS > 0)
      loadCommands.push(
        `same throughput command with -d${o.prewarmS}s once per path before rep 1 (pre-warm, not recorded)`,
      );
  }
  return {
    ready: paths,
    skipped,
    runs,
    memory,
    rate,
    rateRule,
    loadCommands,
    appCommand: app.command,
    elapsedS: (Date.now() - t0) / 1000,
    repsDone,
  };
}
