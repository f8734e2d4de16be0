// Custom access-log formats: Consul's proxy-defaults `AccessLogs.TextFormat` (a line with Envoy
// command operators such as `%START_TIME%` and `%REQ(:METHOD)%`) and `AccessLogs.JSONFormat` (a
// JSON object whose string values are such lines). A format is checked once, by the agent before
// it sends it and by the proxy when a snapshot brings it, and compiled once into a function that
// renders a line from what the proxy knows about a request, stream or TCP connection.
import { hostname } from 'node:os';

/** What every access-log line is made from (the default line is this object, as JSON). */
export interface AccessEntry {
  direction: 'inbound' | 'outbound' | 'exposed';
  source: string;
  destination: string;
  protocol: 'HTTP/1.1' | 'HTTP/2' | 'tcp';
  method?: string;
  /** The request path without its query string (which may carry secrets). */
  path?: string;
  /** HTTP status the caller got; absent for TCP. */
  status?: number;
  /** The `x-remora-error` code of an answer the proxy made up, or why a connection ended. */
  error?: string;
  durationMs: number;
  /** The endpoint (Consul service ID) of the last attempt, outbound. */
  endpoint?: string | null;
  retries?: number;
  /** TCP: bytes from the client and to it. */
  bytesIn?: number;
  bytesOut?: number;
}

/** Header fields as HTTP/1.1 keeps them (flattened name, value pairs) or as node:http2 does. */
export type HeaderView = string[] | { [name: string]: string | string[] | number | undefined };

/** A socket's addresses, read only when a format asks for them. */
export interface SocketView {
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
}

/** What only a custom format reads; the default line leaves it out. */
export interface AccessDetail {
  requestHeaders?: HeaderView;
  responseHeaders?: HeaderView;
  /** HTTP/1.1's Host (HTTP/2 carries `:authority` in its headers). */
  authority?: string;
  /** The connection the request came in on. */
  downstream?: SocketView | null;
  /** Outbound: the endpoint of the last attempt; inbound: the local app. */
  upstream?: { readonly address: string; readonly port: number } | null;
  /** Inbound: the caller's SPIFFE ID. */
  downstreamPeer?: string | null;
  /** HTTP: body bytes, when their length was known. */
  requestBytes?: number;
  responseBytes?: number;
}

/** Consul's `TextFormat` or `JSONFormat` (a JSON object in a string); at most one. */
export interface AccessFormatSpec {
  textFormat?: string;
  jsonFormat?: string;
}

type Value = string | number | null;
type Op = (e: AccessEntry, d: AccessDetail | undefined, startMs: number) => Value;
type Part = string | Op;

/** Header fields never written, whatever a format asks: they carry credentials. */
const REDACTED = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);

/** Envoy's response flags for the answers Remora makes up (others have none). */
const RESPONSE_FLAGS: Record<string, string> = {
  REMORA_E_PROXY_NO_ENDPOINTS: 'UH',
  REMORA_E_PROXY_CONNECT_FAILED: 'UF',
  REMORA_E_PROXY_CONNECT_TIMEOUT: 'UF',
  REMORA_E_PROXY_APP_UNAVAILABLE: 'UF',
  REMORA_E_PROXY_UPSTREAM_IDENTITY: 'UF',
  REMORA_E_PROXY_REQUEST_TIMEOUT: 'UT',
  REMORA_E_PROXY_OVERLOADED: 'UO',
  REMORA_E_PROXY_UPSTREAM_RESET: 'UR',
  REMORA_E_PROXY_BAD_REQUEST: 'DPE',
  REMORA_E_PROXY_HEADERS_TOO_LARGE: 'DPE',
};

/** Operators Envoy knows that Remora accepts but has nothing for: `-` in text, null in JSON. */
const EMPTY_OPERATORS = [
  'ROUTE_NAME',
  'UPSTREAM_LOCAL_ADDRESS',
  'REQUESTED_SERVER_NAME',
  'UPSTREAM_TRANSPORT_FAILURE_REASON',
  'CONNECTION_TERMINATION_DETAILS',
  'UPSTREAM_PEER_URI_SAN',
];

const hostPort = (a: string | undefined, p: number | undefined): Value =>
  a === undefined ? null : a.includes(':') ? `[${a}]:${p}` : `${a}:${p}`;
const address = (s: SocketView | null | undefined, local: boolean): Value =>
  local ? hostPort(s?.localAddress, s?.localPort) : hostPort(s?.remoteAddress, s?.remotePort);

/** The host's name, read once. */
let host: string | undefined;

/** Operators without an argument. */
const SIMPLE: Record<string, Op> = {
  DURATION: (e) => Math.round(e.durationMs),
  RESPONSE_CODE: (e) => e.status ?? 0,
  RESPONSE_FLAGS: (e) => (e.error === undefined ? null : (RESPONSE_FLAGS[e.error] ?? null)),
  RESPONSE_CODE_DETAILS: (e) => e.error ?? (e.status === undefined ? null : 'via_upstream'),
  PROTOCOL: (e) => (e.protocol === 'tcp' ? null : e.protocol),
  BYTES_RECEIVED: (e, d) => e.bytesIn ?? d?.requestBytes ?? null,
  BYTES_SENT: (e, d) => e.bytesOut ?? d?.responseBytes ?? null,
  UPSTREAM_HOST: (_e, d) => hostPort(d?.upstream?.address, d?.upstream?.port),
  UPSTREAM_CLUSTER: (e) => (e.direction === 'outbound' ? e.destination : 'local_app'),
  UPSTREAM_REQUEST_ATTEMPT_COUNT: (e) => (e.retries ?? 0) + 1,
  DOWNSTREAM_REMOTE_ADDRESS: (_e, d) => address(d?.downstream, false),
  DOWNSTREAM_LOCAL_ADDRESS: (_e, d) => address(d?.downstream, true),
  DOWNSTREAM_PEER_URI_SAN: (_e, d) => d?.downstreamPeer ?? null,
  HOSTNAME: () => (host ??= hostname()),
  REMORA_DIRECTION: (e) => e.direction,
  REMORA_SOURCE: (e) => e.source,
  REMORA_DESTINATION: (e) => e.destination,
  REMORA_ENDPOINT: (e) => e.endpoint ?? null,
  REMORA_ERROR: (e) => e.error ?? null,
};
for (const name of EMPTY_OPERATORS) SIMPLE[name] = () => null;

/** Operators that return numbers keep their type in a JSON format. */
const NUMERIC = new Set([
  'DURATION',
  'RESPONSE_CODE',
  'BYTES_RECEIVED',
  'BYTES_SENT',
  'UPSTREAM_REQUEST_ATTEMPT_COUNT',
]);

/** Every operator a format may use, for the error that names an unknown one. */
export const ACCESS_FORMAT_OPERATORS: readonly string[] = [
  'START_TIME',
  'REQ',
  'RESP',
  ...Object.keys(SIMPLE),
];

function header(view: HeaderView | undefined, name: string): string | null {
  if (view === undefined) return null;
  if (Array.isArray(view)) {
    for (let i = 0; i < view.length; i += 2)
      if (view[i]!.toLowerCase() === name) return view[i + 1]!;
    return null;
  }
  const v = view[name];
  if (v === undefined) return null;
  return Array.isArray(v) ? v.join(',') : String(v);
}

/** A request field: the pseudo-headers of HTTP/2 also name HTTP/1.1's method, path and Host. */
function requestField(e: AccessEntry, d: AccessDetail | undefined, name: string): string | null {
  if (name === ':path') return e.path ?? null; // never with its query string
  if (name === ':method') return e.method ?? null;
  if (name === ':authority' && d?.authority !== undefined) return d.authority;
  return header(d?.requestHeaders, name);
}

function headerOp(
  kind: 'REQ' | 'RESP',
  arg: string | undefined,
  max: number | undefined,
  where: string,
): Op {
  if (arg === undefined || arg === '')
    throw new Error(`${where}: %${kind}(...)% needs a header name, as in %${kind}(:AUTHORITY)%`);
  const names = arg.split('?').map((n) => n.trim().toLowerCase());
  if (names.length > 2 || names.some((n) => !/^:?[a-z0-9!#$&'*+.^_`|~-]+$/.test(n)))
    throw new Error(
      `${where}: %${kind}(${arg})% must name a header, or a header and a fallback as in X-ENVOY-ORIGINAL-PATH?:PATH`,
    );
  const get =
    kind === 'REQ'
      ? (e: AccessEntry, d: AccessDetail | undefined, n: string) => requestField(e, d, n)
      : (_e: AccessEntry, d: AccessDetail | undefined, n: string) => header(d?.responseHeaders, n);
  return (e, d) => {
    for (const n of names) {
      if (REDACTED.has(n)) return '[redacted]';
      const v = get(e, d, n);
      if (v !== null) return max === undefined ? v : v.slice(0, max);
    }
    return null;
  };
}

const pad = (n: number, w: number) => String(n).padStart(w, '0');

/** `%START_TIME(...)%`'s strftime-like specifiers, in UTC as Envoy writes them. */
function timeFormat(fmt: string, where: string): (ms: number) => string {
  const pieces: ((t: Date, ms: number) => string)[] = [];
  for (let i = 0; i < fmt.length; i++) {
    const c = fmt[i]!;
    if (c !== '%') {
      pieces.push(() => c);
      continue;
    }
    const m = /^(\d?)([YmdHMSsfz%])/.exec(fmt.slice(i + 1));
    if (m === null || (m[1] !== '' && m[2] !== 'f'))
      throw new Error(
        `${where}: %START_TIME(${fmt})% uses ${JSON.stringify(fmt.slice(i, i + 3))}; the specifiers are %Y %m %d %H %M %S %s %z %f %3f %6f %9f and %%`,
      );
    i += m[0].length;
    const digits = m[1] === '' ? 9 : Number(m[1]);
    pieces.push(
      {
        Y: (t: Date) => String(t.getUTCFullYear()),
        m: (t: Date) => pad(t.getUTCMonth() + 1, 2),
        d: (t: Date) => pad(t.getUTCDate(), 2),
        H: (t: Date) => pad(t.getUTCHours(), 2),
        M: (t: Date) => pad(t.getUTCMinutes(), 2),
        S: (t: Date) => pad(t.getUTCSeconds(), 2),
        s: (_t: Date, ms: number) => String(Math.floor(ms / 1000)),
        z: () => '+0000',
        // to the microsecond (a timestamp in ms holds no finer digit), padded to nine
        f: (_t: Date, ms: number) =>
          `${pad(Math.floor((ms % 1000) * 1000), 6)}000`.slice(0, Math.max(1, digits)),
        '%': () => '%',
      }[m[2]!]!,
    );
  }
  return (ms) => {
    const t = new Date(ms);
    let s = '';
    for (const p of pieces) s += p(t, ms);
    return s;
  };
}

function operator(name: string, arg: string | undefined, max: number | undefined, where: string) {
  if (name === 'REQ' || name === 'RESP') return headerOp(name, arg, max, where);
  if (name === 'START_TIME') {
    if (arg === undefined)
      return (_e: AccessEntry, _d: AccessDetail | undefined, start: number) =>
        new Date(start).toISOString();
    const f = timeFormat(arg, where);
    return (_e: AccessEntry, _d: AccessDetail | undefined, start: number) => f(start);
  }
  const op = SIMPLE[name];
  if (op === undefined)
    throw new Error(
      `${where}: %${name}% is not an operator Remora's proxies know; they know ${ACCESS_FORMAT_OPERATORS.join(', ')}`,
    );
  if (arg !== undefined) throw new Error(`${where}: %${name}% takes no argument`);
  return op;
}

/** A format string split into text and operators. */
function parseLine(text: string, where: string): Part[] {
  const parts: Part[] = [];
  let literal = '';
  let i = 0;
  while (i < text.length) {
    const at = text.indexOf('%', i);
    if (at === -1) {
      literal += text.slice(i);
      break;
    }
    literal += text.slice(i, at);
    const m = /^%([A-Z_]+)(?:\(([^()]*)\))?(?::(\d+))?%/.exec(text.slice(at));
    if (m === null)
      throw new Error(
        `${where}: the "%" at character ${at + 1} does not start an operator such as %START_TIME% or %REQ(:PATH)%`,
      );
    if (literal !== '') parts.push(literal);
    literal = '';
    const max = m[3] === undefined ? undefined : Number(m[3]);
    if (max !== undefined && m[1] !== 'REQ' && m[1] !== 'RESP')
      throw new Error(`${where}: only %REQ(...)% and %RESP(...)% take a length, not %${m[1]}%`);
    parts.push(operator(m[1]!, m[2], max, where));
    i = at + m[0].length;
  }
  if (literal !== '') parts.push(literal);
  return parts;
}

type Render = (e: AccessEntry, d: AccessDetail | undefined, startMs: number) => string;

function textRenderer(parts: Part[]): Render {
  return (e, d, start) => {
    let s = '';
    for (const p of parts) {
      if (typeof p === 'string') s += p;
      else {
        const v = p(e, d, start);
        s += v === null ? '-' : v;
      }
    }
    return s;
  };
}

type JsonNode = (e: AccessEntry, d: AccessDetail | undefined, startMs: number) => unknown;

function jsonNode(v: unknown, where: string): JsonNode {
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return () => v;
  if (typeof v === 'string') {
    const parts = parseLine(v, where);
    if (parts.length === 1 && typeof parts[0] === 'function') {
      // one operator alone keeps its type (a number stays a number), as Envoy does
      const op = parts[0];
      const name = /^%([A-Z_]+)/.exec(v)![1]!;
      if (NUMERIC.has(name)) return op;
      return (e, d, start) => {
        const x = op(e, d, start);
        return x === null ? null : String(x);
      };
    }
    return textRenderer(parts);
  }
  if (typeof v === 'object' && !Array.isArray(v)) {
    const entries = Object.entries(v).map(([k, x]) => [k, jsonNode(x, `${where}.${k}`)] as const);
    return (e, d, start) => {
      const out: Record<string, unknown> = {};
      for (const [k, f] of entries) out[k] = f(e, d, start);
      return out;
    };
  }
  throw new Error(`${where} must be a string, number, boolean or object, not ${JSON.stringify(v)}`);
}

/** A checked format, compiled: the whole line, newline included. */
export type AccessLineRenderer = (
  e: AccessEntry,
  d: AccessDetail | undefined,
  nowMs: number,
) => string;

/**
 * Checks a format and compiles it; throws an Error whose message names the field, the problem
 * and what is allowed. Undefined when neither format is set (the proxy's own JSON line).
 */
export function compileAccessFormat(spec: AccessFormatSpec): AccessLineRenderer | undefined {
  const { textFormat, jsonFormat } = spec;
  if (textFormat !== undefined && jsonFormat !== undefined)
    throw new Error('TextFormat and JSONFormat cannot both be set; keep one');
  if (textFormat !== undefined) {
    const line = textFormat.endsWith('\n') ? textFormat.slice(0, -1) : textFormat;
    if (line === '' || line.includes('\n'))
      throw new Error('TextFormat must be one line that is not empty (a newline may end it)');
    const render = textRenderer(parseLine(line, 'TextFormat'));
    return (e, d, now) => `${render(e, d, now - e.durationMs)}\n`;
  }
  if (jsonFormat !== undefined) {
    let tree: unknown;
    try {
      tree = JSON.parse(jsonFormat);
    } catch (err) {
      throw new Error(`JSONFormat is not JSON: ${(err as Error).message}`, { cause: err });
    }
    if (typeof tree !== 'object' || tree === null || Array.isArray(tree))
      throw new Error('JSONFormat must be a JSON object whose values are format strings');
    const node = jsonNode(tree, 'JSONFormat');
    return (e, d, now) => `${JSON.stringify(node(e, d, now - e.durationMs))}\n`;
  }
  return undefined;
}
