import type { Command } from 'commander';
import { devconsulSchema } from '../../lib/config/index.ts';
import { startDevConsul } from '../../lib/devconsul/index.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import { createLogger } from '../../lib/log/index.ts';
import { loadProgramConfig, print, type CliContext } from '../context.ts';

/** Splits "host:port" (IPv6 as "[::1]:8500"). */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || port > 65535) {
    throw new RemoraError(
      'REMORA_E_DEVCONSUL_BAD_LISTEN',
      `--listen ${JSON.stringify(listen)} is not host:port; use e.g. --listen 127.0.0.1:8500`,
      { listen },
    );
  }
  return { host: m[1], port };
}

export function registerDevconsul(program: Command, ctx: CliContext): void {
  program
    .command('devconsul')
    .description(
      'run the embedded Consul-compatible catalog (development and tests; production uses real Consul)',
    )
    .option('-c, --config <file>', 'JSON config file')
    .option('--listen <host:port>', 'HTTP API address (default 127.0.0.1:8500)')
    .option('--log-level <level>', 'minimum log level')
    .action(async (opts: { config?: string; listen?: string; logLevel?: string }) => {
      const config = loadProgramConfig(devconsulSchema, ctx, opts.config, {
        listen: opts.listen,
        'log.level': opts.logLevel,
      });
      const { host, port } = parseListen(config.listen);
      const logger = createLogger({ component: 'devconsul', level: config.log.level });
      const dc = await startDevConsul({
        host,
        port,
        nodeName: config.nodeName,
        datacenter: config.datacenter,
        logger,
      });
      print(ctx, `remora devconsul: Consul-compatible catalog listening on ${dc.url}`);
      if (!ctx.stopSignal.aborted) {
        await new Promise<void>((resolve) =>
          ctx.stopSignal.addEventListener('abort', () => resolve(), { once: true }),
        );
      }
      await dc.close();
      logger.info('embedded catalog stopped');
    });
}
