// Shared pieces of the environment validation tests: running external validators, finding the
// files they check, and reading systemd unit files.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ALL_SCHEMAS, type ConfigTree, type ProgramSchema } from '../../lib/config/index.ts';

export const repoRoot = new URL('../../', import.meta.url).pathname.replace(/\/$/, '');

/** The folders that hold deployment files. */
export const ENV_DIRS = ['compose', 'vagrant', 'systemd'] as const;

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (never through a shell) and collects its output. */
export function runTool(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      {
        cwd: options.cwd ?? repoRoot,
        env: { ...process.env, ...options.env },
        timeout: options.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({
          code,
          stdout: String(stdout),
          stderr: String(stderr || (err && !stderr ? err.message : '')),
        });
      },
    );
  });
}

/**
 * Why a validator cannot run here, or null when it can. `.ci/run` installs the Debian package when
 * it is missing, so in CI a skip means the package could not be installed (and CI says so).
 */
export async function toolMissing(command: string, debianPackage: string): Promise<string | null> {
  const r = await runTool('sh', ['-c', `command -v ${command}`]);
  if (r.code === 0 && r.stdout.trim()) return null;
  return `${command} is not installed (install with: apt-get install -y ${debianPackage}; .ci/run does this)`;
}

/** Files under `dir` (relative to the repo) whose path matches `test`, skipping generated secrets. */
export function listFiles(dir: string, test: (path: string) => boolean): string[] {
  const out: string[] = [];
  const walk = (abs: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(abs);
    } catch {
      return;
    }
    for (const name of entries.sort()) {
      if (name === '.vagrant' || name === 'node_modules' || name === 'secrets') continue;
      const p = join(abs, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (test(relative(repoRoot, p))) out.push(relative(repoRoot, p));
    }
  };
  walk(join(repoRoot, dir));
  return out;
}

export interface UnitFile {
  /** section → key → values in order (a key may repeat). */
  sections: Map<string, Map<string, string[]>>;
}

/** Parses a systemd unit file (comments, sections, repeated keys; no line continuations needed). */
export function parseUnit(text: string): UnitFile {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      current = sections.get(sec[1]!) ?? new Map<string, string[]>();
      sections.set(sec[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0 || !current) continue;
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    current.set(key, [...(current.get(key) ?? []), value]);
  }
  return { sections };
}

/** The last value of a key (systemd's "last assignment wins" for single-valued keys). */
export function unitValue(unit: UnitFile, section: string, key: string): string | undefined {
  return unit.sections.get(section)?.get(key)?.at(-1);
}

/** All values of a list-valued key, split on whitespace (an empty assignment resets the list). */
export function unitList(unit: UnitFile, section: string, key: string): string[] {
  let out: string[] = [];
  for (const v of unit.sections.get(section)?.get(key) ?? []) {
    if (v === '') out = [];
    else out.push(...v.split(/\s+/));
  }
  return out;
}

export interface DecodedServices {
  services: Array<{ id: string; name: string }>;
  problems: string[];
}

/**
 * Decodes a Consul-format service definition file with the agent's own decoder
 * (agent/definitions.ts) when it is present; otherwise with a structural check of the fields the
 * agent reads, so that these tests do not depend on the order in which parts land.
 */
export async function decodeServiceFile(path: string): Promise<DecodedServices> {
  const text = readFileSync(path, 'utf8');
  const decoderPath = join(repoRoot, 'agent/definitions.ts');
  if (existsSync(decoderPath)) {
    const mod = (await import(decoderPath)) as {
      decodeDefinitionFile?: (
        text: string,
        file: string,
      ) => { services: Array<{ id: string; name: string }>; problems: Error[] };
    };
    if (mod.decodeDefinitionFile) {
      const r = mod.decodeDefinitionFile(text, path);
      return {
        services: r.services.map((s) => ({ id: s.id, name: s.name })),
        problems: r.problems.map((p) => p.message),
      };
    }
  }
  const problems: string[] = [];
  const services: Array<{ id: string; name: string }> = [];
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { services, problems: [`not JSON: ${(err as Error).message}`] };
  }
  const root = doc as { service?: unknown; services?: unknown };
  const list = (root.services ?? (root.service ? [root.service] : [])) as unknown[];
  if (!Array.isArray(list) || list.length === 0) problems.push('no "service" or "services"');
  for (const [i, raw] of (Array.isArray(list) ? list : []).entries()) {
    const s = raw as Record<string, unknown>;
    if (typeof s.name !== 'string' || !s.name) problems.push(`services[${i}].name is missing`);
    if (!Number.isInteger(s.port)) problems.push(`services[${i}].port is not an integer`);
    const upstreams =
      ((s.connect as { sidecar_service?: { proxy?: { upstreams?: unknown[] } } } | undefined)
        ?.sidecar_service?.proxy?.upstreams as Array<Record<string, unknown>> | undefined) ?? [];
    for (const [j, u] of upstreams.entries()) {
      if (typeof u.destination_name !== 'string')
        problems.push(`services[${i}].upstreams[${j}].destination_name is missing`);
      if (!Number.isInteger(u.local_bind_port))
        problems.push(`services[${i}].upstreams[${j}].local_bind_port is not an integer`);
    }
    services.push({ id: typeof s.id === 'string' ? s.id : String(s.name), name: String(s.name) });
  }
  return { services, problems };
}

/** The config schema of a Remora program (`agent`, `control`, `cli`, ...), if there is one. */
export function schemaFor(program: string): ProgramSchema<ConfigTree> | undefined {
  return ALL_SCHEMAS.find((s) => s.program === program);
}
