import type { Command } from 'commander';
import { agentSchema } from '../../lib/config/index.ts';
import { loadProgramConfig, notBuilt, type CliContext } from '../context.ts';

export function registerAgent(program: Command, ctx: CliContext): void {
  program
    .command('agent')
    .description(
      "run the host agent: register this host's services, obtain certificates, supervise one proxy per instance",
    )
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora agent)')
    .option('--log-level <level>', 'minimum log level')
    .action((opts: { config?: string; logLevel?: string }) => {
      loadProgramConfig(agentSchema, ctx, opts.config, { 'log.level': opts.logLevel });
      notBuilt('agent', 5);
    });
}
