// A complete host agent from its configuration: Consul client, NATS connection (retried until
// it exists), tracing, real processes and the loopback status endpoint. `remora agent` runs
// one; `remora dev` can embed one in its own process.
import {
  createConsulClient,
  consulClientOptions,
  watchConfigEntries,
  watchConnect,
  watchService,
  watchServices,
} from '../lib/consul/index.ts';
import { connectNats } from '../lib/nats/index.ts';
import { createTracing, parseOtlpHeaders, type Tracing } from '../lib/telemetry/index.ts';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { backoffDelay, createClock, type Clock } from '../lib/util/index.ts';
import type { ConfigOf } from '../lib/config/index.ts';
import type { agentSchema } from '../lib/config/schemas/agent.ts';
import { createAgent, type Agent, type AgentStatus, type StopOptions } from './agent.ts';
import { migrateNote, startAdminServer, type AdminServer } from './admin.ts';
import { dataPaths } from './files.ts';
import {
  createProxyLogRotator,
  pauseProxy,
  resumeProxies,
  type ProxyLogRotator,
} from './proxy-logs.ts';
import { createNatsControlPort } from './control-port.ts';
import { createLazyControlPort } from './lazy-control.ts';
import type { ConsulPort, ControlPort } from './ports.ts';
import {
  DEFAULT_REMORA_BIN,
  createProcessSpawner,
  isProcessAlive,
  isProxyProcess,
  signalProcess,
  type SpawnProxy,
} from './spawn.ts';

export type AgentConfig = ConfigOf<(typeof agentSchema)['tree']>;

export interface HostAgentOptions {
  config: AgentConfig;
  logger: Logger;
  /** Environment passed to proxy processes (the CLI gives process.env). */
  env: Record<string, string | undefined>;
  clock?: Clock;
  random?: () => number;
  /** Replaces process spawning (tests of `remora dev` may run proxies differently). */
  spawnProxy?: SpawnProxy;
  /** Debounce of definition-directory events; 0 turns the watch off. */
  watchDebounceMs?: number;
}

export interface HostAgent {
  start(): Promise<void>;
  reload(): Promise<void>;
  stop(options?: StopOptions): Promise<void>;
  status(): AgentStatus;
  /** Port of the status endpoint once started (null when adminPort could not be bound). */
  adminPort(): number | null;
  readonly agent: Agent;
}

export function createConsulPort(o: {
  address: string;
  token: string;
  caFile: string;
  maxResponseBytes?: number;
  logger: Logger;
  random: () => number;
}): ConsulPort & { close(): void } {
  const client = createConsulClient(consulClientOptions(o, o.logger));
  return {
    registerService: (def) => client.agent.registerService(def),
    deregisterService: (id) => client.agent.deregisterService(id),
    updateTtl: (checkId, status, output) => client.agent.updateTtl(checkId, status, output),
    async agentAddress() {
      const self = (await client.agent.self()) as { Member?: { Addr?: unknown } };
      const addr = self.Member?.Addr;
      return typeof addr === 'string' ? addr : '';
    },
    watchConnect(service, handlers) {
      const w = watchConnect(client, service, {
        onChange: (entries) => handlers.onChange(entries),
        onError: (err) => handlers.onError(err),
        logger: o.logger,
        random: o.random,
      });
      return { stop: () => w.stop() };
    },
    watchService(service, handlers) {
      const w = watchService(client, service, {
        onChange: (entries) => handlers.onChange(entries),
        onError: (err) => handlers.onError(err),
        logger: o.logger,
        random: o.random,
      });
      return { stop: () => w.stop() };
    },
    watchServices(handlers) {
      const w = watchServices(client, {
        onChange: (services) => handlers.onChange(Object.keys(services)),
        onError: (err) => handlers.onError(err),
        logger: o.logger,
        random: o.random,
      });
      return { stop: () => w.stop() };
    },
    watchConfigEntries(kind, handlers) {
      const w = watchConfigEntries(client, kind, {
        onChange: (entries) => handlers.onChange(entries),
        onError: (err) => handlers.onError(err),
        logger: o.logger,
        random: o.random,
      });
      return { stop: () => w.stop() };
    },
    close: () => client.close(),
  };
}

export function createHostAgent(o: HostAgentOptions): HostAgent {
  const { config: c, logger } = o;
  const clock = o.clock ?? createClock();
  const random = o.random ?? Math.random;
  const consulCfg = c.consul as {
    address: string;
    token?: string;
    caFile?: string;
    maxResponseBytes?: number;
  };
  const consul = createConsulPort({
    address: consulCfg.address,
    token: consulCfg.token ?? '',
    caFile: consulCfg.caFile ?? '',
    ...(consulCfg.maxResponseBytes ? { maxResponseBytes: consulCfg.maxResponseBytes } : {}),
    logger: logger.child({ part: 'consul' }),
    random,
  });
  let tracing: Tracing | null = null;
  try {
    tracing = createTracing({
      serviceName: 'remora-agent',
      instanceId: c.node,
      component: 'agent',
      endpoint: c.tracing.endpoint,
      headers: parseOtlpHeaders(c.tracing.headers),
      sampleRatio: c.tracing.sampleRatio,
      timeoutMs: c.tracing.timeoutMs,
      maxQueueSize: c.tracing.maxQueueSize,
      logger,
    });
  } catch (err) {
    logError(logger, err, 'tracing disabled', 'warn');
  }

  // NATS: the first connection is retried here (with backoff) so that an unreachable server
  // never blocks or fails the start; after it, nats.js reconnects forever on its own.
  const servers = c.nats.servers.map(String);
  let closing = false;
  let stopConnecting: () => void = () => undefined;
  let retryTimer: NodeJS.Timeout | null = null;
  const connecting = new Promise<ControlPort>((resolve, reject) => {
    stopConnecting = () => reject(new Error('agent stopping'));
    let attempt = 0;
    const tryOnce = (): void => {
      if (closing) return;
      connectNats({
        servers,
        name: `remora-agent@${c.node}`,
        logger: logger.child({ part: 'nats' }),
        timeoutMs: 2000,
        ...(c.nats.token ? { token: c.nats.token } : {}),
        ...(c.nats.credsFile ? { credsFile: c.nats.credsFile } : {}),
        ...(c.nats.inboxPrefix ? { inboxPrefix: c.nats.inboxPrefix } : {}),
        tls: { caFile: c.nats.tlsCaFile, certFile: c.nats.tlsCertFile, keyFile: c.nats.tlsKeyFile },
      }).then(
        (nc) => {
          if (closing) {
            void nc.close();
            return;
          }
          resolve(
            createNatsControlPort({
              nc,
              datacenter: c.datacenter,
              node: c.node,
              nodeToken: c.nodeToken,
              requestTimeoutMs: c.nats.requestTimeoutMs,
              tracing,
              logger,
            }),
          );
        },
        (err: unknown) => {
          if (attempt % 10 === 0) {
            logError(
              logger,
              new RemoraError(
                'REMORA_E_AGENT_CONTROL_UNAVAILABLE',
                `cannot connect to NATS at ${servers.join(', ')}: ${toRemoraError(err).message}; retrying`,
                { servers },
              ),
              undefined,
              'warn',
            );
          }
          const delay = backoffDelay(attempt, { baseMs: 500, maxMs: 10_000, random });
          attempt += 1;
          retryTimer = clock.setTimeout(tryOnce, delay);
        },
      );
    };
    tryOnce();
  });
  connecting.catch(() => undefined);
  const control = createLazyControlPort(connecting, servers.join(', '));

  const agent = createAgent({
    settings: {
      datacenter: c.datacenter,
      node: c.node,
      configDir: c.configDir,
      dataDir: c.dataDir,
      adminPortBase: c.adminPortBase,
      drainTimeoutMs: c.drainTimeoutMs,
      intentionsRefreshMs: c.intentionsRefreshMs,
      proxyBindAddress: c.proxyBindAddress,
      advertiseAddress: c.advertiseAddress,
      sidecarPortMin: c.sidecarPortMin,
      sidecarPortMax: c.sidecarPortMax,
      checkTtlMs: c.checkTtlMs,
      adoptTimeoutMs: c.adoptTimeoutMs,
      tracing: {
        endpoint: c.tracing.endpoint,
        sampleRatio: c.tracing.sampleRatio,
        headers: parseOtlpHeaders(c.tracing.headers),
      },
      watchDebounceMs: o.watchDebounceMs ?? 150,
      transparentPortMin: c.transparentPortMin,
      transparentPortMax: c.transparentPortMax,
      transparentDerivedMax: c.transparentDerivedMax,
      exposePortMin: c.exposePortMin,
      exposePortMax: c.exposePortMax,
      consulDnsDomains: c.consul.dnsDomains,
      ...(c.transparentProxyUid >= 0 ? { transparentProxyUid: c.transparentProxyUid } : {}),
    },
    consul,
    control,
    processes: {
      spawn:
        o.spawnProxy ??
        createProcessSpawner({
          remoraBin: c.proxyCommand || DEFAULT_REMORA_BIN,
          env: o.env,
          onWarning: (message) =>
            logError(
              logger,
              new RemoraError('REMORA_E_AGENT_CAPABILITY_INHERITED', message),
              undefined,
              'warn',
            ),
        }),
      isAlive: isProcessAlive,
      isProxy: isProxyProcess,
      signal: signalProcess,
    },
    clock,
    random,
    logger,
  });

  let admin: AdminServer | null = null;
  let logs: ProxyLogRotator | null = null;
  return {
    agent,
    async start() {
      await resumeProxies(c.dataDir);
      await agent.start();
      const paths = dataPaths(c.dataDir);
      logs = createProxyLogRotator({
        dataDir: c.dataDir,
        maxBytes: c.proxyLogMaxBytes,
        files: c.proxyLogFiles,
        intervalMs: c.proxyLogCheckMs,
        clock,
        logger,
        pause: (id) => pauseProxy(paths.proxyPid(id), id),
      });
      try {
        admin = await startAdminServer({
          port: c.adminPort,
          status: () => agent.status(),
          restartProxies: (ids) => agent.restartProxies(ids),
          restartNote: () => migrateNote(),
        });
        logger.info({ adminPort: admin.port }, `status on http://127.0.0.1:${admin.port}/status`);
      } catch (err) {
        logError(
          logger,
          new RemoraError(
            'REMORA_E_AGENT_ADMIN_PORT_IN_USE',
            `cannot serve the status endpoint on 127.0.0.1:${c.adminPort}: ${(err as Error).message}; set adminPort to a free port`,
            { port: c.adminPort },
          ),
          undefined,
          'warn',
        );
      }
    },
    reload: () => agent.reload(),
    async stop(options) {
      closing = true;
      logs?.stop();
      await admin?.close();
      await agent.stop(options);
      stopConnecting();
      if (retryTimer) clock.clearTimeout(retryTimer);
      await control.close();
      consul.close();
      await tracing?.shutdown();
    },
    status: () => agent.status(),
    adminPort: () => admin?.port ?? null,
  };
}
