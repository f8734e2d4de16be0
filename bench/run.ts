// `npm run bench`: measures the data plane against its anchors, the control plane and the
// catalog, and how cost grows with scale; writes docs/benchmarks.md. Not part of the test suite.
// Loopback only; every load run and wait is bounded; every process it starts is stopped by PID on
// exit, on error and on SIGINT/SIGTERM.
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { createBenchPki } from './lib/certs.ts';
import { helpText, isSmoke, knobLine, num, readKnobs, type Knobs } from './lib/options.ts';
import { createProcessRegistry, placeSelf, placementPrefix, type Pinning } from './lib/procs.ts';
import { ensureTools, extendPath, machineFacts } from './lib/tools.ts';
import { BENCH_TEXT_FORMAT, PATH_IDS, REPO_ROOT, type PathId } from './dataplane/paths.ts';
import { runDataplane, type DataplaneResult } from './dataplane/run-dataplane.ts';
import { dataplaneHeadline, dataplaneSection } from './dataplane/report.ts';
import { runControl } from './control/run-control.ts';
import { runConsul } from './consul/run-consul.ts';
import { runScale } from './scale/run-scale.ts';
import { runRouting } from './routing/run-routing.ts';
import { runAgentScenario } from './agent/run-agent.ts';
import type { ScenarioReport } from './lib/scenario.ts';

const started = Date.now();
const log = (m: string): void => {
  const t = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[bench ${t}] ${m}\n`);
};

const knobs: Knobs = readKnobs(process.env, process.argv.slice(2));
if (knobs.SCENARIOS === 'help') {
  console.log(helpText());
  process.exit(0);
}

extendPath(process.env);
const pinning: Pinning = {
  pin: num(knobs, 'PIN') === 1,
  loadgenCpu: num(knobs, 'LOADGEN_CPU'),
  sutCpu: num(knobs, 'SUT_CPU'),
  nice: num(knobs, 'NICE'),
};
const runDir = mkdtempSync(join(tmpdir(), 'remora-bench-'));
mkdirSync(join(runDir, 'certs'));
mkdirSync(join(runDir, 'logs'));
const registry = createProcessRegistry({ logDir: join(runDir, 'logs'), pinning });

let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await registry.stopAll();
    if (knobs.KEEP_TMP === '1') log(`kept run directory ${runDir}`);
    else rmSync(runDir, { recursive: true, force: true });
  })();
  return cleaning;
}
process.on('exit', () => registry.killAllSync());
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping everything the bench started`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  ensureTools(log);
  if (pinning.pin && (await import('node:os')).cpus().length < 2) {
    log('fewer than 2 CPUs: pinning disabled');
    pinning.pin = false;
  }
  placeSelf(pinning);
  const scenarios = knobs.SCENARIOS.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const facts = machineFacts();
  log(`run directory ${runDir}; scenarios ${scenarios.join(', ')}`);
  const pki = createBenchPki(join(runDir, 'certs'));

  const sections: string[] = [];
  const headline: string[] = [];
  const commands: string[] = [];
  let dp: DataplaneResult | undefined;

  if (scenarios.includes('dataplane')) {
    const paths = knobs.PATHS.split(',').map((s) => s.trim()) as PathId[];
    for (const p of paths)
      if (!PATH_IDS.includes(p))
        throw new Error(`unknown path ${p} in PATHS; known: ${PATH_IDS.join(', ')}`);
    if (paths.includes('remora-http2') && !paths.includes('direct-h2c')) paths.push('direct-h2c');
    dp = await runDataplane(
      registry,
      pki,
      runDir,
      {
        paths,
        durationS: num(knobs, 'DURATION'),
        latencyDurationS: num(knobs, 'LAT_DURATION'),
        warmupS: num(knobs, 'WARMUP'),
        prewarmS: num(knobs, 'PREWARM'),
        reps: num(knobs, 'REPS'),
        conns: num(knobs, 'CONNS'),
        rate: num(knobs, 'RATE'),
        rateCap: num(knobs, 'RATE_CAP'),
        accessLogs:
          knobs.ACCESS_LOGS === '1' ? 'json' : knobs.ACCESS_LOGS === 'text' ? 'text' : 'off',
        settings: {
          pinning,
          quietPct: num(knobs, 'QUIET_PCT'),
          quietMaxWaitS: num(knobs, 'QUIET_MAX_WAIT'),
          foreignMaxPp: num(knobs, 'FOREIGN_MAX'),
          retries: num(knobs, 'RETRIES'),
          budgetEnd: Date.now() + num(knobs, 'TIME_BUDGET') * 1000,
        },
      },
      log,
    );
    headline.push(...dataplaneHeadline(dp, num(knobs, 'CONNS')).lines);
    sections.push(...dataplaneSection(dp, num(knobs, 'CONNS'), num(knobs, 'FOREIGN_MAX')));
    const pre = placementPrefix(pinning, 'sut').join(' ');
    const preL = placementPrefix(pinning, 'loadgen').join(' ');
    commands.push(
      `Placement: load generators run as \`${preL} <load command>\`; the app and every proxy as \`${pre} <command>\`; ` +
        `the orchestrator (\`node bench/run.ts\`) moves itself to CPU ${pinning.loadgenCpu} (\`taskset -a -pc\`) and renices to ${pinning.nice}.`,
      '',
      "Load (per measured run; `<port>` = the path's entry port):",
      '',
      '```',
      ...dp.loadCommands,
      '```',
      '',
      "Processes (`$RUN` = the run's temp directory, configs rendered from the templates named):",
      '',
      '```',
      dp.appCommand,
      ...dp.ready.flatMap((p) => p.commands),
      '```',
      '',
    );
    await registry.stopAll();
  }

  const extra: ScenarioReport[] = [];
  const ctx = { registry, pinning, runDir, pki, knobs, log };
  if (scenarios.includes('control')) extra.push(await runControl(ctx));
  if (scenarios.includes('routing')) extra.push(await runRouting(ctx));
  if (scenarios.includes('consul')) extra.push(await runConsul(ctx));
  if (scenarios.includes('scale')) extra.push(await runScale(ctx));
  if (scenarios.includes('agent')) extra.push(await runAgentScenario(ctx));
  for (const s of extra) {
    headline.push(...s.headline);
    sections.push(...s.section);
    commands.push(...s.commands);
    await registry.stopAll();
  }

  const out = isAbsolute(knobs.OUT) ? knobs.OUT : join(REPO_ROOT, knobs.OUT);
  const elapsed = (Date.now() - started) / 1000;
  const doc = renderReport({
    knobs,
    facts,
    pki,
    pinning,
    headline,
    sections,
    commands,
    elapsed,
    dp,
  });
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, doc);
  log(`report written to ${out} (${elapsed.toFixed(0)} s)`);
  console.log(`bench report: ${out}`);
}

function renderReport(r: {
  knobs: Knobs;
  facts: ReturnType<typeof machineFacts>;
  pki: ReturnType<typeof createBenchPki>;
  pinning: Pinning;
  headline: string[];
  sections: string[];
  commands: string[];
  elapsed: number;
  dp: DataplaneResult | undefined;
}): string {
  const when = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const smoke = isSmoke(r.knobs);
  const lines: string[] = [];
  lines.push('# Benchmarks', '');
  lines.push(
    `Generated by \`npm run bench\` (\`bench/run.ts\`) on ${when} UTC in ${r.elapsed.toFixed(0)} s. ` +
      'Regenerate with `npm run bench` as root on a quiet box; knobs: `npm run bench -- --help`.',
    '',
  );
  const fmax = num(r.knobs, 'FOREIGN_MAX');
  const disturbed = r.dp
    ? r.dp.runs.filter((x) => x.foreignSutPp > fmax || x.foreignLoadgenPp > fmax).length
    : 0;
  if (!smoke && r.dp && disturbed * 4 > r.dp.runs.length) {
    lines.push(
      `> **DISTURBED RUN — not a clean measurement.** ${disturbed} of ${r.dp.runs.length} recorded data-plane runs had more ` +
        `than ${fmax} pp of foreign CPU on a core (other jobs on this box; see "Run-to-run spread"). Regenerate on a quiet box ` +
        'before quoting these numbers.',
      '',
    );
  }
  if (smoke) {
    lines.push(
      '> **SMOKE RUN — not a measurement.** This report came from a shortened run (durations or repeats below the ' +
        'defaults) used to check the harness, on a box shared with other jobs. Its numbers show that every path works and ' +
        'how the report reads; quote none of them. Regenerate with the defaults on a quiet box.',
      '',
    );
  }
  lines.push(`Knobs: \`${knobLine(r.knobs)}\`.`, '');
  lines.push('## Headline', '');
  if (r.headline.length) for (const h of r.headline) lines.push(`- ${h}`);
  else lines.push('- nothing measured');
  lines.push('');
  lines.push(
    'Topology of every pair: `load generator → client-side proxy (plain HTTP in, mTLS out) → server-side proxy (mTLS in, ' +
      'client certificate required and verified) → nginx app (100-byte body)`, all on 127.0.0.1, keep-alive on every hop. ' +
      `The load generator runs on CPU ${r.pinning.loadgenCpu}; the app and every proxy share CPU ${r.pinning.sutCpu}, ` +
      "so a pair's throughput is set by the CPU each request costs across both proxies and the app — **CPU µs per request is " +
      'the portable figure**, req/s on one shared core is its consequence.',
    '',
  );
  lines.push(...r.sections);
  lines.push(
    '## Method',
    '',
    '- **One run, same pinning.** Every path is started before the first measurement and measured in the same run, ' +
      'repeats in alternating order (forward, reverse, …); the tables give medians over the repeats and the spread ' +
      '((max − min) / median). Each path is pre-warmed once and warmed up before every throughput run (not recorded).',
    '- **Throughput** is closed loop: wrk with one thread and N keep-alive connections; for a path that must be driven over ' +
      "cleartext HTTP/2 (the `http2` pair: its outbound listener and the app speak h2c), the bench's generator in closed-loop " +
      "mode, one stream in flight per connection (wrk has no HTTP/2). That row's ratio therefore mixes two load tools; its CPU " +
      'µs per request does not.',
    '- **Latency** is open loop (Debian ships no wrk2): `bench/loadgen/open-loop.ts`, its own process pinned to the loadgen ' +
      'core, sends at a fixed rate on N keep-alive connections and times each request from its *intended* send time, so a ' +
      'stall shows up as latency instead of lowering the offered load (no coordinated omission). It reports its own send lag; ' +
      'runs where it fell behind are flagged. Its overhead is in the direct baseline and cancels in the "added" columns.',
    '- **CPU µs per request** = (utime + stime of the process, all threads, from `/proc/<pid>/stat`) / requests completed, ' +
      'over the measured run; nginx counts master + worker. **RSS** = VmRSS from `/proc/<pid>/status`, sampled every 0.25 s.',
    '- **Shared box.** Before each run the bench waits (bounded, QUIET_MAX_WAIT) for all-CPU busy ≤ QUIET_PCT; after it, ' +
      '"foreign pp" = user CPU on each core not accounted for by the bench\'s own processes there. A run above FOREIGN_MAX is ' +
      're-measured (RETRIES, bounded by TIME_BUDGET); the report says how many recorded runs are still disturbed. Bench ' +
      'processes run at nice NICE.',
    '- **Bounded and local.** Every load run has a duration and a hard timeout; every wait has a deadline; all traffic is on ' +
      '127.0.0.1; every process the bench starts is recorded with its PID and start time and stopped by PID on exit, error, ' +
      "SIGINT or SIGTERM. Ports come from below the kernel's ephemeral range.",
    '',
  );
  lines.push('## Setup', '');
  lines.push(`- Machine: ${r.facts.cpu}; kernel ${r.facts.kernel}; ${r.facts.os}; loopback only.`);
  lines.push('- Versions:');
  for (const [k, v] of Object.entries(r.facts.versions)) lines.push(`  - ${k}: \`${v}\``);
  lines.push(`- Certificates: ${r.pki.description}.`);
  lines.push(
    '- Every proxy single-threaded: HAProxy `nbthread 1`; nginx `worker_processes 1` (master + one worker; app, client and ' +
      'server are separate nginx instances); Remora one event loop per `remora proxy` process. ' +
      (r.knobs.ACCESS_LOGS === '1'
        ? 'Access logs on for the Remora pairs only (a JSON line per request on each side, to a file; ACCESS_LOGS=1), off for HAProxy and nginx. '
        : r.knobs.ACCESS_LOGS === 'text'
          ? `Access logs on for the Remora pairs only (a line per request on each side in the TextFormat \`${BENCH_TEXT_FORMAT}\`, to a file; ACCESS_LOGS=text), off for HAProxy and nginx. `
          : 'No access logs. ') +
      'HAProxy ' +
      '`http-reuse always` and nginx upstream `keepalive` so both share pooled upstream connections like a sidecar.',
  );
  lines.push(
    '- Remora pairs run as a user would run them: `node bin/remora.js proxy --static-config <snapshot.json> --admin <port>` ' +
      "with a `ProxySnapshot` (lib/proxy-api) per side — web's proxy has one upstream `api` (its endpoint is api's proxy, " +
      "destination SPIFFE ID checked), api's proxy forwards to the app; intentions `{ revision: 1, defaultPolicy: deny, " +
      'intentions: [web → api allow] }`; default resilience settings (retries, budgets, outlier ejection, circuit breakers); ' +
      'tracing export off (no collector in the bench).',
  );
  lines.push('');
  lines.push('## Exact commands', '');
  lines.push('```', `${knobLine(r.knobs).replace(/ OUT=\S+/, '')} npm run bench`, '```', '');
  lines.push(...r.commands);
  return `${lines
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd()}\n`;
}

main()
  .then(() => cleanup())
  .catch(async (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    await cleanup();
    process.exitCode = 1;
  });
