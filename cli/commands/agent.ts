import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { agentSchema } from '../../lib/config/index.ts';
import { createLogger } from '../../lib/log/index.ts';
import { createHostAgent } from '../../agent/index.ts';
import { warmProxyCompileCache } from '../../agent/spawn.ts';
import { loadProgramConfig, type CliContext } from '../context.ts';

/** A file whose presence at stop time keeps the proxies running once (upgrade restarts). */
export const KEEP_PROXIES_ONCE_FILE = 'keep-proxies-once';

export function registerAgent(program: Command, ctx: CliContext): void {
  program
    .command('agent')
    .description(
      "run the host agent: register this host's services, obtain certificates, supervise one proxy per instance",
    )
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora agent)')
    .option('--config-dir <dir>', 'directory of Consul-format service definitions')
    .option('--data-dir <dir>', 'directory for keys, certificates, pid files and the agent socket')
    .option('--node <name>', "this host's node name")
    .option(
      '--keep-proxies',
      'on stop, leave proxies and registrations running for the next agent to adopt',
    )
    .option('--log-level <level>', 'minimum log level')
    .action(
      async (opts: {
        config?: string;
        configDir?: string;
        dataDir?: string;
        node?: string;
        keepProxies?: boolean;
        logLevel?: string;
      }) => {
        // before any proxy starts, so that none of them loads the TypeScript stripper
        warmProxyCompileCache();
        const config = loadProgramConfig(agentSchema, ctx, opts.config, {
          'log.level': opts.logLevel,
          configDir: opts.configDir,
          dataDir: opts.dataDir,
          node: opts.node,
          keepProxies: opts.keepProxies,
        });
        const logger = createLogger({
          component: 'agent',
          level: config.log.level,
          base: { node: config.node, pid: process.pid },
        });
        const host = createHostAgent({ config, logger, env: ctx.env });
        const stopped = new Promise<void>((resolve) => {
          if (ctx.stopSignal.aborted) resolve();
          ctx.stopSignal.addEventListener('abort', () => resolve(), { once: true });
        });
        const unsubscribe = ctx.onReload(() => {
          logger.info('SIGHUP: reloading service definitions');
          void host.reload();
        });
        try {
          await host.start();
          await stopped;
        } finally {
          unsubscribe();
          const once = join(config.dataDir, KEEP_PROXIES_ONCE_FILE);
          const keepOnce = existsSync(once);
          if (keepOnce) rmSync(once, { force: true });
          await host.stop({ keepProxies: config.keepProxies || keepOnce });
        }
      },
    );
}
