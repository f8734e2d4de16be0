// Header changes (`RequestHeaders`, `ResponseHeaders`: `Add`, `Set`, `Remove`) of a router's
// route destinations, a splitter's shares and an ingress gateway's services (agent/ingress.ts),
// checked as the proxies apply them.
import {
  headerNameProblem,
  headerValueProblem,
  type HeaderModifiers,
} from '../../lib/proxy-api/index.ts';
import { isLayer, type Layer } from './entry.ts';

/**
 * Checked header changes, from Consul's spelling (`Add`, `Set`, `Remove`) or from the cache's;
 * null when empty; throws naming `where` and the field that cannot be changed.
 */
export function headerModifiers(v: unknown, where: string): HeaderModifiers | null {
  if (!isLayer(v)) throw new Error(`${where} must be an object with Add, Set and Remove`);
  const get = (k: string): unknown => v[k] ?? v[k.toLowerCase()];
  const out: HeaderModifiers = {};
  const name = (n: unknown, at: string): string => {
    const problem = typeof n === 'string' ? headerNameProblem(n) : 'is not a string';
    if (problem !== null) throw new Error(`${at} ${JSON.stringify(n)} ${problem}`);
    return (n as string).toLowerCase();
  };
  for (const k of ['Add', 'Set'] as const) {
    const fields = get(k);
    if (fields === undefined || fields === null) continue;
    if (!isLayer(fields)) throw new Error(`${where}.${k} must be a map of field names to values`);
    const m: Record<string, string> = {};
    for (const [n, val] of Object.entries(fields)) {
      const at = `${where}.${k}`;
      const problem = typeof val === 'string' ? headerValueProblem(val) : 'is not a string';
      if (problem !== null) throw new Error(`${at}: the value of ${JSON.stringify(n)} ${problem}`);
      m[name(n, at)] = val as string;
    }
    if (Object.keys(m).length > 0) out[k === 'Add' ? 'add' : 'set'] = m;
  }
  const remove = get('Remove');
  if (remove !== undefined && remove !== null) {
    if (!Array.isArray(remove)) throw new Error(`${where}.Remove must be a list of field names`);
    if (remove.length > 0) out.remove = remove.map((n: unknown) => name(n, `${where}.Remove`));
  }
  return Object.keys(out).length > 0 ? out : null;
}

/** True when `o[key]` is absent or header changes that still check. */
export function cachedModifiers(o: Layer, key: string): boolean {
  if (o[key] === undefined) return true;
  try {
    return headerModifiers(o[key], key) !== null;
  } catch {
    return false;
  }
}
