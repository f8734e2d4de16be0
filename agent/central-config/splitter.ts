// A destination's `service-splitter` entry: the share of its calls (weights adding up to 100) that
// goes to each service or subset, with each share's header changes.
import type { HeaderModifiers } from '../../lib/proxy-api/index.ts';
import type { ConfigEntry } from '../ports.ts';
import { isLayer, type Layer } from './entry.ts';
import { cachedModifiers, headerModifiers } from './headers.ts';
import { SUBSET_NAME, subsetField } from './subsets.ts';

/**
 * One share of a service-splitter: `weight` percent of the calls go to `service` (to its
 * `subset` when one is named).
 */
export interface SplitShare {
  service: string;
  weight: number;
  subset?: string;
  /** Changes to the share's requests (`RequestHeaders`), after its route's. */
  requestHeaders?: HeaderModifiers;
  /** Changes to their answers (`ResponseHeaders`), after its route's. */
  responseHeaders?: HeaderModifiers;
}

/** Split fields Remora does not implement, by what happens to the share instead. */
const UNSUPPORTED_SPLIT_FIELDS = ['Namespace', 'Partition'] as const;

/**
 * A service-splitter entry's shares, or null (reported in `found`) when it cannot be applied as
 * a whole: no list of splits, a share without a weight from 0 to 100, or weights that do not add
 * up to 100. What Remora does not implement in a share (another namespace or partition) is
 * reported, and the share goes to the named service as it is.
 */
export function splitterShares(e: ConfigEntry, found: Map<string, string>): SplitShare[] | null {
  const where = `service-splitter of ${e.Name}`;
  const ignored = `the splitter is ignored and every call goes to ${e.Name}`;
  const list = e.Splits;
  if (!Array.isArray(list) || list.length === 0) {
    found.set(`p/${e.Name}`, `${where}: Splits must be a non-empty list; ${ignored}`);
    return null;
  }
  const out: SplitShare[] = [];
  for (const [i, item] of list.entries()) {
    const w: unknown = isLayer(item) ? item.Weight : undefined;
    const svc: unknown = isLayer(item) ? (item.Service ?? '') : undefined;
    if (typeof w !== 'number' || !(w >= 0 && w <= 100) || typeof svc !== 'string') {
      found.set(
        `p/${e.Name}`,
        `${where}: Splits[${i}] needs a Weight from 0 to 100 and a Service name; ${ignored}`,
      );
      return null;
    }
    const service = svc === '' ? e.Name : svc;
    const subset = subsetField(item as Layer, `p/${e.Name}/${i}`, `${where}: Splits[${i}]`, found);
    const changes: Pick<SplitShare, 'requestHeaders' | 'responseHeaders'> = {};
    for (const field of ['RequestHeaders', 'ResponseHeaders'] as const) {
      const raw = (item as Layer)[field];
      if (raw === undefined || raw === null) continue;
      try {
        const m = headerModifiers(raw, `${where}: Splits[${i}].${field}`);
        if (m) changes[field === 'RequestHeaders' ? 'requestHeaders' : 'responseHeaders'] = m;
      } catch (err) {
        found.set(
          `p/${e.Name}/${i}/${field}`,
          `${(err as Error).message}; the share applies without these header changes`,
        );
      }
    }
    for (const field of UNSUPPORTED_SPLIT_FIELDS) {
      const v = (item as Layer)[field];
      if (v === undefined || v === null || v === '' || v === 'default') continue;
      if (isLayer(v) && Object.keys(v).length === 0) continue;
      found.set(
        `p/${e.Name}/${i}/${field}`,
        `${where}: Splits[${i}].${field} is not implemented by Remora's agents; it is ignored, and the share goes to every healthy instance of ${service}`,
      );
    }
    out.push({
      service,
      weight: Math.round(w * 100) / 100,
      ...(subset ? { subset } : {}),
      ...changes,
    });
  }
  if (!sumsTo100(out)) {
    const sum = out.reduce((n, s) => n + s.weight, 0);
    found.set(`p/${e.Name}`, `${where}: the weights add up to ${sum}, not 100; ${ignored}`);
    return null;
  }
  return out;
}

/** Weights are percentages to two decimals, as Consul keeps them; their sum is 100. */
function sumsTo100(shares: readonly SplitShare[]): boolean {
  return Math.abs(shares.reduce((n, s) => n + s.weight, 0) - 100) <= 0.01;
}

/** Keeps only a well-formed list of shares (a cache file is trusted no more than Consul). */
export function checkedSplits(v: unknown): SplitShare[] | null {
  if (!Array.isArray(v) || v.length === 0) return null;
  const ok = v.every(
    (s: unknown) =>
      isLayer(s) &&
      typeof s.service === 'string' &&
      s.service !== '' &&
      typeof s.weight === 'number' &&
      s.weight >= 0 &&
      s.weight <= 100 &&
      (s.subset === undefined || (typeof s.subset === 'string' && SUBSET_NAME.test(s.subset))) &&
      cachedModifiers(s, 'requestHeaders') &&
      cachedModifiers(s, 'responseHeaders'),
  );
  return ok && sumsTo100(v as SplitShare[]) ? (v as SplitShare[]) : null;
}
