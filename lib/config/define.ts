import type convict from 'convict';

/** One leaf of a program's schema; every leaf has a doc, a format and a default. */
export interface ConfigLeaf {
  doc: string;
  format: convict.SchemaObj['format'];
  default: unknown;
  /** Filled in by `defineSchema` as REMORA_<PROGRAM>_<KEY_PATH>. */
  env?: string;
  /** Never shown in logs, `/config` or error messages. */
  sensitive?: boolean;
  nullable?: boolean;
}

export interface ConfigTree {
  [key: string]: ConfigLeaf | ConfigTree;
}

export interface ProgramSchema<T extends ConfigTree = ConfigTree> {
  /** Program name: control, agent, proxy, dev, devconsul, cli. */
  readonly program: string;
  /** One line saying what the program is, used in docs/config.md. */
  readonly summary: string;
  readonly tree: T;
}

export function isLeaf(node: ConfigLeaf | ConfigTree): node is ConfigLeaf {
  return Object.hasOwn(node, 'doc') && Object.hasOwn(node, 'default');
}

function envName(program: string, path: string[]): string {
  const key = path
    .map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2'))
    .join('_')
    .toUpperCase();
  return `REMORA_${program.toUpperCase()}_${key}`;
}

function fillEnv(program: string, tree: ConfigTree, path: string[]): void {
  for (const [key, node] of Object.entries(tree)) {
    const here = [...path, key];
    if (isLeaf(node)) node.env ??= envName(program, here);
    else fillEnv(program, node, here);
  }
}

/** Declares a program's schema and names every key's environment variable. */
export function defineSchema<T extends ConfigTree>(
  program: string,
  summary: string,
  tree: T,
): ProgramSchema<T> {
  fillEnv(program, tree, []);
  return { program, summary, tree };
}

/** Every leaf as [dotted path, leaf], depth first in declaration order. */
export function listLeaves(tree: ConfigTree, prefix = ''): Array<[string, ConfigLeaf]> {
  const out: Array<[string, ConfigLeaf]> = [];
  for (const [key, node] of Object.entries(tree)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (isLeaf(node)) out.push([path, node]);
    else out.push(...listLeaves(node, path));
  }
  return out;
}
