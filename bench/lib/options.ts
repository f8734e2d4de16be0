// Benchmark knobs: environment variables, overridable by flags (`--duration 10` or
// `--duration=10` sets DURATION). Defaults keep `npm run bench` to about five minutes.

export const KNOBS = {
  SCENARIOS: {
    default: 'dataplane,control,routing,consul,agent',
    doc: 'scenarios to run, comma-separated (also: scale — 50 proxies fed by the bench instead of an agent)',
  },
  PATHS: {
    default: 'direct,haproxy,nginx,remora-http,remora-tcp,remora-http2',
    doc: 'data-plane paths (direct-h2c is added when a pair is driven over h2c)',
  },
  DURATION: { default: '3', doc: 'seconds per measured throughput run' },
  LAT_DURATION: { default: '3', doc: 'seconds per measured fixed-rate latency run' },
  WARMUP: { default: '1', doc: 'seconds of unrecorded load before each throughput run' },
  PREWARM: { default: '1', doc: 'seconds of unrecorded load per path before rep 1' },
  REPS: { default: '3', doc: 'repeats per path (order alternates forward/reverse)' },
  CONNS: { default: '32', doc: 'connections for throughput and latency runs' },
  RATE: { default: '0', doc: 'fixed request rate of the latency runs; 0 = half the slowest pair' },
  RATE_CAP: { default: '5000', doc: 'upper bound of the automatic rate' },
  PIN: { default: '1', doc: 'pin load generators and the system under test to separate cores' },
  LOADGEN_CPU: { default: '0', doc: 'core of the load generators and the orchestrator' },
  SUT_CPU: { default: '1', doc: 'core of the app and every proxy' },
  NICE: { default: '-15', doc: 'nice value of every bench process' },
  QUIET_PCT: { default: '10', doc: 'before each run, wait until all-CPU busy ≤ this %' },
  QUIET_MAX_WAIT: { default: '5', doc: '… but at most this many seconds' },
  FOREIGN_MAX: { default: '8', doc: 'a run is disturbed above this many pp of foreign user CPU' },
  RETRIES: { default: '1', doc: 're-measures of a disturbed run' },
  TIME_BUDGET: {
    default: '200',
    doc: 'seconds of data-plane measuring after which no waits/retries happen',
  },
  SIGN_SECONDS: { default: '3', doc: 'seconds of the certificate-signing throughput run' },
  CONSUL_SERVICES: { default: '1000', doc: 'services (× 3 instances) in the catalog scenario' },
  CONSUL_BUDGET: {
    default: '30',
    doc: 'seconds of catalog registration after which it is measured at the size reached',
  },
  SCALE_PROXIES: { default: '50', doc: 'proxies on one host in the scale scenario' },
  SCALE_BUDGET: {
    default: '90',
    doc: 'seconds for the scale proxies to come up; late ones are left out',
  },
  AGENT_PROXIES: { default: '50', doc: 'local services (one proxy each) of the agent scenario' },
  AGENT_BUDGET: {
    default: '120',
    doc: "seconds for the agent scenario's proxies to be registered and ready",
  },
  OUT: { default: 'docs/benchmarks.md', doc: 'where the report goes' },
  KEEP_TMP: { default: '0', doc: 'keep the run directory (configs, logs, certificates)' },
  ACCESS_LOGS: {
    default: '0',
    doc: '1: the Remora pairs write access logs to files in the run directory (what they cost); text: the same in a TextFormat of Envoy operators',
  },
} as const;

export type KnobName = keyof typeof KNOBS;
export type Knobs = Record<KnobName, string>;

export function readKnobs(env: NodeJS.ProcessEnv, argv: string[]): Knobs {
  const out = {} as Knobs;
  for (const k of Object.keys(KNOBS) as KnobName[]) out[k] = env[k] ?? KNOBS[k].default;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      out.SCENARIOS = 'help';
      continue;
    }
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(a);
    if (!m)
      throw new Error(`unexpected argument ${JSON.stringify(a)}; use --name value (see --help)`);
    const name = m[1]!.toUpperCase().replaceAll('-', '_') as KnobName;
    if (!(name in KNOBS)) throw new Error(`unknown option --${m[1]}; see --help`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new Error(`option --${m[1]} needs a value`);
    out[name] = value;
  }
  return out;
}

export function num(knobs: Knobs, k: KnobName): number {
  const v = Number(knobs[k]);
  if (!Number.isFinite(v)) throw new Error(`${k}=${JSON.stringify(knobs[k])} is not a number`);
  return v;
}

export function helpText(): string {
  const lines = ['npm run bench [-- --name value ...]   (or NAME=value npm run bench)', ''];
  for (const [k, v] of Object.entries(KNOBS))
    lines.push(`  ${k.padEnd(16)} ${v.doc} (default ${v.default})`);
  return lines.join('\n');
}

/** The knob line for the report (only values that differ from defaults are marked). */
export function knobLine(knobs: Knobs): string {
  return (Object.keys(KNOBS) as KnobName[])
    .filter((k) => k !== 'OUT')
    .map(
      (k) =>
        `${k}=${knobs[k].includes(' ') || knobs[k].includes(',') ? `"${knobs[k]}"` : knobs[k]}`,
    )
    .join(' ');
}

/** A run shorter than the defaults is a smoke run; the report says so at the top. */
export function isSmoke(knobs: Knobs): boolean {
  return (
    num(knobs, 'DURATION') < Number(KNOBS.DURATION.default) ||
    num(knobs, 'LAT_DURATION') < Number(KNOBS.LAT_DURATION.default) ||
    num(knobs, 'REPS') < Number(KNOBS.REPS.default)
  );
}
