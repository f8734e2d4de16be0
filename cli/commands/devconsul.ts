import type { Command } from 'commander';
import { devconsulSchema } from '../../lib/config/index.ts';
import { loadProgramConfig, notBuilt, type CliContext } from '../context.ts';

export function registerDevconsul(program: Command, ctx: CliContext): void {
  program
    .command('devconsul')
    .description(
      'run the embedded Consul-compatible catalog (development and tests; production uses real Consul)',
    )
    .option('-c, --config <file>', 'JSON config file')
    .option('--listen <host:port>', 'HTTP API address (default 127.0.0.1:8500)')
    .option('--log-level <level>', 'minimum log level')
    .action((opts: { config?: string; listen?: string; logLevel?: string }) => {
      loadProgramConfig(devconsulSchema, ctx, opts.config, {
        listen: opts.listen,
        'log.level': opts.logLevel,
      });
      notBuilt('devconsul', 3);
    });
}
