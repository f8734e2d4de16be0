import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { RemoraError } from '../errors/index.ts';
import type { Logger } from '../log/index.ts';

export interface NatsTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * The reply-inbox prefix of each role. The NATS permissions that compose and Vagrant generate
 * (compose/gen-secrets.js) let each role subscribe only to its own prefix, so no role can read
 * the replies to another role's requests (e.g. an agent the operator's tokens.create reply).
 */
export const INBOX_PREFIXES = {
  control: '_INBOX_control',
  agent: '_INBOX_agent',
  operator: '_INBOX_operator',
} as const;

const INBOX_PREFIX = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/**
 * The inbox prefix a connection uses by default, from its name: `remora-control@…` →
 * `_INBOX_control`, `remora-agent@<node>` → `_INBOX_agent.<node>`, `remora-cli` →
 * `_INBOX_operator`; any other name keeps nats.js's `_INBOX`.
 */
export function defaultInboxPrefix(name: string): string {
  const m = /^remora-(control|agent|cli|operator)(?:@(.*))?$/.exec(name);
  if (!m) return '_INBOX';
  if (m[1] === 'control') return INBOX_PREFIXES.control;
  if (m[1] === 'agent') {
    const node = (m[2] ?? '').replace(/[^A-Za-z0-9_-]/g, '_');
    return node ? `${INBOX_PREFIXES.agent}.${node}` : INBOX_PREFIXES.agent;
  }
  return INBOX_PREFIXES.operator;
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
  /**
   * Prefix of the reply inboxes of this connection's requests (dot-separated tokens of letters,
   * digits, `_` and `-`). Empty or absent: defaultInboxPrefix(name), the role's prefix that the
   * generated NATS permissions allow.
   */
  inboxPrefix?: string;
}

/**
 * Connects to NATS with reconnection forever (every subscription survives a server restart).
 * A failed first connection throws REMORA_E_NATS_CONNECT_FAILED unless `waitOnFirstConnect`.
 * Status changes are logged; the caller closes the connection with `drain()` or `close()`.
 */
export async function connectNats(options: ConnectNatsOptions): Promise<NatsConnection> {
  const servers = Array.isArray(options.servers) ? options.servers : [options.servers];
  const inboxPrefix = options.inboxPrefix || defaultInboxPrefix(options.name);
  if (!INBOX_PREFIX.test(inboxPrefix)) {
    throw new RemoraError(
      'REMORA_E_NATS_INBOX_PREFIX_INVALID',
      `NATS inbox prefix ${JSON.stringify(inboxPrefix)} is not dot-separated tokens of letters, digits, _ and -; use e.g. ${INBOX_PREFIXES.agent} or leave nats.inboxPrefix empty for the role's default`,
      { inboxPrefix },
    );
  }
  const opts: ConnectionOptions = {
    servers,
    name: options.name,
    inboxPrefix,
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
