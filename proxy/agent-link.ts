// The proxy's side of the agent socket: hello, snapshots applied atomically (acked ok or
// refused with the reason), readiness reports, drain, ping. When the socket breaks the proxy
// keeps serving its last good snapshot and reconnects with jittered backoff.
import net from 'node:net';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { backoffDelay, type Clock } from '../lib/util/index.ts';
import {
  attachFrameChannel,
  decodeAgentFrame,
  type AgentFrame,
  type FrameChannel,
  type ProxyFrame,
} from '../lib/proxy-api/index.ts';
import type { Proxy } from './proxy.ts';

export interface AgentLinkOptions {
  socketPath: string;
  instance: string;
  adminPort: () => number;
  pid: number;
  proxy: Proxy;
  logger: Logger;
  clock: Clock;
  random: () => number;
  /** The agent asked for a drain. */
  onDrain: (deadlineMs: number) => void;
  reconnectBaseMs?: number;
  reconnectMaxMs?: number;
}

export interface AgentLink {
  readonly connected: boolean;
  /** Sends the current readiness (also sent after every snapshot). */
  reportStatus(): void;
  close(): void;
}

export function startAgentLink(o: AgentLinkOptions): AgentLink {
  let channel: FrameChannel<ProxyFrame> | null = null;
  let connected = false;
  let closed = false;
  let attempt = 0;
  let timer: NodeJS.Timeout | null = null;
  let applying: Promise<void> = Promise.resolve();

  const status = (): ProxyFrame => {
    const s = o.proxy.status();
    return {
      v: 1,
      type: 'status',
      ready: s.ready,
      appliedVersion: s.appliedVersion,
      ...(s.reason ? { reason: s.reason } : {}),
    };
  };

  function connect(): void {
    if (closed) return;
    const sock = net.connect(o.socketPath);
    const ch = attachFrameChannel<AgentFrame, ProxyFrame>(sock, {
      decode: decodeAgentFrame,
      onFrame: (f) => onFrame(ch, f),
      onInvalid: (err, raw) => {
        logError(o.logger, err, 'agent frame refused', 'warn');
        const version = (raw as { snapshot?: { version?: unknown } } | undefined)?.snapshot
          ?.version;
        if (typeof version === 'number') {
          o.proxy.metrics.snapshotsRejected.inc();
          ch.send({
            v: 1,
            type: 'ack',
            version,
            ok: false,
            error: { code: err.code, message: err.message },
          });
          ch.send(status());
        }
      },
      onClose: (err) => {
        const was = connected;
        connected = false;
        channel = null;
        if (closed) return;
        if (err) logError(o.logger, err, 'agent socket closed', 'warn');
        else if (was)
          o.logger.warn('agent socket closed; serving the last good snapshot and reconnecting');
        const delay = backoffDelay(attempt++, {
          baseMs: o.reconnectBaseMs ?? 200,
          maxMs: o.reconnectMaxMs ?? 10_000,
          random: o.random,
        });
        timer = setTimeout(connect, delay);
        timer.unref();
      },
    });
    sock.on('connect', () => {
      connected = true;
      attempt = 0;
      channel = ch;
      o.logger.info({ socket: o.socketPath }, 'connected to the agent');
      ch.send({
        v: 1,
        type: 'hello',
        instance: o.instance,
        pid: o.pid,
        adminPort: o.adminPort(),
        appliedVersion: o.proxy.status().appliedVersion,
      });
      ch.send(status());
    });
  }

  function onFrame(ch: FrameChannel<ProxyFrame>, f: AgentFrame): void {
    switch (f.type) {
      case 'ping':
        ch.send({ v: 1, type: 'pong' });
        return;
      case 'drain':
        o.onDrain(f.deadlineMs);
        ch.send(status());
        return;
      case 'snapshot': {
        const snapshot = f.snapshot;
        // snapshots apply one at a time, in order
        applying = applying.then(async () => {
          try {
            await o.proxy.apply(snapshot);
            ch.send({ v: 1, type: 'ack', version: snapshot.version, ok: true });
          } catch (err) {
            const e = toRemoraError(err);
            logError(o.logger, e, `snapshot ${snapshot.version} refused`, 'warn');
            ch.send({
              v: 1,
              type: 'ack',
              version: snapshot.version,
              ok: false,
              error: { code: e.code, message: e.message },
            });
          }
          ch.send(status());
        });
        return;
      }
    }
  }

  connect();
  return {
    get connected() {
      return connected;
    },
    reportStatus() {
      channel?.send(status());
    },
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      channel?.close();
    },
  };
}

export function agentUnreachable(path: string, cause: unknown): RemoraError {
  return new RemoraError(
    'REMORA_E_PROXY_AGENT_UNREACHABLE',
    `cannot reach the agent at ${path}`,
    { path },
    { cause },
  );
}
