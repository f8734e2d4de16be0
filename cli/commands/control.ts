import { hostname } from 'node:os';
import type { Command } from 'commander';
import { cliSchema, controlSchema, type ConfigOf } from '../../lib/config/index.ts';
import { RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import { createLogger, logError, type Logger } from '../../lib/log/index.ts';
import { connectNats, type NatsConnection } from '../../lib/nats/index.ts';
import { backoffDelay, createClock } from '../../lib/util/index.ts';
import { loadProgramConfig, type CliContext } from '../context.ts';

type NatsKeys = ConfigOf<typeof controlSchema.tree>['nats'];

function natsOptions(nats: NatsKeys, name: string, logger: Logger) {
  return {
    servers: nats.servers,
    ...(nats.token ? { token: nats.token } : {}),
    ...(nats.credsFile ? { credsFile: nats.credsFile } : {}),
    tls: { caFile: nats.tlsCaFile, certFile: nats.tlsCertFile, keyFile: nats.tlsKeyFile },
    ...(nats.inboxPrefix ? { inboxPrefix: nats.inboxPrefix } : {}),
    name,
    logger,
  };
}

export function registerControl(program: Command, ctx: CliContext): void {
  program
    .command('control')
    .description(
      'run the control plane: CA signer, intentions, node tokens (serves NATS queue group remora-control)',
    )
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora control)')
    .option('--log-level <level>', 'minimum log level')
    .option('--metrics-port <port>', 'Prometheus /metrics port on 127.0.0.1 (0: off)')
    .action(async (opts: { config?: string; logLevel?: string; metricsPort?: string }) => {
      // heavy modules load only when this command runs, keeping every other `remora` fast
      const [
        { createControl },
        { createConsulClient, consulClientOptions },
        { createTracing, parseOtlpHeaders },
      ] = await Promise.all([
        import('../../control/index.ts'),
        import('../../lib/consul/index.ts'),
        import('../../lib/telemetry/index.ts'),
      ]);
      const config = loadProgramConfig(controlSchema, ctx, opts.config, {
        'log.level': opts.logLevel,
        metricsPort: opts.metricsPort === undefined ? undefined : Number(opts.metricsPort),
      });
      const logger = createLogger({
        component: 'control',
        level: config.log.level,
        base: { datacenter: config.datacenter, pid: process.pid },
      });
      const tracing = createTracing({
        serviceName: 'remora-control',
        instanceId: `${hostname()}:${process.pid}`,
        component: 'control',
        endpoint: config.tracing.endpoint,
        headers: parseOtlpHeaders(config.tracing.headers),
        sampleRatio: config.tracing.sampleRatio,
        timeoutMs: config.tracing.timeoutMs,
        maxQueueSize: config.tracing.maxQueueSize,
        logger,
      });
      const nc = await connectUntilStopped(
        natsOptions(config.nats, `remora-control@${hostname()}`, logger),
        ctx.stopSignal,
        logger,
      );
      if (nc === null) {
        await tracing.shutdown();
        logger.info('stopped before NATS answered; nothing to clean up');
        return;
      }
      const consul = createConsulClient(consulClientOptions(config.consul, logger));
      const control = createControl({
        // the schema restricts defaultPolicy to allow|deny
        config: {
          ...config,
          defaultPolicy: config.defaultPolicy as 'allow' | 'deny',
          consulDnsDomains: config.consul.dnsDomains,
        },
        nats: nc,
        consul,
        clock: createClock(),
        logger,
        tracing: { tracer: tracing.tracer, extract: (h) => tracing.extract(h) },
      });
      const stopped = new Promise<void>((resolve) => {
        if (ctx.stopSignal.aborted) resolve();
        ctx.stopSignal.addEventListener('abort', () => resolve(), { once: true });
      });
      await Promise.race([control.start(), stopped]);
      await stopped;
      logger.info('stopping: finishing in-flight requests');
      await control.stop();
      await nc.drain().catch(() => undefined);
      consul.close();
      await tracing.shutdown();
      logger.info('control plane stopped');
    });
}

/**
 * A service keeps trying until NATS is there (systemd and compose may start us first), with
 * jittered backoff, and a stop signal ends the wait at once (resolves null). An unreadable
 * credentials file is a configuration error and fails at once.
 */
async function connectUntilStopped(
  options: ReturnType<typeof natsOptions>,
  stop: AbortSignal,
  logger: Logger,
): Promise<NatsConnection | null> {
  logger.info({ servers: options.servers }, 'connecting to NATS');
  for (let attempt = 0; !stop.aborted; attempt++) {
    try {
      return await connectNats({ ...options, timeoutMs: 3000 });
    } catch (err) {
      const e = toRemoraError(err);
      if ((e.details as { file?: string } | undefined)?.file !== undefined) throw e;
      const delay = backoffDelay(attempt, { baseMs: 500, maxMs: 10_000, random: Math.random });
      logError(logger, e, `NATS not reachable yet; trying again in ${delay} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, delay);
        stop.addEventListener('abort', done, { once: true });
        function done(): void {
          clearTimeout(timer);
          stop.removeEventListener('abort', done);
          resolve();
        }
      });
    }
  }
  return null;
}

/** What the operator subcommands (intention, token, ca) share: CLI config and a NATS connection. */
export interface OperatorSession {
  config: ConfigOf<typeof cliSchema.tree>;
  nc: NatsConnection;
  /** The operator token, or a coded error telling how to set it. */
  operatorToken(): string;
  /** Request options from the config (`nats.requestTimeoutMs`). */
  req: { timeoutMs: number };
}

export function addOperatorOptions(cmd: Command): Command {
  return cmd.option(
    '-c, --config <file>',
    'JSON config file (see docs/config.md, section remora cli)',
  );
}

/** Loads the CLI config, connects to NATS, runs `fn`, closes the connection. */
export async function withOperatorSession<T>(
  ctx: CliContext,
  opts: { config?: string },
  fn: (s: OperatorSession) => Promise<T>,
): Promise<T> {
  const config = loadProgramConfig(cliSchema, ctx, opts.config);
  const logger = createLogger({ component: 'cli', level: 'error' });
  const nc = await connectNats({
    ...natsOptions(config.nats, 'remora-cli', logger),
    timeoutMs: 3000,
  });
  try {
    return await fn({
      config,
      nc,
      req: { timeoutMs: config.nats.requestTimeoutMs },
      operatorToken() {
        if (!config.operatorToken)
          throw new RemoraError(
            'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED',
            'no operator token configured for the CLI; set REMORA_CLI_OPERATOR_TOKEN (or operatorToken in --config) to the value control uses',
          );
        return config.operatorToken;
      },
    });
  } finally {
    await nc.close();
  }
}
