import type { Command } from 'commander';
import { devSchema } from '../../lib/config/index.ts';
import { loadProgramConfig, notBuilt, type CliContext } from '../context.ts';

export function registerDev(program: Command, ctx: CliContext): void {
  program
    .command('dev')
    .description(
      'run a whole demo mesh on this machine: catalog, nats-server, control, agent, demo services',
    )
    .option('-c, --config <file>', 'JSON config file')
    .option('--otlp-endpoint <url>', 'where traces go (default http://127.0.0.1:4318/v1/traces)')
    .option('--log-level <level>', 'minimum log level')
    .action((opts: { config?: string; otlpEndpoint?: string; logLevel?: string }) => {
      loadProgramConfig(devSchema, ctx, opts.config, {
        otlpEndpoint: opts.otlpEndpoint,
        'log.level': opts.logLevel,
      });
      notBuilt('dev', 8);
    });
}
