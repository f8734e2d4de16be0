// Load generators, run as separate processes on the loadgen core: wrk (closed loop, HTTP/1.1 —
// throughput) and bench/loadgen/open-loop.ts (open loop at a fixed rate — latency; closed loop
// over HTTP/2, where wrk cannot go).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ProcessRegistry, Started } from './procs.ts';

export const WRK_SCRIPT = fileURLToPath(new URL('../conf/wrk-summary.lua', import.meta.url));
export const GENERATOR = fileURLToPath(new URL('../loadgen/open-loop.ts', import.meta.url));

export interface LoadSpec {
  tool: 'wrk' | 'generator';
  mode: 'open' | 'closed';
  transport: 'h1' | 'h2c';
  port: number;
  conns: number;
  /** open mode only */
  rate: number;
  durationS: number;
}

export interface LoadOutcome {
  requests: number;
  rps: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  errors: number;
  /** open mode: p99 of the generator's own send lag (µs). */
  sendLagP99Us: number;
}

export function loadCommand(spec: LoadSpec): { cmd: string; args: string[] } {
  if (spec.tool === 'wrk') {
    if (spec.transport !== 'h1' || spec.mode !== 'closed')
      throw new Error('wrk: HTTP/1.1 closed loop only');
    return {
      cmd: 'wrk',
      args: [
        '-t1',
        `-c${spec.conns}`,
        `-d${spec.durationS}s`,
        '--latency',
        '-s',
        WRK_SCRIPT,
        `http://127.0.0.1:${spec.port}/`,
      ],
    };
  }
  const json = JSON.stringify({
    mode: spec.mode,
    transport: spec.transport,
    port: spec.port,
    conns: spec.conns,
    rate: spec.rate,
    durationS: spec.durationS,
    drainS: 5,
  });
  return { cmd: process.execPath, args: [GENERATOR, json] };
}

/** A printable form of the command (for the report). */
export function describeLoad(spec: LoadSpec, portName = '<port>'): string {
  const { cmd, args } = loadCommand({ ...spec, port: 0 });
  const shown = args.map((a) =>
    a.replace('127.0.0.1:0', `127.0.0.1:${portName}`).replace('"port":0', `"port":${portName}`),
  );
  const bin = cmd === process.execPath ? 'node' : cmd;
  return [bin, ...shown.map((a) => (a.includes(' ') || a.includes('"') ? `'${a}'` : a))]
    .join(' ')
    .replace(WRK_SCRIPT, 'bench/conf/wrk-summary.lua')
    .replace(GENERATOR, 'bench/loadgen/open-loop.ts');
}

export function startLoad(registry: ProcessRegistry, name: string, spec: LoadSpec): Started {
  const { cmd, args } = loadCommand(spec);
  return registry.start(name, cmd, args, { where: 'loadgen' });
}

/** Reads the one JSON result line the load process printed to its log. */
export function readLoadOutcome(started: Started, spec: LoadSpec): LoadOutcome {
  const text = readFileSync(started.logFile, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('{'));
  if (!line)
    throw new Error(`${spec.tool} printed no result (log ${started.logFile}): ${text.slice(-400)}`);
  const r = JSON.parse(line) as Record<string, number>;
  if (spec.tool === 'wrk') {
    const dur = (r.durationUs ?? 0) / 1e6;
    return {
      requests: r.requests ?? 0,
      rps: dur > 0 ? (r.requests ?? 0) / dur : 0,
      p50Us: r.p50Us ?? -1,
      p90Us: r.p90Us ?? -1,
      p99Us: r.p99Us ?? -1,
      p999Us: r.p999Us ?? -1,
      maxUs: r.maxUs ?? -1,
      errors:
        (r.errConnect ?? 0) +
        (r.errRead ?? 0) +
        (r.errWrite ?? 0) +
        (r.errStatus ?? 0) +
        (r.errTimeout ?? 0),
      sendLagP99Us: -1,
    };
  }
  return {
    requests: r.completed ?? 0,
    rps: r.rps ?? 0,
    p50Us: r.p50Us ?? -1,
    p90Us: r.p90Us ?? -1,
    p99Us: r.p99Us ?? -1,
    p999Us: r.p999Us ?? -1,
    maxUs: r.maxUs ?? -1,
    errors: (r.errors ?? 0) + (r.timeouts ?? 0) + (r.non2xx ?? 0),
    sendLagP99Us: r.sendLagP99Us ?? -1,
  };
}
