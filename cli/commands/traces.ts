import type { Command } from 'commander';
import { cliSchema } from '../../lib/config/schemas/cli.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import {
  parseLookback,
  queryJaegerServices,
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
}

export function registerTraces(program: Command, ctx: CliContext): void {
  program
    .command('traces <service>')
    .description("recent traces for a service from Jaeger's query API, as a terminal waterfall")
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora cli)')
    .option('--jaeger-url <url>', 'Jaeger query service (default from config: jaegerUrl)')
    .option('-n, --limit <count>', 'most traces to show', '10')
    .option('--lookback <duration>', 'how far back to look: 30s, 15m, 1h, 2d', '1h')
    .option('--json', "print Jaeger's trace objects as JSON instead of the waterfall")
    .addHelpText(
      'after',
      '\nExample:\n  remora traces web --lookback 15m -n 3\n\nEach trace ends with its link in the Jaeger UI.',
    )
    .action(async (service: string, opts: TracesOptions) => {
      const config = loadProgramConfig(cliSchema, ctx, opts.config, {
        jaegerUrl: opts.jaegerUrl,
      });
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
      const jaegerUrl = config.jaegerUrl;
      const traces = await queryJaegerTraces({
        jaegerUrl,
        service,
        limit,
        lookbackMs,
        now: Date.now(),
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
          `no traces of ${service} in the last ${opts.lookback} at ${jaegerUrl}; try a longer --lookback, or check tracing.sampleRatio${hint}`,
        );
        return;
      }
      print(ctx, traces.map((t) => renderTrace(t, { jaegerUrl })).join('\n\n'));
    });
}
