// Route header changes (`HeaderModifiers`): which fields may be changed, checked where a snapshot
// or a Consul entry is read, and how a change is applied to HTTP/1.1 fields (a flat
// [name, value, …] list) and to HTTP/2 header objects.
import type { HeaderModifiers } from './types.ts';

/** Fields a route may not change: message framing, hop-by-hop fields, the proxy's own. */
const PROTECTED = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'proxy-connection',
  'upgrade',
  'te',
  'trailer',
  'expect',
  'http2-settings',
  'x-remora-error',
  'x-forwarded-client-cert',
]);

const TOKEN = /^[!#$%&'*+.^_`|~0-9a-z-]{1,256}$/;
// visible ASCII, spaces and tabs (and obs-text): no CR, LF or NUL can reach a header line
const VALUE = /^[\t\x20-\x7e\x80-\xff]{0,8192}$/;

/** Why a field name cannot be changed, or null when it can (names are compared lower case). */
export function headerNameProblem(name: string): string | null {
  const lc = name.toLowerCase();
  if (!TOKEN.test(lc)) return 'is not an HTTP field name';
  if (PROTECTED.has(lc)) return 'is a framing, hop-by-hop or proxy field that routes cannot change';
  return null;
}

/** Why a value cannot be sent, or null. */
export function headerValueProblem(value: string): string | null {
  return VALUE.test(value) ? null : 'holds a control character (CR, LF, NUL) or is too long';
}

/** Applies `m` to a flat HTTP/1.1 field list, in place. */
export function modifyH1Headers(headers: string[], m: HeaderModifiers): void {
  const drop = new Set([...(m.remove ?? []), ...Object.keys(m.set ?? {})]);
  if (drop.size > 0) {
    let w = 0;
    for (let i = 0; i < headers.length; i += 2) {
      if (drop.has(headers[i]!.toLowerCase())) continue;
      headers[w++] = headers[i]!;
      headers[w++] = headers[i + 1]!;
    }
    headers.length = w;
  }
  for (const [n, v] of Object.entries(m.set ?? {})) headers.push(n, v);
  for (const [n, v] of Object.entries(m.add ?? {})) headers.push(n, v);
}

/** Applies `m` to a node:http2 header object (lower-case names), in place. */
export function modifyH2Headers(
  headers: Record<string, string | string[] | number | undefined>,
  m: HeaderModifiers,
): void {
  for (const n of m.remove ?? []) delete headers[n];
  for (const [n, v] of Object.entries(m.set ?? {})) headers[n] = v;
  for (const [n, v] of Object.entries(m.add ?? {})) {
    const cur = headers[n];
    headers[n] = cur === undefined ? v : Array.isArray(cur) ? [...cur, v] : [String(cur), v];
  }
}
