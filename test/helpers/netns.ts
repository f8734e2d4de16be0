// A lab of "hosts" on this machine: one network namespace per host, each joined by a veth pair to
// a bridge that lives in its own hub namespace, so nothing touches the root namespace. Names are
// unique per run (they carry this process's PID), teardown always deletes every namespace, and
// stale namespaces of a crashed earlier run (whose PID is gone) are removed before a new lab.
import {
  execFile,
  execFileSync,
  spawn,
  type ChildProcess,
  type SpawnOptions,
} from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Every namespace this harness creates starts with this prefix (then `<pid>-<run>-<host>`). */
export const LAB_PREFIX = 'rlab';
export const DEFAULT_LAB_SUBNET = '10.213.0';
/** The IPv6 prefix (a unique local /64) the hosts share: host .11 is `fd00:213::11`. */
export const LAB_SUBNET6 = 'fd00:213::';

export interface LabHostSpec {
  /** Short host name, [a-z0-9]{1,8}; becomes part of the namespace and veth names. */
  name: string;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface LabHost {
  readonly name: string;
  /** The network namespace name (for `ip netns exec`). */
  readonly ns: string;
  /** The host's address on the lab bridge. */
  readonly ip: string;
  /** Its IPv6 address on the bridge (`fd00:213::<n>`), or null where namespaces lack IPv6. */
  readonly ip6: string | null;
  /** Starts a long-running process inside the host; the lab stops it on destroy(). */
  spawn(command: string, args: string[], options?: SpawnOptions): ChildProcess;
  /** Runs a command inside the host to completion, with a deadline. */
  run(
    command: string,
    args: string[],
    options?: { timeoutMs?: number; input?: string; env?: Record<string, string> },
  ): Promise<RunResult>;
  /** Runs a Node.js ES module script (given as source) inside the host and collects its output. */
  node(
    source: string,
    options?: { timeoutMs?: number; env?: Record<string, string> },
  ): Promise<RunResult>;
  /** Takes the host's link on the bridge down (as a pulled cable) or back up. */
  setLink(up: boolean): Promise<void>;
}

export interface Lab {
  readonly id: string;
  readonly hub: string;
  readonly hosts: Record<string, LabHost>;
  /** Every namespace of the lab, hub first. */
  namespaces(): string[];
  /** Stops every process started in the lab's namespaces and deletes the namespaces. Idempotent. */
  destroy(): Promise<void>;
}

async function ip(args: string[]): Promise<void> {
  try {
    await execFileAsync('ip', args, { timeout: 10_000 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`, {
      cause: err,
    });
  }
}

/** Namespaces that currently exist (names only). */
export function listNamespaces(): string[] {
  try {
    const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    return out
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0] ?? '')
      .filter(Boolean);
  } catch {
    return [];
  }
}

function pidsIn(ns: string): number[] {
  try {
    const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
    return out
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Synchronous teardown: SIGKILL what runs inside, then delete. Used by exit hooks and cleanup. */
function deleteNamespacesSync(namespaces: string[]): void {
  for (const ns of namespaces) {
    for (const pid of pidsIn(ns)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  for (const ns of namespaces) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
}

/** Removes namespaces left by an earlier lab whose test process no longer exists. */
export function removeStaleLabs(): string[] {
  const stale = listNamespaces().filter((ns) => {
    const m = new RegExp(`^${LAB_PREFIX}(\\d+)-`).exec(ns);
    return m !== null && Number(m[1]) !== process.pid && !alive(Number(m[1]));
  });
  deleteNamespacesSync(stale);
  return stale;
}

let support: Promise<string | null> | undefined;

/**
 * Why a lab cannot be built here, or null when it can. Checks root, the `ip` tool and that a
 * namespace can actually be created (containers without CAP_SYS_ADMIN refuse it).
 */
export function labUnsupportedReason(): Promise<string | null> {
  support ??= (async () => {
    if (process.platform !== 'linux')
      return `network namespaces need Linux (this is ${process.platform})`;
    if (typeof process.getuid === 'function' && process.getuid() !== 0)
      return 'network namespaces need root (run the lab tests as root, as CI does)';
    try {
      await execFileAsync('ip', ['-V']);
    } catch {
      return 'the `ip` tool is missing (install with: apt-get install -y iproute2)';
    }
    const probe = `${LAB_PREFIX}${process.pid}-probe${randomBytes(2).toString('hex')}`;
    try {
      await ip(['netns', 'add', probe]);
    } catch (err) {
      return `cannot create a network namespace here: ${(err as Error).message}`;
    }
    deleteNamespacesSync([probe]);
    return null;
  })();
  return support;
}

function collect(child: ChildProcess, timeoutMs: number, what: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `${what} did not finish in ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`,
        ),
      );
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

const liveLabs = new Set<Lab>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a test crashes before its teardown: delete what is left, synchronously.
  process.on('exit', () => {
    for (const lab of liveLabs) deleteNamespacesSync(lab.namespaces());
  });
}

export interface CreateLabOptions {
  hosts: LabHostSpec[];
  /** First three octets of the /24 the hosts share; hosts get .11, .12, … in order. */
  subnet?: string;
}

/**
 * Builds the lab: a hub namespace holding bridge `br0`, and per host a namespace whose `eth0` is
 * the peer of `v-<host>` on the bridge. Call labUnsupportedReason() first and skip when it says so.
 */
export async function createLab(options: CreateLabOptions): Promise<Lab> {
  removeStaleLabs();
  installExitHook();
  const subnet = options.subnet ?? DEFAULT_LAB_SUBNET;
  const id = `${LAB_PREFIX}${process.pid}-${randomBytes(2).toString('hex')}`;
  const hub = `${id}-hub`;
  const created: string[] = [];
  const children = new Set<ChildProcess>();
  const hosts: Record<string, LabHost> = {};
  let destroyed = false;

  const lab: Lab = {
    id,
    hub,
    hosts,
    namespaces: () => [...created],
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await Promise.all([...children].map((c) => stopChild(c, 2000)));
      // Anything still running inside (e.g. detached grandchildren) was started by this lab.
      for (const ns of created) {
        for (const pid of pidsIn(ns)) {
          try {
            process.kill(pid, 'SIGTERM');
          } catch {
            /* gone */
          }
        }
      }
      deleteNamespacesSync([...created].reverse());
      liveLabs.delete(lab);
    },
  };
  liveLabs.add(lab);

  try {
    await ip(['netns', 'add', hub]);
    created.push(hub);
    await ip(['-n', hub, 'link', 'add', 'br0', 'type', 'bridge', 'forward_delay', '0']);
    await ip(['-n', hub, 'link', 'set', 'br0', 'up']);
    await ip(['-n', hub, 'link', 'set', 'lo', 'up']);
    let octet = 11;
    for (const spec of options.hosts) {
      if (!/^[a-z0-9]{1,8}$/.test(spec.name))
        throw new Error(`lab host name ${JSON.stringify(spec.name)} must match [a-z0-9]{1,8}`);
      const ns = `${id}-${spec.name}`;
      const veth = `v-${spec.name}`;
      const addr = `${subnet}.${octet}`;
      const addr6 = `${LAB_SUBNET6}${octet++}`;
      await ip(['netns', 'add', ns]);
      created.push(ns);
      await ip([
        '-n',
        hub,
        'link',
        'add',
        veth,
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        ns,
      ]);
      await ip(['-n', hub, 'link', 'set', veth, 'master', 'br0']);
      await ip(['-n', hub, 'link', 'set', veth, 'up']);
      await ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
      // IPv6 too where the kernel has it (nodad: usable at once, no duplicate detection wait)
      const ip6 = await ip(['-n', ns, 'addr', 'add', `${addr6}/64`, 'dev', 'eth0', 'nodad']).then(
        () => addr6,
        () => null,
      );
      await ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      const host: LabHost = {
        name: spec.name,
        ns,
        ip: addr,
        ip6,
        spawn(command, args, spawnOptions = {}) {
          // `ip netns exec` execs the command, so the child's PID is the command's own PID.
          const child = spawn('ip', ['netns', 'exec', ns, command, ...args], {
            stdio: ['ignore', 'pipe', 'pipe'],
            ...spawnOptions,
          });
          children.add(child);
          child.once('exit', () => children.delete(child));
          return child;
        },
        async run(command, args, runOptions = {}) {
          const child = spawn('ip', ['netns', 'exec', ns, command, ...args], {
            stdio: [runOptions.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
            env: { ...process.env, ...runOptions.env },
          });
          child.stdin?.on('error', () => undefined);
          if (runOptions.input !== undefined) child.stdin?.end(runOptions.input);
          return collect(child, runOptions.timeoutMs ?? 15_000, `${command} on ${spec.name}`);
        },
        async node(source, nodeOptions = {}) {
          const child = spawn(
            'ip',
            ['netns', 'exec', ns, process.execPath, '--input-type=module', '-'],
            { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...nodeOptions.env } },
          );
          // a child that dies before reading its script must not crash the test with EPIPE
          child.stdin?.on('error', () => undefined);
          child.stdin?.end(source);
          return collect(child, nodeOptions.timeoutMs ?? 15_000, `node script on ${spec.name}`);
        },
        async setLink(up) {
          await ip(['-n', hub, 'link', 'set', veth, up ? 'up' : 'down']);
        },
      };
      hosts[spec.name] = host;
    }
  } catch (err) {
    await lab.destroy();
    throw err;
  }
  return lab;
}

/**
 * Source of a Node script that performs one HTTP request and prints
 * `{"status":…,"body":…,"headers":{…}}` (or `{"error":"…"}`) on stdout; run it with host.node().
 */
export function httpGetScript(
  url: string,
  options: { timeoutMs?: number; headers?: Record<string, string> } = {},
): string {
  return `
const ac = AbortSignal.timeout(${options.timeoutMs ?? 3000});
try {
  const r = await fetch(${JSON.stringify(url)}, { signal: ac, headers: ${JSON.stringify(options.headers ?? {})} });
  const body = await r.text();
  process.stdout.write(JSON.stringify({ status: r.status, body, headers: Object.fromEntries(r.headers) }));
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err && (err.cause?.code ?? err.name ?? err)) }));
}
// A pending connect to an unreachable host would keep the process alive past the deadline.
process.exit(0);
`;
}

export interface HttpResult {
  status?: number;
  body?: string;
  headers?: Record<string, string>;
  error?: string;
}

/** One HTTP GET made from inside a lab host. */
export async function httpGetFrom(
  host: LabHost,
  url: string,
  options: { timeoutMs?: number; headers?: Record<string, string> } = {},
): Promise<HttpResult> {
  const r = await host.node(httpGetScript(url, options), {
    timeoutMs: (options.timeoutMs ?? 3000) + 10_000,
  });
  try {
    return JSON.parse(r.stdout) as HttpResult;
  } catch {
    return { error: `no result (exit ${r.code}): ${r.stderr.trim()}` };
  }
}
