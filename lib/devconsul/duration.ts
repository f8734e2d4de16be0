/**
 * Go `time.Duration` parsing and formatting, because Consul's JSON carries durations as Go
 * strings ("10s", "1m30s", "500ms") or as numbers of nanoseconds.
 */

const UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  μs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Parses a Go duration string into nanoseconds; throws Go's error text when it is invalid. */
export function parseGoDuration(text: string): number {
  const quoted = `"${text}"`;
  let s = text;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s.startsWith('-')) sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') throw new Error(`time: invalid duration ${quoted}`);
  let total = 0;
  while (s.length > 0) {
    const m = /^(\d*)(\.\d*)?/.exec(s);
    const whole = m?.[1] ?? '';
    const frac = m?.[2] ?? '';
    if (whole === '' && (frac === '' || frac === '.')) {
      throw new Error(`time: invalid duration ${quoted}`);
    }
    s = s.slice(whole.length + frac.length);
    const u = /^[^\d.]+/.exec(s)?.[0] ?? '';
    if (u === '') throw new Error(`time: missing unit in duration ${quoted}`);
    const unit = UNIT_NS[u];
    if (unit === undefined) throw new Error(`time: unknown unit "${u}" in duration ${quoted}`);
    s = s.slice(u.length);
    total += Number(`${whole || '0'}${frac}`) * unit;
  }
  if (!Number.isFinite(total) || total > 9.223372036854775e18) {
    throw new Error(`time: invalid duration ${quoted}`);
  }
  return sign * Math.round(total);
}

/** Formats nanoseconds the way Go's `Duration.String()` does ("10s", "1m0s", "1.5s", "0s"). */
export function formatGoDuration(ns: number): string {
  if (ns === 0) return '0s';
  const neg = ns < 0;
  let u = Math.abs(Math.round(ns));
  let out: string;
  if (u < 1e9) {
    if (u < 1e3) out = `${u}ns`;
    else if (u < 1e6) out = `${trim(u / 1e3)}µs`;
    else out = `${trim(u / 1e6)}ms`;
  } else {
    const h = Math.floor(u / 3600e9);
    u -= h * 3600e9;
    const m = Math.floor(u / 60e9);
    u -= m * 60e9;
    const secs = `${trim(u / 1e9)}s`;
    out = h > 0 ? `${h}h${m}m${secs}` : m > 0 ? `${m}m${secs}` : secs;
  }
  return neg ? `-${out}` : out;
}

function trim(n: number): string {
  return String(Number(n.toFixed(9)));
}

export const NS_PER_MS = 1e6;
