// Starting and signalling proxy processes. Proxies are spawned detached, in their own process
// group, with output appended to a log file, so that they outlive an agent restart.
import { spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PROXY_NODE_OPTIONS } from '../lib/proxy-api/index.ts';
import { findExecutable } from '../lib/util/index.ts';

export interface SpawnedProxy {
  pid: number;
  /** Called once when the process exits (only for processes this agent started). */
  onExit(fn: (code: number | null, signal: string | null) => void): void;
}

export interface SpawnProxyRequest {
  instance: string;
  socketPath: string;
  adminPort: number;
  logFile: string;
  /** A successor taking over from the instance's running proxy (`--takeover`). */
  takeover?: boolean;
}

export type SpawnProxy = (req: SpawnProxyRequest) => SpawnedProxy;

/** The `remora` entry script of this installation. */
export const DEFAULT_REMORA_BIN = fileURLToPath(new URL('../bin/remora.js', import.meta.url));

/**
 * Compiles the proxy's code into Node's on-disk compile cache, in a short-lived child so that the
 * agent does not keep the proxy's modules: a `remora proxy` that stops at once on a missing
 * snapshot file has loaded every module a running proxy loads, and Node writes their compiled
 * code at exit. Proxies started afterwards find it and never load the TypeScript stripper (about
 * 30 MB of memory each, for as long as they run). Costs about half a second, once per start.
 * The child runs with the proxies' V8 flags: V8 rejects code cached under other flags, and a
 * proxy would compile (and strip) everything again.
 */
export function warmProxyCompileCache(remoraBin: string = DEFAULT_REMORA_BIN): void {
  spawnSync(
    process.execPath,
    [
      ...PROXY_NODE_OPTIONS,
      remoraBin,
      'proxy',
      '--static-config',
      '/nonexistent/remora-compile-cache-warm-up.json',
    ],
    { stdio: 'ignore', timeout: 30_000 },
  );
}

/** Arguments of `remora proxy` for one instance (DESIGN §6). */
export function proxyArgs(req: SpawnProxyRequest): string[] {
  return [
    'proxy',
    '--instance',
    req.instance,
    '--agent-socket',
    req.socketPath,
    '--admin',
    String(req.adminPort),
    ...(req.takeover === true ? ['--takeover'] : []),
  ];
}

/** Capability sets of a process (bit masks from /proc/<pid>/status). */
export interface CapabilitySets {
  inheritable: bigint;
  effective: bigint;
  bounding: bigint;
  ambient: bigint;
}

const CAP_SETPCAP = 8n;
const CAP_NET_ADMIN = 12n;
const has = (set: bigint, cap: bigint): boolean => ((set >> cap) & 1n) === 1n;

/** Parses the Cap* lines of /proc/<pid>/status; null where they are missing (not Linux). */
export function parseCapabilities(status: string): CapabilitySets | null {
  const get = (name: string): bigint | null => {
    const m = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status);
    return m ? BigInt(`0x${m[1]}`) : null;
  };
  const inheritable = get('CapInh');
  const effective = get('CapEff');
  const bounding = get('CapBnd');
  const ambient = get('CapAmb');
  if (inheritable === null || effective === null || bounding === null || ambient === null)
    return null;
  return { inheritable, effective, bounding, ambient };
}

/**
 * How to start a proxy without the agent's CAP_NET_ADMIN. The agent holds it only to install
 * transparent-interception rules: the systemd drop-in grants it as an ambient capability, which
 * every child would inherit, and root (in a container) holds it anyway. A proxy never needs it.
 * Returns the `setpriv` options that clear the ambient and inheritable sets and, when this
 * process may (CAP_SETPCAP, as root), remove CAP_NET_ADMIN from the bounding set; [] when there
 * is nothing to drop.
 */
export function capabilityDropArgs(caps: CapabilitySets | null): string[] {
  if (caps === null) return [];
  const canBound = has(caps.bounding, CAP_NET_ADMIN) && has(caps.effective, CAP_SETPCAP);
  const held =
    has(caps.effective, CAP_NET_ADMIN) ||
    has(caps.ambient, CAP_NET_ADMIN) ||
    has(caps.inheritable, CAP_NET_ADMIN);
  if (!held && !canBound) return [];
  const args = ['--inh-caps=-all', '--ambient-caps=-all'];
  if (canBound) args.push('--bounding-set=-net_admin');
  return args;
}

export interface SpawnerOptions {
  remoraBin: string;
  env: Record<string, string | undefined>;
  /** This process's capabilities (default: read from /proc/self/status). */
  capabilities?: CapabilitySets | null;
  /** Path of `setpriv` (util-linux); default: looked up on PATH. */
  setpriv?: string | null;
  /** Told once when proxies would keep CAP_NET_ADMIN because `setpriv` is missing. */
  onWarning?: (message: string) => void;
}

function ownCapabilities(): CapabilitySets | null {
  try {
    return parseCapabilities(readFileSync('/proc/self/status', 'utf8'));
  } catch {
    return null;
  }
}

export function createProcessSpawner(o: SpawnerOptions): SpawnProxy {
  const drop = capabilityDropArgs(
    o.capabilities === undefined ? ownCapabilities() : o.capabilities,
  );
  let setpriv: string | null = null;
  if (drop.length > 0) {
    setpriv =
      o.setpriv === undefined ? (findExecutable('setpriv', process.env.PATH) ?? null) : o.setpriv;
    if (setpriv === null)
      o.onWarning?.(
        'this agent holds CAP_NET_ADMIN and `setpriv` (util-linux) is not on PATH, so its proxies inherit the capability: install util-linux to start them without it',
      );
  }
  return (req) => {
    const nodeArgs = [...PROXY_NODE_OPTIONS, o.remoraBin, ...proxyArgs(req)];
    // setpriv changes its own capability sets, then executes node in place (same pid)
    const [cmd, args] =
      setpriv === null
        ? [process.execPath, nodeArgs]
        : [setpriv, [...drop, '--', process.execPath, ...nodeArgs]];
    const fd = openSync(req.logFile, 'a', 0o600);
    try {
      const child = spawn(cmd, args, {
        detached: true,
        stdio: ['ignore', fd, fd],
        env: o.env,
      });
      child.unref();
      const pid = child.pid;
      if (pid === undefined) {
        throw new Error(`spawn of ${cmd} ${o.remoraBin} proxy failed`);
      }
      return {
        pid,
        onExit(fn) {
          if (child.exitCode !== null || child.signalCode !== null) {
            fn(child.exitCode, child.signalCode);
            return;
          }
          child.once('exit', (code, signal) => fn(code, signal));
        },
      };
    } finally {
      closeSync(fd);
    }
  };
}

/** True when a process with this pid exists (and may be signalled by us). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * True when `pid` still runs `remora proxy --instance <id>` (guards against a recycled pid).
 * Where /proc is not available the answer is true when the process is alive.
 */
export function isProxyProcess(pid: number, instance: string): boolean {
  if (!isProcessAlive(pid)) return false;
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return process.platform !== 'linux';
  }
  const argv = cmdline.split('\0');
  const i = argv.indexOf('--instance');
  return argv.includes('proxy') && i !== -1 && argv[i + 1] === instance;
}

export function signalProcess(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}
