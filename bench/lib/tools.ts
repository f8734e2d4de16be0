// External tools the bench drives, installed with apt-get when missing (as root), and the
// versions and machine facts the report records.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpus, release } from 'node:os';
import { readFileSync } from 'node:fs';

const PATH_EXTRA = ['/usr/sbin', '/sbin', '/usr/local/sbin'];

/** Adds the sbin directories (haproxy, nginx live there) to PATH for this process. */
export function extendPath(env: NodeJS.ProcessEnv): void {
  const parts = (env.PATH ?? '').split(':');
  for (const p of PATH_EXTRA) if (!parts.includes(p)) parts.push(p);
  env.PATH = parts.join(':');
}

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const PACKAGES: Array<{ cmd: string; pkg: string }> = [
  { cmd: 'wrk', pkg: 'wrk' },
  { cmd: 'haproxy', pkg: 'haproxy' },
  { cmd: 'nginx', pkg: 'nginx' },
  { cmd: 'openssl', pkg: 'openssl' },
  { cmd: 'taskset', pkg: 'util-linux' },
  { cmd: 'curl', pkg: 'curl' },
  { cmd: 'nats-server', pkg: 'nats-server' },
];

/** Installs missing tools with apt-get (waits for another apt to release its lock, bounded). */
export function ensureTools(log: (m: string) => void): void {
  const missing = PACKAGES.filter((p) => !hasCommand(p.cmd)).map((p) => p.pkg);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(
      `missing tools (${missing.join(', ')}); run as root so bench can apt-get install them, or install them yourself`,
    );
  }
  log(`installing with apt-get: ${missing.join(' ')}`);
  const lock = ['-o', 'DPkg::Lock::Timeout=300'];
  execFileSync('apt-get', [...lock, 'update', '-qq'], { stdio: 'ignore', timeout: 600_000 });
  execFileSync(
    'apt-get',
    [...lock, 'install', '-y', '-qq', '--no-install-recommends', ...missing],
    {
      stdio: 'ignore',
      timeout: 900_000,
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    },
  );
  const still = PACKAGES.filter((p) => missing.includes(p.pkg) && !hasCommand(p.cmd));
  if (still.length)
    throw new Error(`apt-get did not provide: ${still.map((p) => p.cmd).join(', ')}`);
}

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  return text.split('\n')[0] ?? '?';
}

export interface MachineFacts {
  cpu: string;
  kernel: string;
  os: string;
  versions: Record<string, string>;
}

export function machineFacts(): MachineFacts {
  let os = '?';
  try {
    const rel = readFileSync('/etc/os-release', 'utf8');
    os = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(rel)?.[1] ?? '?';
    os += ` (debian_version ${readFileSync('/etc/debian_version', 'utf8').trim()})`;
  } catch {
    // not Debian
  }
  const list = cpus();
  return {
    cpu: `${list.length} × ${list[0]?.model ?? '?'}`,
    kernel: release(),
    os,
    versions: {
      node: `node ${process.version} (bundled OpenSSL ${process.versions.openssl})`,
      haproxy: firstLine('haproxy', ['-v']),
      nginx: firstLine('nginx', ['-v']),
      wrk: firstLine('wrk', ['-v']).replace(/\s*Copyright.*/, ''),
      openssl: firstLine('openssl', ['version']),
      'nats-server': firstLine('nats-server', ['--version']),
      remora: gitDescribe(),
    },
  };
}

function gitDescribe(): string {
  try {
    const rev = execFileSync(
      'git',
      ['log', '-1', '--format=%h %cd', '--date=format:%Y-%m-%d %H:%M'],
      {
        encoding: 'utf8',
      },
    ).trim();
    const dirty = execFileSync(
      'git',
      ['status', '--porcelain', '--', 'proxy', 'lib', 'control', 'cli'],
      {
        encoding: 'utf8',
      },
    ).trim();
    return `commit ${rev}${dirty ? ' (+ uncommitted changes in proxy/lib/control/cli)' : ''}`;
  } catch {
    return '?';
  }
}
