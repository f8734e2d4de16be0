// Consul's `Expose` block of the `proxy-defaults` entry (`global`) and of a service's
// `service-defaults` entry, merged into its sidecar's `proxy.expose` as a Consul agent with
// central service config merges them (agent/configentry resolve.go, then MergeServiceConfig):
// service-defaults over proxy-defaults, then the definition over both, with `Checks` true when any
// of the three says so and `Paths` taken whole from the first that lists any (never combined).
import { EXPOSE_PROTOCOLS, exposePathProblem, type ExposePath } from '../lib/proxy-api/index.ts';

/** What one entry's `Expose` gives, checked: bad values are reported and left out. */
export interface ExposeLayer {
  checks: boolean;
  /**
   * Present when the entry lists at least one path, even if none of them can apply: a list
   * written there still replaces the paths of the entries under it, as in Consul.
   */
  paths?: ExposePath[];
}

/** Where an instance's exposed paths or `checks` come from. */
export type ExposeSource = 'definition' | 'service-defaults' | 'proxy-defaults';

export interface MergedExpose {
  paths: ExposePath[];
  /** Null when no source lists a path. */
  pathsFrom: ExposeSource | null;
  /** The first source that sets `checks = true`; null when none does. */
  checksFrom: ExposeSource | null;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `o[pascal]`, else its snake_case alias (an entry written in HCL's spelling). */
function field(o: Obj, pascal: string, snake: string): unknown {
  return o[pascal] ?? o[snake];
}

/** `o[key]` as a port, or why it is not one. */
function portOf(o: Obj, pascal: string, snake: string): number | string {
  const v = field(o, pascal, snake);
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535) return v;
  return `${pascal} must be a port from 1 to 65535, got ${JSON.stringify(v) ?? 'nothing'}`;
}

/** One path of an entry's `Expose.Paths`, or why it cannot apply. */
function exposePathOf(raw: unknown, taken: Map<number, number>, i: number): ExposePath | string {
  if (!isObj(raw)) return `must be an object, got ${JSON.stringify(raw)}`;
  const path = field(raw, 'Path', 'path');
  if (typeof path !== 'string') return `Path must be a string, got ${JSON.stringify(path)}`;
  const problem = exposePathProblem(path);
  if (problem !== null) return `Path ${problem}, got ${JSON.stringify(path)}`;
  const localPathPort = portOf(raw, 'LocalPathPort', 'local_path_port');
  if (typeof localPathPort === 'string') return localPathPort;
  const listenerPort = portOf(raw, 'ListenerPort', 'listener_port');
  if (typeof listenerPort === 'string') return listenerPort;
  const other = taken.get(listenerPort);
  if (other !== undefined) return `ListenerPort ${listenerPort} is already Paths[${other}]'s`;
  const given = field(raw, 'Protocol', 'protocol');
  const protocol = given === undefined || given === null || given === '' ? 'http' : given;
  const lower = typeof protocol === 'string' ? protocol.toLowerCase() : protocol;
  if (!(EXPOSE_PROTOCOLS as readonly unknown[]).includes(lower))
    return `Protocol must be "http" or "http2", got ${JSON.stringify(given)}`;
  taken.set(listenerPort, i);
  return { path, localPathPort, listenerPort, protocol: lower as ExposePath['protocol'] };
}

/**
 * An entry's `Expose` (`where` names the entry in messages): each bad value is reported in
 * `found` under a key starting with `key` and left out — a bad `Checks` reads as false, a bad path
 * is not exposed, and the rest of the block applies. Null when the block sets nothing.
 */
export function exposeLayerOf(
  v: unknown,
  where: string,
  key: string,
  found: Map<string, string>,
): ExposeLayer | null {
  if (v === undefined || v === null) return null;
  const ignored = (what: string) => `${where}: Expose${what}; it is ignored`;
  if (!isObj(v)) {
    found.set(key, ignored(` must be an object, got ${JSON.stringify(v)}`));
    return null;
  }
  const checksRaw = field(v, 'Checks', 'checks');
  let checks = false;
  if (typeof checksRaw === 'boolean') checks = checksRaw;
  else if (checksRaw !== undefined && checksRaw !== null)
    found.set(
      `${key}/checks`,
      `${where}: Expose.Checks must be true or false, got ${JSON.stringify(checksRaw)}; it is read as false (checks keep probing the app directly)`,
    );
  const pathsRaw = field(v, 'Paths', 'paths');
  if (pathsRaw === undefined || pathsRaw === null) return checks ? { checks } : null;
  if (!Array.isArray(pathsRaw)) {
    found.set(`${key}/paths`, ignored(`.Paths must be an array, got ${JSON.stringify(pathsRaw)}`));
    return checks ? { checks } : null;
  }
  if (pathsRaw.length === 0) return checks ? { checks } : null;
  const taken = new Map<number, number>();
  const paths: ExposePath[] = [];
  pathsRaw.forEach((raw, i) => {
    const p = exposePathOf(raw, taken, i);
    if (typeof p !== 'string') paths.push(p);
    else
      found.set(
        `${key}/paths/${i}`,
        `${where}: Expose.Paths[${i}] ${p}; that path is not exposed (the entry's other paths are)`,
      );
  });
  return { checks, paths };
}

/** A checked layer back in Consul's spelling (what a cache file holds is checked again). */
export function consulExposeOf(layer: ExposeLayer): Obj {
  return {
    Checks: layer.checks,
    ...(layer.paths
      ? {
          Paths: layer.paths.map((p) => ({
            Path: p.path,
            LocalPathPort: p.localPathPort,
            ListenerPort: p.listenerPort,
            Protocol: p.protocol,
          })),
        }
      : {}),
  };
}

/**
 * A sidecar's exposed paths and checks: `Checks` is true when the definition, service-defaults
 * or proxy-defaults says so; `Paths` are the definition's when it lists any, else
 * service-defaults' when they list any, else proxy-defaults' (Consul fills only what is empty,
 * field by field, and never appends one list to another).
 */
export function mergeExpose(o: {
  definition: { paths: readonly ExposePath[]; checks: boolean };
  serviceDefaults: ExposeLayer | null;
  proxyDefaults: ExposeLayer | null;
}): MergedExpose {
  const layers: [ExposeSource, { checks: boolean; paths?: readonly ExposePath[] } | null][] = [
    ['definition', o.definition.paths.length > 0 ? o.definition : { checks: o.definition.checks }],
    ['service-defaults', o.serviceDefaults],
    ['proxy-defaults', o.proxyDefaults],
  ];
  const withPaths = layers.find(([, l]) => l?.paths !== undefined);
  return {
    paths: withPaths ? [...withPaths[1]!.paths!] : [],
    pathsFrom: withPaths ? withPaths[0] : null,
    checksFrom: layers.find(([, l]) => l?.checks === true)?.[0] ?? null,
  };
}

/** The entry a source names, for messages. */
export function exposeSourceName(source: ExposeSource, service: string): string {
  return source === 'service-defaults'
    ? `service-defaults of ${service}`
    : source === 'proxy-defaults'
      ? 'proxy-defaults global'
      : 'its definition';
}
