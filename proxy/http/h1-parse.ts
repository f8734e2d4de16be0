// Strict HTTP/1.1 message-head parsing (RFC 9112). This is a security boundary: anything
// ambiguous between two parsers (request smuggling) is refused rather than repaired.
//   - lines end in CRLF; a bare LF or CR is refused
//   - obs-fold (a header line starting with SP/HTAB) is refused
//   - no whitespace between a header name and its colon; names are tokens
//   - values hold only VCHAR, SP, HTAB and obs-text (no CTLs, no NUL)
//   - Content-Length: digits only, at most one header, and never with Transfer-Encoding
//   - Transfer-Encoding: only exactly `chunked`, once, and only on HTTP/1.1
//   - HTTP/1.1 requests carry exactly one Host
// Errors are returned as values (`ParseError`) with the status to answer and a coded reason.
import type { ErrorCode } from '../../lib/errors/index.ts';

export interface HeadLimits {
  /** Bytes of the request/status line plus all header lines. */
  maxHeadBytes: number;
  maxHeaderCount: number;
}

export const DEFAULT_HEAD_LIMITS: HeadLimits = { maxHeadBytes: 16 * 1024, maxHeaderCount: 100 };

export interface ParseError {
  status: 400 | 408 | 413 | 417 | 431 | 501 | 502 | 505;
  code: ErrorCode;
  /** Stable short reason for counting (`remora_http_refused_total{reason}`). */
  reason: string;
  message: string;
}

/** Framing and connection facts shared by requests and responses. */
export interface MessageHead {
  versionMinor: 0 | 1;
  /** Header fields as sent, flattened: [name, value, name, value, …]. */
  headers: string[];
  /** -1 when absent. */
  contentLength: number;
  chunked: boolean;
  /** The connection stays open after this message. */
  keepAlive: boolean;
  /** Lower-cased header names listed in `Connection` (besides close/keep-alive/upgrade). */
  connectionTokens: string[] | null;
  /** `Upgrade` value when `Connection: upgrade` asks for one. */
  upgrade: string | null;
}

export interface RequestHead extends MessageHead {
  method: string;
  target: string;
  host: string;
  expectContinue: boolean;
}

export interface ResponseHead extends MessageHead {
  status: number;
  reason: string;
}

const TCHAR = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// VCHAR / SP / HTAB / obs-text; CTLs (incl. NUL, CR, LF) and DEL refused
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TARGET = /^[\x21-\x7e]+$/;
const DIGITS = /^[0-9]{1,15}$/;

function err(
  status: ParseError['status'],
  reason: string,
  message: string,
  code: ErrorCode = 'REMORA_E_PROXY_BAD_REQUEST',
): ParseError {
  return { status, code, reason, message };
}

export function isParseError(v: unknown): v is ParseError {
  return typeof v === 'object' && v !== null && 'reason' in v && 'status' in v && !('headers' in v);
}

/**
 * Finds the end of a message head in `buf` starting at `from`; returns the index just past
 * the terminating CRLFCRLF, or -1 when not complete yet.
 */
export function findHeadEnd(buf: Buffer, from = 0): number {
  const i = buf.indexOf('\r\n\r\n', from, 'latin1');
  return i === -1 ? -1 : i + 4;
}

interface Fields {
  headers: string[];
  contentLength: number;
  te: string | null;
  teCount: number;
  host: string | null;
  hostCount: number;
  connection: string | null;
  upgrade: string | null;
  expect: string | null;
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** Parses header lines [1, lines.length) of a head; shared by requests, responses and trailers. */
function parseFields(
  lines: string[],
  limits: HeadLimits,
  side: 'request' | 'response',
): Fields | ParseError {
  const count = lines.length - 1;
  if (count > limits.maxHeaderCount)
    return err(
      431,
      'too_many_headers',
      `${count} header fields exceed the limit of ${limits.maxHeaderCount}`,
      'REMORA_E_PROXY_HEADERS_TOO_LARGE',
    );
  const f: Fields = {
    headers: [],
    contentLength: -1,
    te: null,
    teCount: 0,
    host: null,
    hostCount: 0,
    connection: null,
    upgrade: null,
    expect: null,
  };
  const bad = side === 'request' ? 400 : 502;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09)
      return err(
        bad,
        'obs_fold',
        'obsolete line folding (a header line starting with whitespace) is not accepted',
      );
    const colon = line.indexOf(':');
    if (colon <= 0)
      return err(
        bad,
        'bad_header',
        `header line without a name and colon: ${JSON.stringify(line.slice(0, 40))}`,
      );
    const name = line.slice(0, colon);
    if (!TCHAR.test(name))
      return err(
        bad,
        'bad_header_name',
        `invalid header name ${JSON.stringify(name.slice(0, 40))} (whitespace before the colon or a non-token character)`,
      );
    // optional whitespace around the value (SP / HTAB) is not part of it
    let vs = colon + 1;
    let ve = line.length;
    while (vs < ve && isOws(line.charCodeAt(vs))) vs++;
    while (ve > vs && isOws(line.charCodeAt(ve - 1))) ve--;
    const value = line.slice(vs, ve);
    if (!FIELD_VALUE.test(value))
      return err(bad, 'bad_header_value', `header ${name} holds a control character`);
    const len = name.length;
    // fast first-char dispatch for the few headers that matter to framing
    const lc = len >= 4 && len <= 17 ? name.toLowerCase() : '';
    switch (lc) {
      case 'content-length':
        if (f.contentLength !== -1)
          return err(bad, 'duplicate_content_length', 'more than one Content-Length header');
        if (!DIGITS.test(value))
          return err(
            bad,
            'bad_content_length',
            `Content-Length ${JSON.stringify(value.slice(0, 20))} is not a single decimal number`,
          );
        f.contentLength = Number(value);
        break;
      case 'transfer-encoding':
        f.teCount++;
        f.te = value;
        break;
      case 'host':
        f.hostCount++;
        f.host = value;
        break;
      case 'connection':
        f.connection = f.connection === null ? value : `${f.connection}, ${value}`;
        break;
      case 'upgrade':
        f.upgrade = value;
        break;
      case 'expect':
        f.expect = value;
        break;
    }
    f.headers.push(name, value);
  }
  return f;
}

function applyFraming(
  f: Fields,
  versionMinor: 0 | 1,
  side: 'request' | 'response',
):
  | Pick<MessageHead, 'contentLength' | 'chunked' | 'keepAlive' | 'connectionTokens' | 'upgrade'>
  | ParseError {
  const bad = side === 'request' ? 400 : 502;
  let chunked = false;
  if (f.teCount > 0) {
    if (f.teCount > 1)
      return err(bad, 'duplicate_transfer_encoding', 'more than one Transfer-Encoding header');
    if (versionMinor === 0)
      return err(bad, 'te_http10', 'Transfer-Encoding is not allowed in HTTP/1.0');
    if (f.te!.toLowerCase() !== 'chunked')
      return err(
        side === 'request' ? 501 : 502,
        'bad_transfer_encoding',
        `Transfer-Encoding ${JSON.stringify(f.te!.slice(0, 40))} is not supported (only "chunked")`,
      );
    if (f.contentLength !== -1)
      return err(
        bad,
        'content_length_with_te',
        'both Content-Length and Transfer-Encoding are present',
      );
    chunked = true;
  }
  let sawClose = false;
  let sawKeepAlive = false;
  let tokens: string[] | null = null;
  let upgradeAsked = false;
  if (f.connection !== null) {
    for (const raw of f.connection.split(',')) {
      const t = raw.trim().toLowerCase();
      if (t === '') continue;
      if (t === 'close') sawClose = true;
      else if (t === 'keep-alive') sawKeepAlive = true;
      else if (t === 'upgrade') upgradeAsked = true;
      else {
        if (!TCHAR.test(t)) return err(bad, 'bad_connection', 'Connection lists a non-token');
        (tokens ??= []).push(t);
      }
    }
  }
  const keepAlive = !sawClose && (versionMinor === 1 || sawKeepAlive);
  return {
    contentLength: f.contentLength,
    chunked,
    keepAlive,
    connectionTokens: tokens,
    upgrade: upgradeAsked && f.upgrade !== null ? f.upgrade : null,
  };
}

function splitLines(head: string): string[] | ParseError {
  // head ends with CRLFCRLF; refuse any bare CR or LF (line-ending ambiguity is a smuggling vector)
  const body = head.slice(0, head.length - 4);
  const lines = body.split('\r\n');
  for (const l of lines) {
    if (l.includes('\n') || l.includes('\r'))
      return err(400, 'bare_line_ending', 'a bare CR or LF inside the message head');
  }
  return lines;
}

/** Parses a request head (`buf` = request line through CRLFCRLF, inclusive). */
export function parseRequestHead(
  buf: Buffer,
  limits: HeadLimits = DEFAULT_HEAD_LIMITS,
): RequestHead | ParseError {
  if (buf.length > limits.maxHeadBytes)
    return err(
      431,
      'head_too_large',
      `request head of ${buf.length} bytes exceeds ${limits.maxHeadBytes}`,
      'REMORA_E_PROXY_HEADERS_TOO_LARGE',
    );
  const lines = splitLines(buf.toString('latin1', 0, buf.length));
  if (!Array.isArray(lines)) return lines;
  const rl = lines[0]!;
  const sp1 = rl.indexOf(' ');
  const sp2 = rl.lastIndexOf(' ');
  if (sp1 <= 0 || sp2 === sp1)
    return err(
      400,
      'bad_request_line',
      `malformed request line ${JSON.stringify(rl.slice(0, 60))}`,
    );
  const method = rl.slice(0, sp1);
  const target = rl.slice(sp1 + 1, sp2);
  const version = rl.slice(sp2 + 1);
  if (!TCHAR.test(method))
    return err(400, 'bad_method', `invalid method ${JSON.stringify(method.slice(0, 20))}`);
  if (!TARGET.test(target))
    return err(400, 'bad_target', 'request target is empty or holds spaces or control characters');
  let versionMinor: 0 | 1;
  if (version === 'HTTP/1.1') versionMinor = 1;
  else if (version === 'HTTP/1.0') versionMinor = 0;
  else if (/^HTTP\/[0-9]\.[0-9]$/.test(version))
    return err(505, 'bad_version', `HTTP version ${version} is not supported`);
  else
    return err(
      400,
      'bad_request_line',
      `malformed request line ${JSON.stringify(rl.slice(0, 60))}`,
    );
  const f = parseFields(lines, limits, 'request');
  if ('status' in f) return f;
  if (versionMinor === 1 && f.hostCount !== 1)
    return err(
      400,
      f.hostCount === 0 ? 'missing_host' : 'duplicate_host',
      f.hostCount === 0 ? 'HTTP/1.1 request without Host' : 'more than one Host header',
    );
  if (f.hostCount > 1) return err(400, 'duplicate_host', 'more than one Host header');
  const framing = applyFraming(f, versionMinor, 'request');
  if ('status' in framing) return framing;
  let expectContinue = false;
  if (f.expect !== null) {
    if (f.expect.toLowerCase() !== '100-continue')
      return err(
        417,
        'bad_expect',
        `Expect ${JSON.stringify(f.expect.slice(0, 40))} is not supported`,
      );
    expectContinue = versionMinor === 1;
  }
  return {
    method,
    target,
    versionMinor,
    headers: f.headers,
    host: f.host ?? '',
    expectContinue,
    contentLength: framing.contentLength,
    chunked: framing.chunked,
    keepAlive: framing.keepAlive,
    connectionTokens: framing.connectionTokens,
    upgrade: framing.upgrade,
  };
}

/** Parses a response head from an upstream. `requestMethod` decides whether a body follows. */
export function parseResponseHead(
  buf: Buffer,
  limits: HeadLimits = DEFAULT_HEAD_LIMITS,
): ResponseHead | ParseError {
  if (buf.length > limits.maxHeadBytes)
    return err(
      502,
      'head_too_large',
      `response head of ${buf.length} bytes exceeds ${limits.maxHeadBytes}`,
      'REMORA_E_PROXY_UPSTREAM_RESET',
    );
  const lines = splitLines(buf.toString('latin1', 0, buf.length));
  if (!Array.isArray(lines))
    return { ...lines, status: 502, code: 'REMORA_E_PROXY_UPSTREAM_RESET' };
  const sl = lines[0]!;
  const m = /^HTTP\/1\.([01]) ([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?$/.exec(sl);
  if (!m)
    return err(
      502,
      'bad_status_line',
      `malformed status line ${JSON.stringify(sl.slice(0, 60))}`,
      'REMORA_E_PROXY_UPSTREAM_RESET',
    );
  const versionMinor = m[1] === '1' ? 1 : 0;
  const f = parseFields(lines, limits, 'response');
  if ('status' in f) return { ...f, code: 'REMORA_E_PROXY_UPSTREAM_RESET', status: 502 };
  const framing = applyFraming(f, versionMinor, 'response');
  if ('status' in framing)
    return { ...framing, code: 'REMORA_E_PROXY_UPSTREAM_RESET', status: 502 };
  return {
    status: Number(m[2]),
    reason: m[3] ?? '',
    versionMinor,
    headers: f.headers,
    contentLength: framing.contentLength,
    chunked: framing.chunked,
    keepAlive: framing.keepAlive,
    connectionTokens: framing.connectionTokens,
    upgrade: framing.upgrade,
  };
}

/** Parses trailer lines (after the last chunk): same field rules, no framing headers. */
export function parseTrailers(
  block: string,
  limits: HeadLimits,
  side: 'request' | 'response',
): string[] | ParseError {
  const lines = splitLines(`x\r\n${block}`);
  if (!Array.isArray(lines)) return lines;
  const f = parseFields(lines, limits, side);
  if ('status' in f) return f;
  return f.headers;
}

/** True when a response to `method` with `status` carries no body whatever its headers say. */
export function responseHasNoBody(method: string, status: number): boolean {
  return method === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304;
}

// Hop-by-hop fields a proxy never forwards (RFC 9110 §7.6.1), framing included: the proxy
// re-frames every message itself.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'trailer',
  'http2-settings',
]);

/**
 * The end-to-end fields of a message: hop-by-hop fields and those named in `Connection`
 * removed. Returns the same array when nothing needs removing (the common case).
 */
export function endToEndHeaders(headers: string[], tokens: string[] | null): string[] {
  let out: string[] | null = null;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const lc = name.length <= 17 ? name.toLowerCase() : '';
    const drop =
      (lc !== '' && HOP_BY_HOP.has(lc)) || (tokens !== null && tokens.includes(name.toLowerCase()));
    if (drop) {
      out ??= headers.slice(0, i);
    } else if (out !== null) {
      out.push(name, headers[i + 1]!);
    }
  }
  return out ?? headers;
}

/** First value of a header (case-insensitive), or undefined. */
export function getHeader(headers: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!;
    if (n.length === lowerName.length && n.toLowerCase() === lowerName) return headers[i + 1];
  }
  return undefined;
}

/** Headers as a record with lower-cased names (repeated names joined into arrays), for policy. */
export function headersRecord(headers: readonly string[]): Record<string, string | string[]> {
  const r: Record<string, string | string[]> = {};
  for (let i = 0; i < headers.length; i += 2) {
    const n = headers[i]!.toLowerCase();
    const v = headers[i + 1]!;
    const prev = r[n];
    if (prev === undefined) r[n] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else r[n] = [prev, v];
  }
  return r;
}
