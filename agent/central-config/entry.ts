// What the readers of every config entry kind share: an entry (or a part of one) as a plain
// object, Consul's snake_case aliases of its field names, own-key look-ups in the maps built from
// entries, and Consul's durations.
import { durationMs } from '../definitions.ts';

export type Layer = Record<string, unknown>;

/** `v[pascal]`, else Consul's snake_case alias of it (what an entry written as given may hold). */
export function aliased(v: Layer, pascal: string, snake: string): unknown {
  return v[pascal] ?? v[snake];
}

/**
 * `rec[key]`, or null: own keys only, so that a service named `constructor` or `toString` finds
 * no entry instead of Object's.
 */
export function own<T>(rec: Readonly<Record<string, T>>, key: string): T | null {
  return Object.hasOwn(rec, key) ? (rec[key] ?? null) : null;
}

export const isLayer = (v: unknown): v is Layer =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A Consul duration field in milliseconds: a Go duration string ("5s", "1m30s") or a number of
 * nanoseconds (how Consul's API also accepts it). Undefined when unset or zero (Consul's "use the
 * default"), null when it is not a duration.
 */
export function resolverDuration(v: unknown): number | undefined | null {
  if (v === undefined || v === null || v === '' || v === 0) return undefined;
  const ms =
    typeof v === 'string'
      ? durationMs(v)
      : typeof v === 'number' && Number.isFinite(v) && v > 0
        ? Math.round(v / 1e6)
        : null;
  if (ms === null) return null;
  return ms === 0 ? undefined : ms;
}
