// Markdown for the data-plane scenario.
import type { RunRecord, RoleName } from '../lib/measure.ts';
import { fmt, fmtSigned, median, ratio, spreadPct } from '../lib/stats.ts';
import type { DataplaneResult } from './run-dataplane.ts';
import type { ReadyPath } from './paths.ts';

const mb = (kb: number): string => (kb > 0 ? (kb / 1024).toFixed(1) : '–');

interface PathSummary {
  path: ReadyPath;
  rps: number;
  rpsAll: number[];
  cpu: Partial<Record<RoleName, number>>;
  lat: { p50: number; p99: number; p999: number; p50All: number[]; p99All: number[] };
  errors: number;
  disturbed: number;
  runs: number;
}

function summarize(r: DataplaneResult, p: ReadyPath): PathSummary {
  const tp = r.runs.filter((x) => x.path === p.id && x.kind === 'throughput');
  const lt = r.runs.filter((x) => x.path === p.id && x.kind === 'latency');
  const cpu: Partial<Record<RoleName, number>> = {};
  for (const role of ['client', 'server', 'app'] as const) {
    if (p.roles[role]) cpu[role] = median(tp.map((x) => x.cpuUsPerReq[role] ?? Number.NaN));
  }
  const all = [...tp, ...lt];
  return {
    path: p,
    rps: median(tp.map((x) => x.load.rps)),
    rpsAll: tp.map((x) => x.load.rps),
    cpu,
    lat: {
      p50: median(lt.map((x) => x.load.p50Us)),
      p99: median(lt.map((x) => x.load.p99Us)),
      p999: median(lt.map((x) => x.load.p999Us)),
      p50All: lt.map((x) => x.load.p50Us),
      p99All: lt.map((x) => x.load.p99Us),
    },
    errors: all.reduce((s, x) => s + x.load.errors, 0),
    disturbed: all.filter((x) => x.foreignSutPp > 8 || x.foreignLoadgenPp > 8).length,
    runs: all.length,
  };
}

export interface DataplaneHeadline {
  lines: string[];
}

export function dataplaneHeadline(r: DataplaneResult, conns: number): DataplaneHeadline {
  const sums = new Map(r.ready.map((p) => [p.id, summarize(r, p)]));
  const hap = sums.get('haproxy');
  const lines: string[] = [];
  if (!hap) {
    lines.push('HAProxy pair not measured in this run: no ratios.');
    return { lines };
  }
  for (const id of ['remora-http', 'remora-tcp', 'remora-http2', 'nginx'] as const) {
    const s = sums.get(id);
    if (!s) {
      const sk = r.skipped.find((x) => x.id === id);
      if (sk) lines.push(`**${sk.label}**: not measured — ${sk.reason.split('\n')[0]}`);
      continue;
    }
    if (!(s.rps > 0)) {
      lines.push(
        `**${s.path.label}**: **failed under load** — no request completed in its throughput runs (${s.errors} errors or timeouts); see the per-run data`,
      );
      continue;
    }
    const base = sums.get(s.path.baseline);
    const hapBase = sums.get('direct');
    const addP99 = base ? s.lat.p99 - base.lat.p99 : Number.NaN;
    const hapAddP99 = hapBase ? hap.lat.p99 - hapBase.lat.p99 : Number.NaN;
    const cpuPair = (s.cpu.client ?? 0) + (s.cpu.server ?? 0);
    const cpuHap = (hap.cpu.client ?? 0) + (hap.cpu.server ?? 0);
    lines.push(
      `**${s.path.label}**: throughput ${ratio(s.rps, hap.rps)} the HAProxy pair (${fmt(s.rps)} vs ${fmt(hap.rps)} req/s at c${conns}); ` +
        `CPU per request (client + server) ${ratio(cpuPair, cpuHap)} HAProxy's (${cpuPair.toFixed(1)} vs ${cpuHap.toFixed(1)} µs); ` +
        `added p99 at ${fmt(r.rate)} req/s ${ratio(addP99, hapAddP99)} HAProxy's (${fmtSigned(addP99)} vs ${fmtSigned(hapAddP99)} µs)`,
    );
  }
  return { lines };
}

function runTable(runs: RunRecord[]): string[] {
  const out = [
    '| rep | seq | path | kind | requests | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | generator send lag p99 µs | CPU µs/req client / server / app | RSS peak MB client / server | SUT core busy (path) | loadgen core busy (tool) | foreign pp SUT / loadgen | attempts | quiet wait s |',
    '|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---:|---:|',
  ];
  for (const x of runs) {
    const c = (k: RoleName): string =>
      x.cpuUsPerReq[k] === undefined ? '–' : x.cpuUsPerReq[k].toFixed(1);
    out.push(
      `| ${x.rep} | ${x.seq} | ${x.path} | ${x.kind === 'throughput' ? 'c32 closed' : 'open loop'} | ${x.load.requests} | ${fmt(x.load.rps)} | ${x.load.p50Us} | ${x.load.p90Us} | ${x.load.p99Us} | ${x.load.p999Us} | ${x.load.maxUs} | ${x.load.errors} | ${x.load.sendLagP99Us >= 0 ? x.load.sendLagP99Us : '–'} | ${c('client')} / ${c('server')} / ${c('app')} | ${mb(x.rssPeakKb.client ?? 0)} / ${mb(x.rssPeakKb.server ?? 0)} | ${x.sutBusyPct}% (${x.sutPathPct}%) | ${x.loadgenBusyPct}% (${x.loadgenToolPct}%) | ${x.foreignSutPp} / ${x.foreignLoadgenPp} | ${x.attempts} | ${x.quietWaitS} |`,
    );
  }
  return out;
}

export function dataplaneSection(r: DataplaneResult, conns: number, foreignMax: number): string[] {
  const sums = r.ready.map((p) => summarize(r, p));
  const byId = new Map(sums.map((s) => [s.path.id, s]));
  const hap = byId.get('haproxy');
  const out: string[] = [];
  out.push('## Data plane', '');
  out.push(
    `Throughput: closed loop, ${conns} connections, keep-alive (wrk; the h2c paths use the bench's Node generator in closed-loop mode). ` +
      `Latency: open loop at **${fmt(r.rate)} req/s** for every path (${r.rateRule}), ${conns} connections, each request timed from its *intended* send time ` +
      '(no coordinated omission). "Added" = median(path) − median(its direct baseline) at the same rate. ' +
      `Medians over ${r.repsDone} repeat(s) per path; order alternates forward/reverse.`,
    '',
  );
  out.push(
    `| path | req/s c${conns} (median) | × HAProxy pair | added p50 / p99 / p99.9 at ${fmt(r.rate)} req/s (µs) | p50 / p99 / p99.9 (µs) | CPU µs/req client / server / app | RSS idle → peak client (MB) | RSS idle → peak server (MB) | errors | runs disturbed |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const s of sums) {
    const base = byId.get(s.path.baseline);
    const isBase = s.path.baseline === s.path.id;
    const added =
      isBase || !base
        ? '–'
        : `${fmtSigned(s.lat.p50 - base.lat.p50)} / ${fmtSigned(s.lat.p99 - base.lat.p99)} / ${fmtSigned(s.lat.p999 - base.lat.p999)}`;
    const c = (k: RoleName): string => (s.cpu[k] === undefined ? '–' : s.cpu[k].toFixed(1));
    const mem = (role: 'client' | 'server'): string => {
      const st = s.path.roles[role];
      const m = st ? r.memory.get(st.name) : undefined;
      return m ? `${mb(m.idleKb)} → ${mb(m.peakKb)}` : '–';
    };
    out.push(
      `| ${s.path.label}${s.path.baseline !== s.path.id && s.path.baseline !== 'direct' ? ` (Δ vs ${s.path.baseline})` : ''} | ${fmt(s.rps)} | ${hap ? ratio(s.rps, hap.rps) : '–'} | ${added} | ${fmt(s.lat.p50)} / ${fmt(s.lat.p99)} / ${fmt(s.lat.p999)} | ${c('client')} / ${c('server')} / ${c('app')} | ${mem('client')} | ${mem('server')} | ${s.errors} | ${s.disturbed} of ${s.runs} |`,
    );
  }
  for (const sk of r.skipped) {
    out.push(`| ${sk.label} | not measured | – | – | – | – | – | – | – | – |`);
  }
  out.push('');
  if (r.skipped.length) {
    out.push('Not measured in this run:', '');
    for (const sk of r.skipped)
      out.push(`- **${sk.label}** — ${sk.reason.replaceAll('\n', ' ').slice(0, 600)}`);
    out.push('');
  }
  const warned = r.ready.filter((p) => p.warnings.length);
  if (warned.length) {
    out.push('**Failed expectations (measured anyway):**', '');
    for (const p of warned) for (const w of p.warnings) out.push(`- ${p.label}: ${w}`);
    out.push('');
  }

  if (sums.length) {
    out.push('### What the CPU figures predict', '');
    out.push(
      'With app and both proxies sharing one core, a saturated pair serves ≈ 10⁶ / (client + server + app CPU µs per request):',
      '',
      '| path | Σ CPU µs/req | predicted req/s | measured req/s | SUT core busy (median) | loadgen core busy (median) |',
      '|---|---:|---:|---:|---:|---:|',
    );
    for (const s of sums) {
      const sum = (s.cpu.client ?? 0) + (s.cpu.server ?? 0) + (s.cpu.app ?? 0);
      const tp = r.runs.filter((x) => x.path === s.path.id && x.kind === 'throughput');
      out.push(
        `| ${s.path.label} | ${sum.toFixed(1)} | ${fmt(sum > 0 ? 1e6 / sum : Number.NaN)} | ${fmt(s.rps)} | ${fmt(median(tp.map((x) => x.sutBusyPct)))}% | ${fmt(median(tp.map((x) => x.loadgenBusyPct)))}% |`,
      );
    }
    out.push(
      '',
      'A loadgen core near 100 % means the load generator, not the path, set the pace (typical for the direct rows).',
      '',
    );
  }

  out.push('### Run-to-run spread', '');
  out.push(
    '| path | req/s min–max | req/s spread | p50 spread (latency runs) | p99 spread (latency runs) |',
    '|---|---:|---:|---:|---:|',
  );
  for (const s of sums) {
    const sp = (v: number[]): string =>
      Number.isFinite(spreadPct(v)) ? `${spreadPct(v).toFixed(1)}%` : '–';
    out.push(
      `| ${s.path.label} | ${fmt(Math.min(...s.rpsAll))}–${fmt(Math.max(...s.rpsAll))} | ${sp(s.rpsAll)} | ${sp(s.lat.p50All)} | ${sp(s.lat.p99All)} |`,
    );
  }
  const disturbed = r.runs.filter(
    (x) => x.foreignSutPp > foreignMax || x.foreignLoadgenPp > foreignMax,
  ).length;
  const waited = r.runs.filter((x) => x.quietWaitS.endsWith('+')).length;
  const foreignSut = r.runs.map((x) => x.foreignSutPp);
  const foreignLg = r.runs.map((x) => x.foreignLoadgenPp);
  out.push(
    '',
    'Spread = (max − min) / median over the repeats. "Foreign pp" = user CPU on a core that none of the bench\'s processes ' +
      'account for (other jobs on this shared box), in percentage points of that core; a run above ' +
      `${foreignMax} pp is *disturbed* and was re-measured (bounded). ` +
      `Recorded runs still disturbed: **${disturbed} of ${r.runs.length}**; foreign pp on the SUT core ${Math.min(...foreignSut)}–${Math.max(...foreignSut)}, on the loadgen core ${Math.min(...foreignLg)}–${Math.max(...foreignLg)}. ` +
      `Runs that started without the box becoming quiet: ${waited}.`,
    '',
  );
  const late = r.runs.filter((x) => x.kind === 'latency' && x.load.sendLagP99Us > 1000);
  if (late.length) {
    out.push(
      `**The open-loop generator itself fell behind in ${late.length} of ${r.runs.filter((x) => x.kind === 'latency').length} latency runs** ` +
        '(p99 of its own send lag > 1 ms, column "generator send lag" below): the loadgen core was not free, so those latencies ' +
        "include the generator's queueing and are not the path's.",
      '',
    );
  }

  out.push('### Checks before loading', '');
  for (const p of r.ready) for (const c of p.checks) out.push(`- ${p.label}: ${c}`);
  out.push('');

  out.push('### Memory after the runs', '');
  out.push(
    '| process | RSS idle (MB) | peak (MB) | idle again after all runs (MB) |',
    '|---|---:|---:|---:|',
  );
  for (const m of r.memory.values())
    out.push(`| ${m.name} | ${mb(m.idleKb)} | ${mb(m.peakKb)} | ${mb(m.afterKb)} |`);
  out.push(
    '',
    'RSS = VmRSS from `/proc/<pid>/status` (nginx: master + worker). Idle = after start, before any traffic; peak = max of 0.25 s samples during every run of that path.',
    '',
  );

  out.push('### Per-run data', '', ...runTable(r.runs), '');
  return out;
}
