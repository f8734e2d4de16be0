// One `remora proxy` per service instance. The supervisor serves the agent's Unix socket (0600),
// streams each proxy its config snapshot, tracks readiness, restarts crashed proxies with
// backoff, and re-adopts proxies that outlived a previous agent (pid file + the proxy
// reconnecting) instead of starting duplicates.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { chmod, readdir, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import {
  attachFrameChannel,
  decodeProxyFrame,
  type AgentFrame,
  type FrameChannel,
  type ProxyFrame,
  type ProxySnapshot,
} from '../lib/proxy-api/index.ts';
import { RemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { backoffDelay, type Clock } from '../lib/util/index.ts';
import { ensureDir, readJsonOrNull, writeFileAtomic, type DataPaths } from './files.ts';
import type { SpawnProxy } from './spawn.ts';

export const RESTART_BASE_MS = 100;
export const RESTART_MAX_MS = 10_000;
/** A proxy that stayed up this long starts its restart backoff from scratch. */
export const RESTART_RESET_AFTER_MS = 30_000;
export const HELLO_TIMEOUT_MS = 20_000;
const LIVENESS_POLL_MS = 500;
/** How long a successor proxy may take to connect, bind and say it is ready. */
export const HANDOVER_TIMEOUT_MS = 30_000;

export interface ProcessOps {
  spawn: SpawnProxy;
  isAlive(pid: number): boolean;
  /** True when pid still runs this instance's proxy (guards pid reuse). */
  isProxy(pid: number, instance: string): boolean;
  signal(pid: number, signal: NodeJS.Signals): void;
}

interface PidFile {
  pid: number;
  instance: string;
  adminPort: number;
  startedAt: string;
}

interface SentRecord {
  version: number;
  hash: string;
}

export type ProxyState = 'starting' | 'adopting' | 'running' | 'backoff' | 'stopping' | 'stopped';

export interface ProxyStatus {
  instance: string;
  state: ProxyState;
  pid: number | null;
  adminPort: number | null;
  connected: boolean;
  ready: boolean;
  readyReason: string | null;
  appliedVersion: number | null;
  restarts: number;
  adopted: boolean;
  lastExit: { code: number | null; signal: string | null; at: string } | null;
  lastError: { code: string; message: string; at: string } | null;
}

interface Proc {
  instance: string;
  state: ProxyState;
  pid: number | null;
  adminPort: number;
  ownChild: boolean;
  channel: FrameChannel<AgentFrame> | null;
  ready: boolean;
  readyReason: string | null;
  readySince: number | null;
  appliedVersion: number | null;
  sent: SentRecord | null;
  pendingHash: { version: number; hash: string } | null;
  /** The body of the snapshot in flight, handed to `onApplied` once the proxy acks it. */
  pendingBody: Omit<ProxySnapshot, 'version'> | null;
  attempt: number;
  restarts: number;
  adopted: boolean;
  timer: NodeJS.Timeout | null;
  lastExit: ProxyStatus['lastExit'];
  lastError: ProxyStatus['lastError'];
  exitWaiters: (() => void)[];
  /** The proxy taking over from this one (`handover`), until it is ready or has failed. */
  successor: Successor | null;
}

/** A second proxy for an instance, started to take over from the running one. */
interface Successor {
  pid: number;
  adminPort: number;
  channel: FrameChannel<AgentFrame> | null;
  /** The snapshot sent to it, and whether it applied it. */
  sent: SentRecord | null;
  body: Omit<ProxySnapshot, 'version'> | null;
  applied: boolean;
  ready: boolean;
  timer: NodeJS.Timeout | null;
  /** How long the old proxy may drain once this one has taken over. */
  drainMs: number;
  settle(why: string | null): void;
}

/** What `handover` did for one instance. */
export interface HandoverResult {
  instance: string;
  ok: boolean;
  /** The proxy that served before, and the one serving now (the same one when it failed). */
  oldPid: number | null;
  newPid: number | null;
  error?: { code: string; message: string };
}

export interface SupervisorOptions {
  paths: DataPaths;
  ops: ProcessOps;
  clock: Clock;
  random: () => number;
  logger: Logger;
  /** How long an adopted proxy (alive per its pid file) may take to reconnect. */
  adoptTimeoutMs: number;
  /** First admin port to try for a new proxy; 0 lets each proxy pick a free one. */
  adminPortBase: number;
  /** The snapshot for an instance now, or null while something is missing (cert, roots…). */
  snapshotFor(instance: string): Omit<ProxySnapshot, 'version'> | null;
  onReadyChange(instance: string, ready: boolean, reason: string): void;
  /**
   * The proxy has applied this snapshot (or already had it): its listeners are up. Transparent
   * rules follow it, so no call is steered to a listener that does not exist yet.
   */
  onApplied?(instance: string, snapshot: Omit<ProxySnapshot, 'version'>): void;
}

export interface Supervisor {
  listen(): Promise<void>;
  /** Adopts the instance's running proxy, or starts one. */
  ensure(instance: string): Promise<void>;
  /** Sends the current snapshot when it differs from what the proxy has. */
  push(instance: string): void;
  /** Asks a proxy to drain; resolves when it exited or the deadline passed. */
  drain(instance: string, deadlineMs: number): Promise<boolean>;
  /**
   * Replaces the instance's running proxy without a gap: starts a successor that shares its
   * ports (`remora proxy --takeover`), sends it the current snapshot, and once it is ready asks
   * the old one to drain within `drainMs`. The instance stays ready throughout; on any failure
   * the successor is stopped and the old proxy keeps serving.
   */
  handover(instance: string, drainMs: number, timeoutMs?: number): Promise<HandoverResult>;
  /** Stops the proxy (SIGTERM, then SIGKILL) and forgets it. */
  stop(instance: string): Promise<void>;
  /** Forgets the proxy but leaves it running (agent upgrade). */
  release(instance: string): void;
  /** Pid files of proxies no definition asks for. */
  strays(known: ReadonlySet<string>): Promise<string[]>;
  status(instance: string): ProxyStatus | null;
  instances(): string[];
  close(): Promise<void>;
}

function hashSnapshot(s: Omit<ProxySnapshot, 'version'>): string {
  return createHash('sha256').update(JSON.stringify(s)).digest('hex');
}

async function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export function createSupervisor(o: SupervisorOptions): Supervisor {
  const { paths, ops, clock, logger } = o;
  const procs = new Map<string, Proc>();
  /** Connections whose hello named an instance the supervisor does not manage (yet). */
  const waiting = new Map<
    string,
    { channel: FrameChannel<AgentFrame>; hello: HelloFrame; status: StatusFrame | null }
  >();
  let server: Server | null = null;
  const sockets = new Set<Socket>();
  let poll: NodeJS.Timeout | null = null;
  let closed = false;

  type HelloFrame = Extract<ProxyFrame, { type: 'hello' }>;
  type StatusFrame = Extract<ProxyFrame, { type: 'status' }>;

  function stamp(code: string, message: string): { code: string; message: string; at: string } {
    return { code, message, at: new Date(clock.now()).toISOString() };
  }

  async function writePid(p: Proc): Promise<void> {
    if (p.pid === null) return;
    const body: PidFile = {
      pid: p.pid,
      instance: p.instance,
      adminPort: p.adminPort,
      startedAt: new Date(clock.now()).toISOString(),
    };
    await writeFileAtomic(paths.proxyPid(p.instance), JSON.stringify(body), 0o600);
  }

  async function pickAdminPort(p: Proc, keepOwn = false): Promise<number> {
    if (o.adminPortBase === 0) return 0;
    const used = new Set(
      [...procs.values()].flatMap((q) => [
        ...(q !== p || keepOwn ? [q.adminPort] : []),
        ...(q.successor ? [q.successor.adminPort] : []),
      ]),
    );
    for (let port = o.adminPortBase; port < Math.min(65536, o.adminPortBase + 1000); port++) {
      if (!used.has(port) && (await canBind(port))) return port;
    }
    return 0;
  }

  function setReady(p: Proc, ready: boolean, reason: string): void {
    const was = p.ready;
    p.ready = ready;
    p.readyReason = ready ? null : reason;
    if (ready && !was) p.readySince = clock.now();
    if (!ready) p.readySince = null;
    if (was !== ready) o.onReadyChange(p.instance, ready, reason);
  }

  function cancelled(p: Proc): boolean {
    return closed || p.state === 'stopping' || p.state === 'stopped';
  }

  async function spawnNow(p: Proc): Promise<void> {
    if (closed || p.state === 'stopping' || p.state === 'stopped') return;
    p.state = 'starting';
    p.adopted = false;
    p.appliedVersion = null;
    try {
      await ensureDir(paths.instanceDir(p.instance));
      if (p.adminPort === 0 || !(await canBind(p.adminPort))) p.adminPort = await pickAdminPort(p);
      // stopped (or the supervisor closed) while preparing: starting now would leave an orphan
      if (cancelled(p)) return;
      const child = ops.spawn({
        instance: p.instance,
        socketPath: paths.socket,
        adminPort: p.adminPort,
        logFile: paths.proxyLog(p.instance),
      });
      p.pid = child.pid;
      p.ownChild = true;
      await writePid(p);
      logger.info(
        { instance: p.instance, pid: p.pid, adminPort: p.adminPort },
        `started proxy for ${p.instance}`,
      );
      const pid = child.pid;
      child.onExit((code, signal) => {
        if (p.pid === pid) exited(p, code, signal);
      });
      armHelloTimer(p, HELLO_TIMEOUT_MS);
    } catch (err) {
      const e = new RemoraError(
        'REMORA_E_AGENT_PROXY_SPAWN_FAILED',
        `cannot start the proxy for ${p.instance}: ${(err as Error).message}; retrying`,
        { instance: p.instance },
        { cause: err },
      );
      p.lastError = stamp(e.code, e.message);
      logError(logger, e);
      scheduleRestart(p);
    }
  }

  function armHelloTimer(p: Proc, ms: number): void {
    if (p.timer) clock.clearTimeout(p.timer);
    p.timer = clock.setTimeout(() => {
      p.timer = null;
      if (p.channel || p.state === 'stopping' || p.state === 'stopped') return;
      const e = new RemoraError(
        'REMORA_E_AGENT_PROXY_EXITED',
        `proxy for ${p.instance} (pid ${p.pid}) did not connect to ${paths.socket} within ${ms} ms; replacing it`,
        { instance: p.instance, pid: p.pid },
      );
      p.lastError = stamp(e.code, e.message);
      logError(logger, e, undefined, 'warn');
      void replace(p);
    }, ms);
  }

  async function replace(p: Proc): Promise<void> {
    const pid = p.pid;
    if (pid !== null && ops.isProxy(pid, p.instance)) {
      await killAndWait(pid, 2000);
    }
    if (p.pid === pid) exited(p, null, null);
  }

  async function killAndWait(pid: number, graceMs: number): Promise<void> {
    ops.signal(pid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (ops.isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    if (ops.isAlive(pid)) ops.signal(pid, 'SIGKILL');
    const hard = Date.now() + 2000;
    while (ops.isAlive(pid) && Date.now() < hard) await new Promise((r) => setTimeout(r, 25));
  }

  function exited(p: Proc, code: number | null, signal: string | null): void {
    if (p.pid === null) return;
    p.lastExit = { code, signal, at: new Date(clock.now()).toISOString() };
    failSuccessor(p, 'the running proxy exited during the handover');
    p.pid = null;
    p.channel?.close();
    p.channel = null;
    setReady(p, false, 'proxy exited');
    for (const w of p.exitWaiters.splice(0)) w();
    if (p.state === 'stopping' || p.state === 'stopped' || closed) return;
    const e = new RemoraError(
      'REMORA_E_AGENT_PROXY_EXITED',
      `proxy for ${p.instance} exited (code ${code}, signal ${signal}); restarting`,
      { instance: p.instance, code, signal },
    );
    p.lastError = stamp(e.code, e.message);
    logError(logger, e, undefined, 'warn');
    scheduleRestart(p);
  }

  function scheduleRestart(p: Proc): void {
    if (closed || p.state === 'stopping' || p.state === 'stopped') return;
    if (p.readySince !== null && clock.now() - p.readySince > RESTART_RESET_AFTER_MS) p.attempt = 0;
    const delay = backoffDelay(p.attempt, {
      baseMs: RESTART_BASE_MS,
      maxMs: RESTART_MAX_MS,
      random: o.random,
    });
    p.attempt += 1;
    p.state = 'backoff';
    if (p.timer) clock.clearTimeout(p.timer);
    p.timer = clock.setTimeout(() => {
      p.timer = null;
      p.restarts += 1;
      void spawnNow(p);
    }, delay);
  }

  function send(p: Proc): void {
    if (!p.channel) return;
    const body = o.snapshotFor(p.instance);
    if (!body) return;
    const hash = hashSnapshot(body);
    if (p.sent && p.sent.hash === hash && p.appliedVersion === p.sent.version) {
      o.onApplied?.(p.instance, body);
      return;
    }
    if (p.pendingHash?.hash === hash) return;
    const version =
      Math.max(p.sent?.version ?? 0, p.appliedVersion ?? 0, p.pendingHash?.version ?? 0) + 1;
    p.pendingHash = { version, hash };
    p.pendingBody = body;
    p.channel.send({ v: 1, type: 'snapshot', snapshot: { version, ...body } });
    logger.debug({ instance: p.instance, version }, 'snapshot sent');
  }

  function onFrame(p: Proc, f: ProxyFrame): void {
    switch (f.type) {
      case 'ack':
        if (f.ok) {
          p.appliedVersion = Math.max(p.appliedVersion ?? 0, f.version);
          if (p.pendingHash?.version === f.version) {
            p.sent = { version: f.version, hash: p.pendingHash.hash };
            p.pendingHash = null;
            const applied = p.pendingBody;
            p.pendingBody = null;
            if (applied) o.onApplied?.(p.instance, applied);
            writeFileAtomic(
              `${paths.instanceDir(p.instance)}/snapshot.json`,
              JSON.stringify(p.sent),
              0o600,
            ).catch(() => undefined);
            send(p); // something may have changed while this one was in flight
          }
        } else {
          const e = new RemoraError(
            'REMORA_E_AGENT_PROXY_REJECTED',
            `proxy for ${p.instance} refused snapshot ${f.version}: ${f.error.code}: ${f.error.message}`,
            { instance: p.instance, version: f.version, proxyCode: f.error.code },
          );
          p.lastError = stamp(e.code, e.message);
          if (p.pendingHash?.version === f.version) {
            // remember it as sent so an unchanged snapshot is not sent again in a loop
            p.sent = { version: f.version, hash: p.pendingHash.hash };
            p.appliedVersion = Math.max(p.appliedVersion ?? 0, f.version);
            p.pendingHash = null;
            p.pendingBody = null;
          }
          logError(logger, e);
        }
        return;
      case 'status':
        if (f.appliedVersion !== null)
          p.appliedVersion = Math.max(p.appliedVersion ?? 0, f.appliedVersion);
        setReady(p, f.ready, f.reason ?? (f.ready ? 'ready' : 'not ready'));
        return;
      case 'hello':
      case 'pong':
        return;
    }
  }

  // --- handover: a successor takes over from the running proxy ------------------------------

  function failSuccessor(p: Proc, why: string): void {
    const succ = p.successor;
    if (!succ) return;
    p.successor = null;
    if (succ.timer) clock.clearTimeout(succ.timer);
    succ.channel?.close();
    if (succ.pid > 0 && ops.isProxy(succ.pid, p.instance)) void killAndWait(succ.pid, 2000);
    succ.settle(why);
  }

  function attachSuccessor(p: Proc, succ: Successor, channel: FrameChannel<AgentFrame>): void {
    succ.channel = channel;
    const body = o.snapshotFor(p.instance);
    if (!body) {
      failSuccessor(p, 'its snapshot is not complete (certificate, roots or endpoints missing)');
      return;
    }
    const version =
      Math.max(p.sent?.version ?? 0, p.appliedVersion ?? 0, p.pendingHash?.version ?? 0) + 1;
    succ.sent = { version, hash: hashSnapshot(body) };
    succ.body = body;
    channel.send({ v: 1, type: 'snapshot', snapshot: { version, ...body } });
  }

  function onSuccessorFrame(p: Proc, succ: Successor, f: ProxyFrame): void {
    if (f.type === 'ack' && f.version === succ.sent?.version) {
      if (!f.ok) {
        const shared =
          f.error.code === 'REMORA_E_PROXY_LISTEN_FAILED'
            ? ' (a proxy started before Remora shared its ports cannot be taken over: stop and start its instance instead)'
            : '';
        failSuccessor(p, `it refused the snapshot: ${f.error.code}: ${f.error.message}${shared}`);
        return;
      }
      succ.applied = true;
    } else if (f.type === 'status') {
      succ.ready = f.ready;
    }
    if (succ.applied && succ.ready) promote(p, succ);
  }

  function promote(p: Proc, succ: Successor): void {
    const old = { pid: p.pid, channel: p.channel };
    p.successor = null;
    if (succ.timer) clock.clearTimeout(succ.timer);
    p.pid = succ.pid;
    p.ownChild = true;
    p.channel = succ.channel;
    p.adminPort = succ.adminPort;
    p.sent = succ.sent;
    p.appliedVersion = succ.sent!.version;
    p.pendingHash = null;
    p.pendingBody = null;
    p.adopted = false;
    p.state = 'running';
    writePid(p).catch((err: unknown) =>
      logError(logger, err, `cannot record the pid of ${p.instance}'s proxy`, 'warn'),
    );
    writeFileAtomic(
      `${paths.instanceDir(p.instance)}/snapshot.json`,
      JSON.stringify(p.sent),
      0o600,
    ).catch(() => undefined);
    logger.info(
      { instance: p.instance, oldPid: old.pid, pid: p.pid, adminPort: p.adminPort },
      `proxy for ${p.instance} taken over by pid ${p.pid}; pid ${old.pid} drains`,
    );
    if (succ.body) o.onApplied?.(p.instance, succ.body);
    succ.settle(null);
    send(p); // something may have changed while the successor started
    if (old.pid !== null) void retire(p.instance, old.pid, old.channel, succ.drainMs);
  }

  /** The old proxy after a handover: drains (its listeners close first), then exits. */
  async function retire(
    instance: string,
    pid: number,
    channel: FrameChannel<AgentFrame> | null,
    drainMs: number,
  ): Promise<void> {
    if (!channel?.send({ v: 1, type: 'drain', deadlineMs: drainMs })) ops.signal(pid, 'SIGTERM');
    const deadline = Date.now() + drainMs + 2000;
    while (ops.isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    if (ops.isProxy(pid, instance)) await killAndWait(pid, 1000);
    channel?.close();
  }

  async function handover(
    instance: string,
    drainMs: number,
    timeoutMs = HANDOVER_TIMEOUT_MS,
  ): Promise<HandoverResult> {
    const p = procs.get(instance);
    const refuse = (message: string): HandoverResult => {
      const e = new RemoraError(
        'REMORA_E_AGENT_PROXY_HANDOVER_FAILED',
        `cannot restart the proxy of ${instance}: ${message}`,
        { instance },
      );
      if (p) p.lastError = stamp(e.code, e.message);
      logError(logger, e, undefined, 'warn');
      return {
        instance,
        ok: false,
        oldPid: p?.pid ?? null,
        newPid: p?.pid ?? null,
        error: { code: e.code, message: e.message },
      };
    };
    if (!p) return refuse('no proxy runs for it on this host');
    if (p.successor) return refuse('a restart of this proxy is already under way');
    if (p.state !== 'running' || p.pid === null || !p.channel || !p.ready)
      return refuse(
        `its proxy is not running and ready (${p.readyReason ?? p.state}); the agent restarts it by itself`,
      );
    const oldPid = p.pid;
    let settle: (why: string | null) => void = () => {};
    const outcome = new Promise<string | null>((resolve) => (settle = resolve));
    // taken at once, so a second restart of the instance is refused while this one prepares
    const succ: Successor = {
      pid: 0,
      adminPort: 0,
      channel: null,
      sent: null,
      body: null,
      applied: false,
      ready: false,
      timer: null,
      drainMs,
      settle,
    };
    p.successor = succ;
    succ.timer = clock.setTimeout(() => {
      succ.timer = null;
      failSuccessor(p, `the new proxy was not ready within ${timeoutMs} ms`);
    }, timeoutMs);
    succ.adminPort = await pickAdminPort(p, true);
    if (p.successor === succ) {
      try {
        const spawned = ops.spawn({
          instance,
          socketPath: paths.socket,
          adminPort: succ.adminPort,
          logFile: paths.proxyLog(instance),
          takeover: true,
        });
        succ.pid = spawned.pid;
        logger.info(
          { instance, oldPid, pid: succ.pid },
          `restarting the proxy for ${instance}: pid ${succ.pid} takes over from pid ${oldPid}`,
        );
        spawned.onExit((code, signal) => {
          if (p.successor === succ)
            failSuccessor(
              p,
              `the new proxy exited (code ${code}, signal ${signal}) before it was ready`,
            );
          else if (p.pid === succ.pid) exited(p, code, signal);
        });
      } catch (err) {
        failSuccessor(p, `cannot start a new proxy: ${(err as Error).message}`);
      }
    }
    const why = await outcome;
    if (why !== null) {
      const r = refuse(`${why}; pid ${oldPid} keeps serving`);
      return { ...r, oldPid, newPid: p.pid };
    }
    return { instance, ok: true, oldPid, newPid: p.pid };
  }

  function bind(p: Proc, channel: FrameChannel<AgentFrame>, hello: HelloFrame): void {
    if (p.channel && p.channel !== channel) p.channel.close();
    if (p.timer) {
      clock.clearTimeout(p.timer);
      p.timer = null;
    }
    if (p.pid !== null && p.pid !== hello.pid && ops.isProxy(p.pid, p.instance)) {
      // two proxies for one instance: keep the one we know, stop the newcomer
      logger.warn(
        { instance: p.instance, pid: hello.pid },
        'a second proxy connected for the same instance; stopping it',
      );
      ops.signal(hello.pid, 'SIGTERM');
      channel.close();
      return;
    }
    if (p.pid === null || p.pid !== hello.pid) {
      p.pid = hello.pid;
      p.ownChild = false;
    }
    p.channel = channel;
    p.adminPort = hello.adminPort;
    p.appliedVersion = hello.appliedVersion;
    p.pendingHash = null;
    p.pendingBody = null;
    p.state = 'running';
    // a pid file that cannot be written costs only adoption after an agent restart
    writePid(p).catch((err: unknown) =>
      logError(logger, err, `cannot record the pid of ${p.instance}'s proxy`, 'warn'),
    );
    logger.info(
      {
        instance: p.instance,
        pid: p.pid,
        adminPort: p.adminPort,
        appliedVersion: hello.appliedVersion,
        adopted: p.adopted,
      },
      `proxy for ${p.instance} connected`,
    );
    send(p);
  }

  function onConnection(socket: Socket): void {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    let proc: Proc | null = null;
    let instance: string | null = null;
    const helloTimer = setTimeout(() => {
      if (instance === null) socket.destroy();
    }, HELLO_TIMEOUT_MS);
    const channel: FrameChannel<AgentFrame> = attachFrameChannel<ProxyFrame, AgentFrame>(socket, {
      decode: decodeProxyFrame,
      onFrame(f) {
        if (instance === null) {
          if (f.type !== 'hello') return;
          clearTimeout(helloTimer);
          instance = f.instance;
          const p = procs.get(f.instance);
          const succ = p?.successor;
          if (p && succ && succ.pid === f.pid && succ.channel === null) {
            proc = p;
            succ.adminPort = f.adminPort;
            attachSuccessor(p, succ, channel);
            return;
          }
          if (p && p.state !== 'stopping' && p.state !== 'stopped') {
            proc = p;
            bind(p, channel, f);
          } else {
            waiting.get(f.instance)?.channel.close();
            waiting.set(f.instance, { channel, hello: f, status: null });
          }
          return;
        }
        const p = proc ?? procs.get(instance);
        if (p && p.channel === channel) onFrame(p, f);
        else if (p?.successor && p.successor.channel === channel)
          onSuccessorFrame(p, p.successor, f);
        else {
          const w = waiting.get(instance);
          if (w?.channel === channel && f.type === 'status') {
            // remembered until the instance is defined, then replayed
            w.status = f;
            if (f.appliedVersion !== null)
              w.hello = { ...w.hello, appliedVersion: f.appliedVersion };
          }
        }
      },
      onInvalid(err) {
        logError(logger, err, 'invalid frame from a proxy', 'warn');
      },
      onClose() {
        clearTimeout(helloTimer);
        if (instance === null) return;
        const w = waiting.get(instance);
        if (w?.channel === channel) waiting.delete(instance);
        const p = procs.get(instance);
        if (p?.successor && p.successor.channel === channel)
          failSuccessor(p, 'the new proxy disconnected before it was ready');
        if (!p || p.channel !== channel) return;
        p.channel = null;
        p.pendingHash = null;
        p.pendingBody = null;
        setReady(p, false, 'proxy disconnected');
        if (p.state === 'stopping' || p.state === 'stopped' || closed) return;
        if (p.pid !== null && !ops.isAlive(p.pid)) {
          exited(p, null, null);
        } else {
          // alive but disconnected: it should reconnect; replace it if it does not
          armHelloTimer(p, o.adoptTimeoutMs);
        }
      },
    });
  }

  function livenessPoll(): void {
    for (const p of procs.values()) {
      if (p.pid === null || p.ownChild) continue;
      if (p.state === 'stopping' || p.state === 'stopped') continue;
      if (!ops.isAlive(p.pid)) exited(p, null, null);
    }
    if (!closed) poll = clock.setTimeout(livenessPoll, LIVENESS_POLL_MS);
  }

  async function listen(): Promise<void> {
    await ensureDir(paths.root);
    // another agent on this data directory?
    const inUse = await new Promise<boolean>((resolve) => {
      const c = connect(paths.socket);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (inUse) {
      throw new RemoraError(
        'REMORA_E_AGENT_ALREADY_RUNNING',
        `another agent serves ${paths.socket}; stop it first or give this agent its own dataDir`,
        { socket: paths.socket },
      );
    }
    await rm(paths.socket, { force: true });
    server = createServer(onConnection);
    await new Promise<void>((resolve, reject) => {
      server!.once('error', (err) =>
        reject(
          new RemoraError(
            'REMORA_E_AGENT_DATA_DIR',
            `cannot listen on the agent socket ${paths.socket} (${err.message}); Unix socket paths must stay under 108 bytes and the directory writable — choose a shorter dataDir`,
            { socket: paths.socket },
            { cause: err },
          ),
        ),
      );
      server!.listen(paths.socket, () => resolve());
    });
    await chmod(paths.socket, 0o600);
    poll = clock.setTimeout(livenessPoll, LIVENESS_POLL_MS);
  }

  function newProc(instance: string): Proc {
    return {
      instance,
      state: 'starting',
      pid: null,
      adminPort: o.adminPortBase === 0 ? 0 : 0,
      ownChild: false,
      channel: null,
      ready: false,
      readyReason: 'starting',
      readySince: null,
      appliedVersion: null,
      sent: null,
      pendingHash: null,
      pendingBody: null,
      attempt: 0,
      restarts: 0,
      adopted: false,
      timer: null,
      lastExit: null,
      lastError: null,
      exitWaiters: [],
      successor: null,
    };
  }

  return {
    listen,
    async ensure(instance) {
      if (procs.has(instance)) return;
      const p = newProc(instance);
      procs.set(instance, p);
      const pidFile = await readJsonOrNull<PidFile>(paths.proxyPid(instance));
      p.sent = await readJsonOrNull<SentRecord>(`${paths.instanceDir(instance)}/snapshot.json`);
      if (pidFile) p.adminPort = pidFile.adminPort;
      const w = waiting.get(instance);
      if (w) {
        waiting.delete(instance);
        p.adopted = true;
        bind(p, w.channel, w.hello);
        if (w.status) onFrame(p, w.status);
        return;
      }
      if (pidFile && ops.isProxy(pidFile.pid, instance)) {
        p.pid = pidFile.pid;
        p.ownChild = false;
        p.adopted = true;
        p.state = 'adopting';
        logger.info(
          { instance, pid: p.pid },
          `waiting for the running proxy of ${instance} to reconnect`,
        );
        armHelloTimer(p, o.adoptTimeoutMs);
        return;
      }
      await spawnNow(p);
    },
    push(instance) {
      const p = procs.get(instance);
      if (p) send(p);
    },
    handover,
    async drain(instance, deadlineMs) {
      const p = procs.get(instance);
      if (!p || p.pid === null) return true;
      p.state = 'stopping';
      failSuccessor(p, 'the instance is stopping');
      if (p.timer) clock.clearTimeout(p.timer);
      const pid = p.pid;
      const gone = new Promise<void>((resolve) => p.exitWaiters.push(resolve));
      if (!p.channel?.send({ v: 1, type: 'drain', deadlineMs })) return false;
      const deadline = Date.now() + deadlineMs + 1000;
      let done = false;
      void gone.then(() => (done = true));
      while (!done && ops.isAlive(pid) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
      }
      return done || !ops.isAlive(pid);
    },
    async stop(instance) {
      const p = procs.get(instance);
      if (!p) return;
      p.state = 'stopping';
      failSuccessor(p, 'the instance is stopping');
      if (p.timer) clock.clearTimeout(p.timer);
      const pid = p.pid;
      if (pid !== null && ops.isProxy(pid, instance)) await killAndWait(pid, 3000);
      p.channel?.close();
      p.channel = null;
      p.state = 'stopped';
      if (p.ready) setReady(p, false, 'stopped');
      procs.delete(instance);
      await rm(paths.proxyPid(instance), { force: true });
      await rm(`${paths.instanceDir(instance)}/snapshot.json`, { force: true });
    },
    release(instance) {
      const p = procs.get(instance);
      if (!p) return;
      failSuccessor(p, 'the agent is stopping');
      p.state = 'stopped';
      if (p.timer) clock.clearTimeout(p.timer);
      p.channel?.close();
      procs.delete(instance);
    },
    async strays(known) {
      let dirs: string[];
      try {
        dirs = await readdir(`${paths.root}/instances`);
      } catch {
        return [];
      }
      const out: string[] = [];
      for (const id of dirs) {
        if (known.has(id)) continue;
        const pf = await readJsonOrNull<PidFile>(paths.proxyPid(id));
        if (pf && ops.isProxy(pf.pid, id)) out.push(id);
      }
      return out;
    },
    status(instance) {
      const p = procs.get(instance);
      if (!p) return null;
      return {
        instance,
        state: p.state,
        pid: p.pid,
        adminPort: p.adminPort || null,
        connected: p.channel !== null,
        ready: p.ready,
        readyReason: p.readyReason,
        appliedVersion: p.appliedVersion,
        restarts: p.restarts,
        adopted: p.adopted,
        lastExit: p.lastExit,
        lastError: p.lastError,
      };
    },
    instances: () => [...procs.keys()],
    async close() {
      closed = true;
      for (const p of procs.values()) failSuccessor(p, 'the agent is stopping');
      if (poll) clock.clearTimeout(poll);
      for (const p of procs.values()) if (p.timer) clock.clearTimeout(p.timer);
      for (const w of waiting.values()) w.channel.close();
      waiting.clear();
      for (const p of procs.values()) p.channel?.close();
      for (const s of sockets) s.destroy();
      if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
      await rm(paths.socket, { force: true });
    },
  };
}
