import type { Command } from 'commander';
import { proxySchema } from '../../lib/config/index.ts';
import { loadProgramConfig, notBuilt, type CliContext } from '../context.ts';

export function registerProxy(program: Command, ctx: CliContext): void {
  program
    .command('proxy')
    .description('run one data-plane proxy for a service instance (normally spawned by the agent)')
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora proxy)')
    .option('--instance <id>', 'service instance ID')
    .option('--agent-socket <path>', "agent's Unix socket")
    .option(
      '--static-config <file>',
      'serve a fixed snapshot instead of the agent stream (debugging)',
    )
    .option('--admin <port>', 'admin port on 127.0.0.1', (v) => Number(v))
    .option('--log-level <level>', 'minimum log level')
    .action(
      (opts: {
        config?: string;
        instance?: string;
        agentSocket?: string;
        staticConfig?: string;
        admin?: number;
        logLevel?: string;
      }) => {
        loadProgramConfig(proxySchema, ctx, opts.config, {
          instance: opts.instance,
          agentSocket: opts.agentSocket,
          staticConfig: opts.staticConfig,
          'admin.port': opts.admin,
          'log.level': opts.logLevel,
        });
        notBuilt('proxy', 6);
      },
    );
}
