import type { Command } from 'commander';
import { devSchema } from '../../lib/config/index.ts';
import { createLogger } from '../../lib/log/index.ts';
import { loadProgramConfig, print, type CliContext } from '../context.ts';

export function registerDev(program: Command, ctx: CliContext): void {
  program
    .command('dev')
    .description(
      'run a whole demo mesh on this machine: catalog, nats-server, control, agent, demo services',
    )
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora dev)')
    .option(
      '--otlp-endpoint <url>',
      'where traces go (default http://127.0.0.1:4318/v1/traces; empty disables)',
    )
    .option('--keep-work-dir', 'keep logs, keys and sockets after stopping')
    .option('--log-level <level>', 'minimum log level')
    .action(
      async (opts: {
        config?: string;
        otlpEndpoint?: string;
        keepWorkDir?: boolean;
        logLevel?: string;
      }) => {
        const config = loadProgramConfig(devSchema, ctx, opts.config, {
          otlpEndpoint: opts.otlpEndpoint,
          keepWorkDir: opts.keepWorkDir,
          'log.level': opts.logLevel,
        });
        const { startDevMesh, renderNextSteps } = await import('../dev/run-dev.ts');
        const logger = createLogger({ component: 'dev', level: config.log.level });
        const mesh = await startDevMesh({ config, env: ctx.env, logger });
        print(ctx, renderNextSteps(mesh, config));
        if (!ctx.stopSignal.aborted) {
          await new Promise<void>((resolve) =>
            ctx.stopSignal.addEventListener('abort', () => resolve(), { once: true }),
          );
        }
        print(ctx, 'remora dev stopping…');
        await mesh.stop();
        print(ctx, 'remora dev stopped; nothing left running');
      },
    );
}
