import type { Command } from 'commander';
import module from 'node:module';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { proxySchema } from '../../lib/config/index.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import { createLogger, logError } from '../../lib/log/index.ts';
import { createClock } from '../../lib/util/index.ts';
import { decodeProxySnapshot } from '../../lib/proxy-api/index.ts';
import { createProxy } from '../../proxy/proxy.ts';
import { startAdminServer } from '../../proxy/admin/server.ts';
import { startAgentLink } from '../../proxy/agent-link.ts';
import { loadProgramConfig, type CliContext } from '../context.ts';

function readSnapshotFile(path: string) {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_CONFIG_FILE_UNREADABLE',
      `cannot read the static snapshot ${path}: ${(err as Error).message}`,
      { file: path },
    );
  }
  return decodeProxySnapshot(raw);
}

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
    .option(
      '--takeover',
      "take over from the instance's running proxy: share its ports until it has drained (the agent's restart-proxies)",
    )
    .option('--log-level <level>', 'minimum log level')
    .action(
      async (opts: {
        config?: string;
        instance?: string;
        agentSocket?: string;
        staticConfig?: string;
        admin?: number;
        logLevel?: string;
        takeover?: boolean;
      }) => {
        const config = loadProgramConfig(proxySchema, ctx, opts.config, {
          instance: opts.instance,
          agentSocket: opts.agentSocket,
          staticConfig: opts.staticConfig,
          'admin.port': opts.admin,
          'log.level': opts.logLevel,
        });
        if (config.agentSocket === '' && config.staticConfig === '')
          throw new RemoraError(
            'REMORA_E_USAGE',
            'give --agent-socket <path> or --static-config <file>',
            {},
          );
        const staticPath = config.staticConfig === '' ? '' : resolve(ctx.cwd, config.staticConfig);
        const first = staticPath === '' ? null : readSnapshotFile(staticPath);
        const instance = config.instance || first?.instance.id || '';
        if (instance === '') throw new RemoraError('REMORA_E_USAGE', 'give --instance <id>', {});
        const logger = createLogger({
          component: 'proxy',
          level: config.log.level,
          base: { instance },
        });
        const clock = createClock();
        const proxy = createProxy({
          logger,
          clock,
          limits: config.http,
          takeover: opts.takeover === true,
        });
        const admin = await startAdminServer({
          host: config.admin.host,
          port: config.admin.port,
          proxy,
        });
        logger.info({ adminPort: admin.port }, 'admin listening');
        // write the compiled code of everything loaded so far to Node's on-disk cache now rather
        // than at exit: proxies started after this one do not load the TypeScript stripper
        module.flushCompileCache?.();

        let drainDeadline = config.drainTimeoutMs;
        let stop: () => void = () => {};
        const stopped = new Promise<void>((r) => (stop = r));
        if (ctx.stopSignal.aborted) stop();
        ctx.stopSignal.addEventListener('abort', () => stop(), { once: true });

        let link: ReturnType<typeof startAgentLink> | null = null;
        let unsubscribe = () => {};
        if (first !== null) {
          await proxy.apply(first);
          unsubscribe = ctx.onReload(() => {
            try {
              void proxy
                .apply(readSnapshotFile(staticPath))
                .catch((err: unknown) => logError(logger, err, 'reload refused', 'warn'));
            } catch (err) {
              logError(logger, err, 'reload refused', 'warn');
            }
          });
        } else {
          link = startAgentLink({
            socketPath: resolve(ctx.cwd, config.agentSocket),
            instance,
            adminPort: () => admin.port,
            pid: process.pid,
            proxy,
            logger,
            clock,
            random: Math.random,
            onDrain: (deadlineMs) => {
              drainDeadline = deadlineMs;
              stop();
            },
          });
        }
        await stopped;
        logger.info({ deadlineMs: drainDeadline }, 'stopping: draining connections');
        const drained = proxy.drain(drainDeadline);
        link?.reportStatus();
        await drained;
        unsubscribe();
        link?.close();
        await admin.close();
        await proxy.close();
        logger.info('stopped');
      },
    );
}
