import convict from 'convict';
import { readFileSync } from 'node:fs';
import { RemoraError } from '../errors/index.ts';
import { listLeaves, type ConfigLeaf, type ConfigTree, type ProgramSchema } from './define.ts';

/** Structured value type of a schema tree (leaves typed from their defaults). */
export type ConfigOf<T extends ConfigTree> = {
  [K in keyof T]: T[K] extends ConfigLeaf
    ? T[K]['default'] extends readonly string[]
      ? string[]
      : T[K]['default'] extends null
        ? unknown
        : T[K]['default']
    : T[K] extends ConfigTree
      ? ConfigOf<T[K]>
      : never;
};

export interface LoadConfigOptions {
  /** Environment to read `REMORA_<PROGRAM>_*` variables from (inject `process.env` in main). */
  env?: Record<string, string | undefined>;
  /** Path of a JSON config file (`--config`). */
  file?: string;
  /** Values from command-line flags, as a nested object or dotted keys; they win over all. */
  overrides?: Record<string, unknown>;
}

export interface ConfigProblem {
  key: string;
  value: unknown;
  reason: string;
}

const REDACTED = '[redacted]';

function sensitiveKeys(tree: ConfigTree): Set<string> {
  return new Set(
    listLeaves(tree)
      .filter(([, l]) => l.sensitive)
      .map(([k]) => k),
  );
}

function parseConvictMessage(line: string): ConfigProblem {
  const unknown = /^configuration param '(.+)' not declared in the schema$/.exec(line);
  if (unknown)
    return { key: unknown[1] ?? '', value: undefined, reason: 'unknown key (not in the schema)' };
  const m = /^([^:]+): (.*): value was (.*)$/.exec(line);
  if (m) {
    let value: unknown = m[3];
    try {
      value = JSON.parse(m[3] ?? '');
    } catch {
      /* keep the raw text */
    }
    return { key: m[1] ?? '', value, reason: m[2] ?? '' };
  }
  const short = /^([\w.]+): (.*)$/.exec(line);
  if (short) return { key: short[1] ?? '', value: undefined, reason: short[2] ?? '' };
  return { key: '', value: undefined, reason: line };
}

function readFileConfig(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_CONFIG_FILE_UNREADABLE',
      `cannot read config file ${file}: ${(err as Error).message}`,
      { file },
      { cause: err },
    );
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new Error('top level must be a JSON object');
    }
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_CONFIG_FILE_UNREADABLE',
      `config file ${file} is not a valid JSON object: ${(err as Error).message}`,
      { file },
      { cause: err },
    );
  }
}

/** Turns `{ 'a.b': 1 }` into `{ a: { b: 1 } }`; nested input passes through. */
function expandDotted(flat: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(flat)) {
    if (value === undefined) continue;
    const parts = key.split('.');
    let node = out;
    for (const p of parts.slice(0, -1)) {
      node[p] ??= {};
      node = node[p] as Record<string, unknown>;
    }
    node[parts[parts.length - 1] ?? key] = value;
  }
  return out;
}

function flatten(obj: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (typeof v === 'object' && v !== null && !Array.isArray(v))
      Object.assign(out, flatten(v as Record<string, unknown>, path));
    else out[path] = v;
  }
  return out;
}

/**
 * Loads a program's configuration: defaults, then the file, then the environment, then flags.
 * Unknown keys and bad values throw REMORA_E_CONFIG_INVALID whose message names each key, value
 * and reason (sensitive values are redacted).
 */
export function loadConfig<T extends ConfigTree>(
  schema: ProgramSchema<T>,
  options: LoadConfigOptions = {},
): ConfigOf<T> {
  const env = Object.fromEntries(
    Object.entries(options.env ?? {}).filter(([k]) =>
      k.startsWith(`REMORA_${schema.program.toUpperCase()}_`),
    ),
  );
  const problems: ConfigProblem[] = [];
  const known = new Set(listLeaves(schema.tree).map(([k]) => k));
  const leafEnv = new Map(listLeaves(schema.tree).map(([k, l]) => [k, l.env]));
  const envNames = new Set(leafEnv.values());
  for (const name of Object.keys(env)) {
    if (!envNames.has(name)) {
      problems.push({
        key: name,
        value: env[name],
        reason: 'unknown environment variable for this program',
      });
    }
  }
  const conf = convict(schema.tree as convict.Schema<unknown>, { env, args: [] });
  const given: Record<string, unknown> = {};
  try {
    if (options.file) {
      const fileValues = readFileConfig(options.file);
      Object.assign(given, flatten(fileValues));
      conf.load(fileValues);
    }
    // convict re-applies the environment on every load(), so flags go in with set() to win.
    for (const [key, value] of Object.entries(flatten(expandDotted(options.overrides ?? {})))) {
      given[key] = value;
      conf.set(key, value);
    }
    conf.validate({ allowed: 'strict' });
  } catch (err) {
    if (err instanceof RemoraError) throw err;
    const message = (err as Error).message;
    problems.push(...message.split('\n').filter(Boolean).map(parseConvictMessage));
  }
  // convict reports unknown nested keys under a known parent; make sure leaves are known.
  for (const p of problems) {
    if (p.value === undefined && Object.hasOwn(given, p.key)) p.value = given[p.key];
    const envName = leafEnv.get(p.key);
    if (p.value === undefined && envName !== undefined && env[envName] !== undefined) {
      p.value = env[envName];
      p.reason = `${p.reason} (from ${envName})`;
    }
    if (p.key && !known.has(p.key) && !envNames.has(p.key) && !p.reason.startsWith('unknown')) {
      p.reason = `unknown key; ${p.reason}`;
    }
  }
  if (problems.length > 0) {
    const secret = sensitiveKeys(schema.tree);
    const shown = problems.map((p) => ({ ...p, value: secret.has(p.key) ? REDACTED : p.value }));
    const lines = shown.map(
      (p) =>
        `${p.key || '(config)'}=${p.value === undefined ? '(unset)' : JSON.stringify(p.value)}: ${p.reason}`,
    );
    throw new RemoraError(
      'REMORA_E_CONFIG_INVALID',
      `invalid ${schema.program} configuration${options.file ? ` (file ${options.file})` : ''}:\n  ${lines.join('\n  ')}`,
      { program: schema.program, problems: shown },
    );
  }
  return conf.getProperties() as ConfigOf<T>;
}

/** The configuration as a plain object with sensitive values replaced, for `/config` and logs. */
export function redactConfig<T extends ConfigTree>(
  schema: ProgramSchema<T>,
  value: ConfigOf<T>,
): unknown {
  const secret = sensitiveKeys(schema.tree);
  const walk = (node: unknown, prefix: string): unknown => {
    if (typeof node !== 'object' || node === null || Array.isArray(node)) {
      return secret.has(prefix) && node !== '' && node !== null ? REDACTED : node;
    }
    return Object.fromEntries(
      Object.entries(node).map(([k, v]) => [k, walk(v, prefix ? `${prefix}.${k}` : k)]),
    );
  };
  return walk(value, '');
}
