import type { Command } from 'commander';
import { cliSchema } from '../../lib/config/schemas/cli.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import {
  parseLookback,
  queryJaegerServices,
  queryJaegerTrace,
  queryJaegerTraces,
  renderTrace,
} from '../../lib/telemetry/jaeger.ts';
import { loadProgramConfig, print, type CliContext } from '../context.ts';

interface TracesOptions {
  config?: string;
  jaegerUrl?: string;
  limit: string;
  lookback: string;
  json?: boolean;
  id?: string;
  errors?: boolean;
}

export function registerTraces(program: Command, ctx: CliContext): void {
  program
    .command('traces [service]')
    .description("recent traces for a service from Jaeger's query API, as a terminal waterfall")
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora cli)')
    .option('--jaeger-url <url>', 'Jaeger query service (default from config: jaegerUrl)')
    .option('-n, --limit <count>', 'most traces to show', '10')
    .option('--lookback <duration>', 'how far back to look: 30s, 15m, 1h, 2d', '1h')
    .option('--errors', 'only traces with a failed span')
    .option('--id <traceId>', 'show one trace by its ID (from a traceparent or a log line)')
    .option('--json', "print Jaeger's trace objects as JSON instead of the waterfall")
    .addHelpText(
      'after',
      '\nExamples:\n  remora traces web --lookback 15m -n 3\n  remora traces web --errors\n  remora traces --id 4bf92f3577b34da6a3ce929d0e0e4736\n\nEach trace ends with its link in the Jaeger UI.',
    )
    .action(async (service: string | undefined, opts: TracesOptions) => {
      const config = loadProgramConfig(cliSchema, ctx, opts.config, {
        jaegerUrl: opts.jaegerUrl,
      });
      const jaegerUrl = config.jaegerUrl;
      if (opts.id !== undefined) {
        const traceId = opts.id.trim().toLowerCase();
        if (!/^[0-9a-f]{16}$|^[0-9a-f]{32}$/.test(traceId)) {
          throw new RemoraError(
            'REMORA_E_USAGE',
            `--id ${opts.id} is not a trace ID; give the 32 hex digits after "00-" in a traceparent`,
            { option: 'id', value: opts.id },
          );
        }
        const trace = await queryJaegerTrace({ jaegerUrl }, traceId);
        print(ctx, opts.json ? JSON.stringify(trace, null, 2) : renderTrace(trace, { jaegerUrl }));
        return;
      }
      if (service === undefined) {
        throw new RemoraError(
          'REMORA_E_USAGE',
          'name a service (remora traces web) or a trace (remora traces --id <traceId>)',
          { option: 'service' },
        );
      }
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) {
        throw new RemoraError(
          'REMORA_E_USAGE',
          `--limit ${opts.limit} is not a whole number of at least 1; e.g. --limit 5`,
          { option: 'limit', value: opts.limit },
        );
      }
      const lookbackMs = parseLookback(opts.lookback);
      if (lookbackMs === undefined) {
        throw new RemoraError(
          'REMORA_E_USAGE',
          `--lookback ${opts.lookback} is not a duration; use a number and a unit: 30s, 15m, 1h, 2d`,
          { option: 'lookback', value: opts.lookback },
        );
      }
      const traces = await queryJaegerTraces({
        jaegerUrl,
        service,
        limit,
        lookbackMs,
        now: Date.now(),
        errorsOnly: opts.errors === true,
      });
      if (opts.json) {
        print(ctx, JSON.stringify(traces, null, 2));
        return;
      }
      if (traces.length === 0) {
        const known = await queryJaegerServices({ jaegerUrl }).catch(() => undefined);
        let hint = '';
        if (known && !known.includes(service)) {
          hint = known.length
            ? `\nJaeger has no spans from a service named "${service}"; it knows: ${known.join(', ')}`
            : `\nJaeger has received no spans at all yet; check that programs export to its OTLP port (tracing.endpoint, e.g. http://127.0.0.1:4318/v1/traces)`;
        }
        print(
          ctx,
          `no ${opts.errors ? 'failed ' : ''}traces of ${service} in the last ${opts.lookback} at ${jaegerUrl}; try a longer --lookback, or check tracing.sampleRatio${hint}`,
        );
        return;
      }
      print(ctx, traces.map((t) => renderTrace(t, { jaegerUrl })).join('\n\n'));
    });
}
