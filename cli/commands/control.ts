import type { Command } from 'commander';
import { controlSchema } from '../../lib/config/index.ts';
import { loadProgramConfig, notBuilt, type CliContext } from '../context.ts';

export function registerControl(program: Command, ctx: CliContext): void {
  program
    .command('control')
    .description(
      'run the control plane: CA signer, intentions, node tokens (serves NATS queue group remora-control)',
    )
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora control)')
    .option('--log-level <level>', 'minimum log level')
    .action((opts: { config?: string; logLevel?: string }) => {
      loadProgramConfig(controlSchema, ctx, opts.config, { 'log.level': opts.logLevel });
      notBuilt('control', 4);
    });
}
