// Fakes for the agent's unit tests only.
import { connect, type Socket } from 'node:net';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { createAgent, type AgentSettings } from '../../agent/agent.ts';
import { createClock, type Clock } from '../../lib/util/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import {
  createCsr,
  createRootCa,
  generateKeyPair,
  issueLeaf,
  inspectCsr,
} from '../../lib/pki/index.ts';
import type {
  ConfigEntry,
  ConsulPort,
  ControlPort,
  SignedCert,
  TrustBundle,
} from '../../agent/ports.ts';
import type { ProcessOps } from '../../agent/supervisor.ts';
import {
  attachFrameChannel,
  type AgentFrame,
  type ProxyFrame,
  type ProxySnapshot,
} from '../../lib/proxy-api/index.ts';

export interface FakeClock extends Clock {
  advance(ms: number): void;
  pending(): number;
}

/** A clock whose timers fire only when the test advances time. */
export function createFakeClock(start = Date.UTC(2026, 10, 27)): FakeClock {
  let now = start;
  let seq = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = ++seq;
      timers.set(id, { at: now + Math.max(0, ms), fn });
      return id as unknown as NodeJS.Timeout;
    },
    clearTimeout(h) {
      timers.delete(h as unknown as number);
    },
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let next: [number, { at: number; fn: () => void }] | undefined;
        for (const e of timers) if (e[1].at <= end && (!next || e[1].at < next[1].at)) next = e;
        if (!next) break;
        timers.delete(next[0]);
        now = next[1].at;
        next[1].fn();
      }
      now = end;
    },
    pending: () => timers.size,
  };
}

export interface JumpClock extends Clock {
  /** Moves time forward by `ms` at once: the timers now due fire, the others keep running. */
  jump(ms: number): void;
}

/** Real time and real timers, plus jumps ahead, for a test that must not sit through a long wait. */
export function createJumpClock(): JumpClock {
  let offset = 0;
  const timers = new Map<NodeJS.Timeout, { at: number; fn: () => void }>();
  const now = () => Date.now() + offset;
  return {
    now,
    setTimeout(fn, ms) {
      const entry = { at: now() + ms, fn };
      const h = setTimeout(() => {
        timers.delete(h);
        fn();
      }, ms);
      timers.set(h, entry);
      return h;
    },
    clearTimeout(h) {
      timers.delete(h);
      clearTimeout(h);
    },
    jump(ms) {
      offset += ms;
      const due = [...timers].filter(([, e]) => e.at <= now()).sort((a, b) => a[1].at - b[1].at);
      for (const [h, e] of due) {
        timers.delete(h);
        clearTimeout(h);
        e.fn();
      }
    },
  };
}

/** A CA that signs like control does (no token checks). */
export function createFakeCa(
  now: number,
  trustDomain = '11111111-2222-3333-4444-555555555555.remora',
) {
  const ca = createRootCa({ trustDomain, ttlMs: 365 * 86400_000, now: now - 3600_000 });
  const bundle: TrustBundle = {
    trustDomain,
    activeRootId: ca.id,
    roots: [{ id: ca.id, pem: ca.certPem, notAfter: ca.notAfter.toISOString() }],
  };
  return {
    ca,
    bundle,
    sign(csr: string, at: number, ttlMs = 72 * 3600_000): SignedCert {
      const info = inspectCsr(csr);
      const spiffeId = info.uris[0]!;
      const dnsNames = info.dnsNames;
      const leaf = issueLeaf({ ca, csrPem: csr, spiffeId, dnsNames, ttlMs, now: at });
      return {
        cert: leaf.certPem,
        chain: [ca.certPem],
        serial: leaf.serial,
        notBefore: leaf.notBefore.toISOString(),
        notAfter: leaf.notAfter.toISOString(),
        spiffeId,
      };
    },
  };
}

export { createCsr, generateKeyPair };

/**
 * A temporary host: a data dir and a config dir holding one definition file per entry of `files`
 * (file name → definition), removed with the test; `settings` are agent settings for it (all
 * local, short drain), with `over` on top.
 */
export async function createHostDir(
  t: Test,
  files: Record<string, unknown>,
): Promise<{ configDir: string; settings(over?: Partial<AgentSettings>): AgentSettings }> {
  const dir = await mkdtemp(join(tmpdir(), 'remora-agent-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const configDir = join(dir, 'services.d');
  await mkdir(configDir);
  for (const [name, def] of Object.entries(files))
    await writeFile(join(configDir, name), JSON.stringify(def));
  return {
    configDir,
    settings: (over = {}) => ({
      datacenter: 'dc1',
      node: 'n1',
      configDir,
      dataDir: join(dir, 'data'),
      adminPortBase: 0,
      drainTimeoutMs: 500,
      intentionsRefreshMs: 60_000,
      proxyBindAddress: '127.0.0.1',
      advertiseAddress: '',
      sidecarPortMin: 21000,
      sidecarPortMax: 21255,
      checkTtlMs: 30_000,
      adoptTimeoutMs: 2000,
      tracing: { endpoint: '', sampleRatio: 1, headers: {} },
      watchDebounceMs: 0,
      ...over,
    }),
  };
}

/** A control plane that signs with a fake CA, allows every call, and never changes. */
export function createFakeControl(clock: Clock): ControlPort {
  const ca = createFakeCa(clock.now());
  return {
    sign: async (req) => ca.sign(req.csr, clock.now()),
    roots: async () => ca.bundle,
    intentions: async () => ({
      revision: 1,
      defaultPolicy: 'allow',
      auditMode: false,
      intentions: [],
    }),
    onRootsChanged: () => () => undefined,
    onIntentionsChanged: () => () => undefined,
    close: async () => undefined,
  };
}

export interface FakeProxies {
  processes: ProcessOps;
  /** Sends a status frame from the proxy (the last one spawned). */
  status(ready: boolean, reason?: string): void;
  /** Destroys the proxies' sockets (test teardown). */
  close(): void;
}

/**
 * Proxy processes that are not processes: a "spawned" proxy connects to the agent's socket as a
 * real one does, acks each snapshot and says it is ready, and goes away on drain. `events` gets `spawn`, `drain` and `signal <sig>`.
 */
export function createFakeProxies(
  o: {
    pid?: number;
    events?: string[];
    onSnapshot?: (s: ProxySnapshot) => void;
    /** Awaited before each snapshot is acked: a proxy slow to apply it. */
    beforeAck?: (s: ProxySnapshot) => Promise<void>;
  } = {},
): FakeProxies {
  const pid = o.pid ?? 60_000;
  const alive = new Set<number>();
  const socks: Socket[] = [];
  let channel: { send(f: ProxyFrame): void } | null = null;
  let applied: number | null = null;
  const processes: ProcessOps = {
    spawn(req) {
      alive.add(pid);
      o.events?.push('spawn');
      setImmediate(() => {
        const sock = connect(req.socketPath);
        socks.push(sock);
        const ch = attachFrameChannel<AgentFrame, ProxyFrame>(sock, {
          decode: (v) => v as AgentFrame,
          onFrame(f) {
            if (f.type === 'snapshot') {
              o.onSnapshot?.(f.snapshot);
              const ack = (): void => {
                applied = f.snapshot.version;
                ch.send({ v: 1, type: 'ack', version: f.snapshot.version, ok: true });
                ch.send({ v: 1, type: 'status', ready: true, appliedVersion: applied });
              };
              if (o.beforeAck) void o.beforeAck(f.snapshot).then(ack);
              else ack();
            } else if (f.type === 'drain') {
              o.events?.push('drain');
              alive.delete(pid);
              sock.destroy();
            }
          },
        });
        channel = ch;
        sock.on('connect', () =>
          ch.send({
            v: 1,
            type: 'hello',
            instance: req.instance,
            pid,
            adminPort: 1,
            appliedVersion: null,
          }),
        );
      });
      return { pid, onExit: () => undefined };
    },
    isAlive: (p) => alive.has(p),
    isProxy: (p) => alive.has(p),
    signal: (p, sig) => {
      o.events?.push(`signal ${sig}`);
      alive.delete(p);
    },
  };
  return {
    processes,
    status(ready, reason) {
      if (!channel) throw new Error('the fake proxy is not connected yet');
      channel.send({
        v: 1,
        type: 'status',
        ready,
        appliedVersion: applied,
        ...(reason === undefined ? {} : { reason }),
      });
    },
    close: () => socks.forEach((s) => s.destroy()),
  };
}

/** Lets pending promise callbacks run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * Consul's configuration entries for a fake ConsulPort: each watch answers at once with what is
 * set (nothing by default); `set` changes a kind and wakes its watches, `fail` reports an error.
 */
export function createFakeConfigEntries(
  initial: Record<string, ConfigEntry[]> = {},
  o: { held?: boolean } = {},
): {
  watchConfigEntries: ConsulPort['watchConfigEntries'];
  /** With `held`, the watches' first answers wait for this. */
  release(): void;
  set(kind: string, entries: ConfigEntry[]): void;
  fail(kind: string, err: Error): void;
  /** Kinds being watched now. */
  watching(): string[];
} {
  const entries = new Map(Object.entries(initial));
  const watchers = new Map<string, Parameters<ConsulPort['watchConfigEntries']>[1]>();
  let held = o.held ?? false;
  const answerAll = (): void => {
    for (const [kind, h] of watchers) h.onChange(entries.get(kind) ?? []);
  };
  return {
    watchConfigEntries(kind, h) {
      watchers.set(kind, h);
      queueMicrotask(() => {
        if (!held && watchers.get(kind) === h) h.onChange(entries.get(kind) ?? []);
      });
      return { stop: () => void watchers.delete(kind) };
    },
    release() {
      held = false;
      answerAll();
    },
    set(kind, next) {
      entries.set(kind, next);
      watchers.get(kind)?.onChange(next);
    },
    fail(kind, err) {
      watchers.get(kind)?.onError(err);
    },
    watching: () => [...watchers.keys()].sort(),
  };
}

export interface FakeHost {
  agent: ReturnType<typeof createAgent>;
  configDir: string;
  /** The agent's data directory (keys, certificates, caches). */
  dataDir: string;
  /** Sends a status frame from the (fake) proxy of the instance. */
  proxyStatus(ready: boolean, reason?: string): void;
}

/**
 * An agent over a real config dir and a real proxy socket, with Consul, the control plane and
 * the proxy process faked: the fake proxy acks each snapshot and says it is ready. `events`
 * gets the fake proxy's spawn, drain and signals; `files` are the definitions (api-1 by default);
 * `settings` override the agent's.
 */
export async function startHost(
  t: Test,
  consul: ConsulPort,
  events: string[],
  files: Record<string, unknown> = {
    'api.json': {
      service: {
        name: 'api',
        id: 'api-1',
        port: 8081,
        connect: { sidecar_service: { port: 21001 } },
      },
    },
  },
  settings: Partial<AgentSettings> = {},
  onSnapshot?: (s: ProxySnapshot) => void,
  /** Wraps the fake control plane (to watch or refuse its requests). */
  wrapControl: (control: ControlPort) => ControlPort = (c) => c,
): Promise<FakeHost> {
  const host = await createHostDir(t, files);
  const clock = createClock();
  const proxies = createFakeProxies({ events, ...(onSnapshot ? { onSnapshot } : {}) });
  t.teardown(() => proxies.close());
  const agent = createAgent({
    settings: host.settings(settings),
    consul,
    control: wrapControl(createFakeControl(clock)),
    processes: proxies.processes,
    clock,
    random: () => 0.5,
    logger: createSilentLogger(),
  });
  t.teardown(() => agent.stop());
  await agent.start();
  return {
    agent,
    configDir: host.configDir,
    dataDir: host.settings().dataDir,
    proxyStatus: (ready, reason) => proxies.status(ready, reason),
  };
}
