// Subsets of a service's instances, as a service-resolver defines them and as splitter shares and
// router routes name them: their names (DNS labels) and their compiled filters.
import { compileFilter, HEALTH_ENTRY_SCHEMA } from '../../lib/consul/filter.ts';
import type { Layer } from './entry.ts';

/** Consul's rule for subset names: a DNS label. */
export const SUBSET_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A subset filter compiled once per expression (snapshots are built often, filters rarely change). */
const compiledFilters = new Map<string, (entry: unknown) => boolean>();

/** `expr` compiled against Consul's health entry fields; throws FilterError. */
export function subsetFilter(expr: string): (entry: unknown) => boolean {
  let f = compiledFilters.get(expr);
  if (!f) {
    f = expr.trim() === '' ? () => true : compileFilter(expr, HEALTH_ENTRY_SCHEMA);
    if (compiledFilters.size >= 1024) compiledFilters.clear();
    compiledFilters.set(expr, f);
  }
  return f;
}

/** A cached subset name, or throws (the caller drops what holds it). */
export function checkedSubsetName(v: unknown): string {
  if (typeof v !== 'string' || !SUBSET_NAME.test(v)) throw new Error('bad subset');
  return v;
}

/**
 * The `ServiceSubset` of a share or route destination: a DNS label, or undefined (none, or a bad
 * one, reported: the calls go to the service's default subset).
 */
export function subsetField(
  item: Layer,
  key: string,
  where: string,
  found: Map<string, string>,
): string | undefined {
  const v = item.ServiceSubset;
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'string' && SUBSET_NAME.test(v)) return v;
  found.set(
    `${key}/ServiceSubset`,
    `${where}.ServiceSubset ${JSON.stringify(v)} is not a subset name (a DNS label); it is ignored`,
  );
  return undefined;
}
