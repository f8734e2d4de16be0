/**
 * The embedded Consul-compatible catalog: a single-node stand-in for `consul agent -dev` that
 * serves the part of Consul's HTTP API Remora and the npm `consul` client use. Development and
 * tests only; production runs real Consul.
 */
import { createServer, type Server } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { RemoraError } from '../errors/index.ts';
import { createSilentLogger, type Logger } from '../log/index.ts';
import { createClock, type Clock } from '../util/index.ts';
import { Catalog } from './catalog.ts';
import { createHandler } from './server.ts';

export {
  DEFAULT_SIDECAR_MIN_PORT,
  DEFAULT_SIDECAR_MAX_PORT,
  DEFAULT_REAP_INTERVAL_MS,
  DEFAULT_DEREGISTER_MIN_MS,
  KV_MAX_VALUE_SIZE,
  SIDECAR_SUFFIX,
} from './catalog.ts';
export { DEFAULT_BLOCKING_WAIT_MS, MAX_BLOCKING_WAIT_MS } from './server.ts';
export { parseGoDuration, formatGoDuration } from './duration.ts';

export interface StartDevConsulOptions {
  /** Listen address; loopback by default (admin listeners stay on 127.0.0.1). */
  host?: string;
  /** 0 (the default) picks a free port. */
  port?: number;
  nodeName?: string;
  datacenter?: string;
  logger?: Logger;
  clock?: Clock;
  /** Randomness for blocking-query jitter and check staggering; in [0, 1). */
  random?: () => number;
  /** The automatic sidecar port range (Consul's defaults: 21000–21255). */
  sidecarMinPort?: number;
  sidecarMaxPort?: number;
  /** How often critical services are reaped (Consul: 30 s) and the floor of
   *  deregister_critical_service_after (Consul: 1 min). Tests shorten them. */
  reapIntervalMs?: number;
  deregisterMinMs?: number;
}

export interface DevConsul {
  /** http://<host>:<port> */
  url: string;
  port: number;
  /** Stops listening, ends blocking queries and check timers. */
  close(): Promise<void>;
}

/** Starts the embedded catalog and resolves once it accepts connections. */
export async function startDevConsul(opts: StartDevConsulOptions = {}): Promise<DevConsul> {
  const host = opts.host ?? '127.0.0.1';
  const nodeName = opts.nodeName ?? 'remora-dev';
  const datacenter = opts.datacenter ?? 'dc1';
  const logger = opts.logger ?? createSilentLogger();
  const random = opts.random ?? Math.random;
  const catalog = new Catalog({
    nodeName,
    datacenter,
    clock: opts.clock ?? createClock(),
    random,
    logger,
    ...(opts.sidecarMinPort !== undefined ? { sidecarMinPort: opts.sidecarMinPort } : {}),
    ...(opts.sidecarMaxPort !== undefined ? { sidecarMaxPort: opts.sidecarMaxPort } : {}),
    ...(opts.reapIntervalMs !== undefined ? { reapIntervalMs: opts.reapIntervalMs } : {}),
    ...(opts.deregisterMinMs !== undefined ? { deregisterMinMs: opts.deregisterMinMs } : {}),
  });
  let port = opts.port ?? 0;
  const handler = createHandler({
    catalog,
    logger,
    random,
    datacenter,
    nodeName,
    advertise: () => `${host}:${port}`,
    // a catalog bound to one address probes from it; a wildcard one is taken as local
    ...(isIP(host) !== 0 && host !== '0.0.0.0' && host !== '::' ? { memberAddress: host } : {}),
  });
  const server: Server = createServer((req, res) => {
    handler(req, res).catch((err: unknown) => {
      logger.error({ err }, 'embedded catalog handler crashed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      catalog.close();
      reject(
        new RemoraError(
          'REMORA_E_DEVCONSUL_LISTEN',
          `the embedded catalog cannot listen on ${host}:${port}: ${err.code ?? err.message}; pick a free port with --listen 127.0.0.1:<port>`,
          { host, port, reason: err.code ?? err.message },
          { cause: err },
        ),
      );
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  logger.info({ url: `http://${urlHost}:${port}`, nodeName, datacenter }, 'embedded catalog ready');
  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        catalog.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
