import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { RemoraError } from '../errors/index.ts';
import type { Logger } from '../log/index.ts';

export interface NatsTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface ConnectNatsOptions {
  servers: string | string[];
  token?: string;
  /** A NATS `.creds` file (JWT + NKey seed). */
  credsFile?: string;
  tls?: NatsTlsOptions;
  /** Connection name shown by the server (`remora-control@host`). */
  name: string;
  logger: Logger;
  /** When true, keep trying the first connection instead of failing. Default false. */
  waitOnFirstConnect?: boolean;
  /** Pause between reconnect attempts to one server. Default 1000 ms (jittered by nats.js). */
  reconnectTimeWaitMs?: number;
  /** Deadline of one connection attempt. Default 5000 ms. */
  timeoutMs?: number;
}

/**
 * Connects to NATS with reconnection forever (every subscription survives a server restart).
 * A failed first connection throws REMORA_E_NATS_CONNECT_FAILED unless `waitOnFirstConnect`.
 * Status changes are logged; the caller closes the connection with `drain()` or `close()`.
 */
export async function connectNats(options: ConnectNatsOptions): Promise<NatsConnection> {
  const servers = Array.isArray(options.servers) ? options.servers : [options.servers];
  const opts: ConnectionOptions = {
    servers,
    name: options.name,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: options.reconnectTimeWaitMs ?? 1000,
    timeout: options.timeoutMs ?? 5000,
    waitOnFirstConnect: options.waitOnFirstConnect ?? false,
    pingInterval: 10_000,
    maxPingOut: 3,
  };
  if (options.token) opts.token = options.token;
  if (options.credsFile) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(options.credsFile);
    } catch (err) {
      throw new RemoraError(
        'REMORA_E_NATS_CONNECT_FAILED',
        `cannot read NATS credentials file ${options.credsFile}: ${(err as Error).message}; check nats.credsFile`,
        { file: options.credsFile },
        { cause: err },
      );
    }
    opts.authenticator = credsAuthenticator(creds);
  }
  const tls = options.tls;
  if (tls && (tls.caFile || tls.certFile || tls.keyFile)) {
    opts.tls = {
      ...(tls.caFile ? { caFile: tls.caFile } : {}),
      ...(tls.certFile ? { certFile: tls.certFile } : {}),
      ...(tls.keyFile ? { keyFile: tls.keyFile } : {}),
    };
  }
  let nc: NatsConnection;
  try {
    nc = await connect(opts);
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_NATS_CONNECT_FAILED',
      `cannot connect to NATS at ${servers.join(', ')}: ${(err as Error).message}; check nats.servers, credentials and that nats-server is running`,
      { servers },
      { cause: err },
    );
  }
  const log = options.logger;
  log.info({ server: nc.getServer() }, 'connected to NATS');
  void (async () => {
    for await (const s of nc.status()) {
      const type = String(s.type);
      const data = typeof s.data === 'string' ? s.data : JSON.stringify(s.data);
      if (type === 'disconnect' || type === 'error')
        log.warn(
          { code: 'REMORA_E_NATS_CONNECT_FAILED', event: type, data },
          'NATS connection lost; reconnecting',
        );
      else if (type === 'reconnect') log.info({ server: data }, 'reconnected to NATS');
    }
  })().catch(() => undefined);
  return nc;
}
