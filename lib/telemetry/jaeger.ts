import { RemoraError } from '../errors/index.ts';

/**
 * A client for Jaeger's HTTP query API (the one its UI uses, port 16686) and a terminal waterfall
 * for the traces it returns. Shapes follow Jaeger's JSON model: times and durations are in
 * microseconds, the parent is the first CHILD_OF reference, and a span's service is its
 * process's `serviceName`.
 */

export interface JaegerTag {
  key: string;
  type?: string;
  value: unknown;
}
export interface JaegerReference {
  refType: string;
  traceID: string;
  spanID: string;
}
export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references?: JaegerReference[] | null;
  /** Microseconds since the epoch. */
  startTime: number;
  /** Microseconds. */
  duration: number;
  tags?: JaegerTag[] | null;
  processID: string;
  warnings?: string[] | null;
}
export interface JaegerProcess {
  serviceName: string;
  tags?: JaegerTag[] | null;
}
export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, JaegerProcess>;
  warnings?: string[] | null;
}

interface JaegerEnvelope {
  data: unknown;
  errors?: Array<{ code?: number; msg?: string }> | null;
}

export const DEFAULT_JAEGER_TIMEOUT_MS = 10_000;

/** Where Jaeger's query service is, and how to reach it. */
export interface JaegerConnection {
  /** Base URL of Jaeger's query service, e.g. http://127.0.0.1:16686. */
  jaegerUrl: string;
  timeoutMs?: number;
  /** The fetch to use (global fetch by default). */
  fetch?: typeof fetch;
}

export interface QueryJaegerOptions extends JaegerConnection {
  service: string;
  limit: number;
  /** How far back to look, in milliseconds. */
  lookbackMs: number;
  /** "Now", in milliseconds since the epoch. */
  now: number;
  /** Only traces with a span tagged error=true. */
  errorsOnly?: boolean;
}

function baseUrl(jaegerUrl: string): string {
  return jaegerUrl.replace(/\/+$/, '');
}

/** The Jaeger UI page of one trace. */
export function jaegerTraceLink(jaegerUrl: string, traceId: string): string {
  return `${baseUrl(jaegerUrl)}/trace/${traceId}`;
}

/** Turns "1h", "30m", "90s", "2d", "500ms" into milliseconds; undefined when unreadable. */
export function parseLookback(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(s.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as string] ?? 0;
  return n > 0 ? n * unit : undefined;
}

async function getJson(url: string, options: JaegerConnection): Promise<JaegerEnvelope> {
  const doFetch = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? DEFAULT_JAEGER_TIMEOUT_MS;
  const base = baseUrl(options.jaegerUrl);
  let res: Response;
  try {
    res = await doFetch(url, {
      headers: { accept: 'application/json' },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const timedOut = err instanceof Error && err.name === 'TimeoutError';
    const why = timedOut
      ? `no answer within ${timeoutMs} ms`
      : (cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err)));
    throw new RemoraError(
      'REMORA_E_TELEMETRY_JAEGER_UNREACHABLE',
      `cannot reach Jaeger at ${base} (${why}); start Jaeger, or give its address with --jaeger-url or REMORA_CLI_JAEGER_URL`,
      { jaegerUrl: base, url, reason: why },
      { cause: err },
    );
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const envelope =
    body !== null && typeof body === 'object' && 'data' in body
      ? (body as JaegerEnvelope)
      : undefined;
  const errors = envelope?.errors?.filter((e) => e && (e.msg || e.code)) ?? [];
  if (!res.ok || errors.length > 0) {
    if (!envelope && !res.ok && res.status === 404) {
      throw new RemoraError(
        'REMORA_E_TELEMETRY_JAEGER_BAD_RESPONSE',
        `${url} answered 404: ${base} does not serve Jaeger's query API; point --jaeger-url at the Jaeger UI/query port (16686)`,
        { jaegerUrl: base, url, status: res.status },
      );
    }
    const msgs = errors.map((e) => e.msg ?? `code ${e.code}`).join('; ');
    throw new RemoraError(
      'REMORA_E_TELEMETRY_JAEGER_QUERY_FAILED',
      `Jaeger at ${base} refused the query (HTTP ${res.status}${msgs ? `: ${msgs}` : text ? `: ${text.slice(0, 200)}` : ''})`,
      { jaegerUrl: base, url, status: res.status, errors: msgs },
    );
  }
  if (!envelope) {
    throw new RemoraError(
      'REMORA_E_TELEMETRY_JAEGER_BAD_RESPONSE',
      `${url} did not answer with Jaeger's JSON ({"data": …}); is ${base} the Jaeger query service (port 16686)?`,
      { jaegerUrl: base, url, status: res.status },
    );
  }
  return envelope;
}

function badShape(url: string, base: string, what: string): never {
  throw new RemoraError(
    'REMORA_E_TELEMETRY_JAEGER_BAD_RESPONSE',
    `${url} answered, but ${what}; is ${base} the Jaeger query service (port 16686)?`,
    { jaegerUrl: base, url },
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Checks the parts of a trace the waterfall relies on; fails with a coded error otherwise. */
export function decodeJaegerTraces(data: unknown, url: string, base: string): JaegerTrace[] {
  if (data === null) return [];
  if (!Array.isArray(data)) badShape(url, base, '"data" is not a list of traces');
  return data.map((t: unknown, i) => {
    if (!isObject(t) || typeof t.traceID !== 'string' || !Array.isArray(t.spans)) {
      badShape(url, base, `trace ${i} has no traceID or spans`);
    }
    const processes = isObject(t.processes) ? t.processes : {};
    for (const s of t.spans as unknown[]) {
      if (
        !isObject(s) ||
        typeof s.spanID !== 'string' ||
        typeof s.operationName !== 'string' ||
        typeof s.startTime !== 'number' ||
        typeof s.duration !== 'number'
      ) {
        badShape(
          url,
          base,
          `a span of trace ${t.traceID} lacks spanID, operationName, startTime or duration`,
        );
      }
    }
    return {
      traceID: t.traceID,
      spans: t.spans as JaegerSpan[],
      processes: processes as Record<string, JaegerProcess>,
      ...(Array.isArray(t.warnings) ? { warnings: t.warnings as string[] } : {}),
    };
  });
}

/**
 * Recent traces of a service, most recent first:
 * `GET <jaegerUrl>/api/traces?service=…&limit=…&start=…&end=…` (start/end in microseconds).
 */
export async function queryJaegerTraces(options: QueryJaegerOptions): Promise<JaegerTrace[]> {
  const base = baseUrl(options.jaegerUrl);
  const endUs = Math.floor(options.now * 1000);
  const startUs = Math.floor((options.now - options.lookbackMs) * 1000);
  const q = new URLSearchParams({
    service: options.service,
    limit: String(options.limit),
    start: String(startUs),
    end: String(endUs),
    lookback: `${Math.round(options.lookbackMs / 1000)}s`,
  });
  if (options.errorsOnly) q.set('tags', JSON.stringify({ error: 'true' }));
  const url = `${base}/api/traces?${q.toString()}`;
  const envelope = await getJson(url, options);
  const traces = decodeJaegerTraces(envelope.data, url, base);
  return traces.sort((a, b) => traceStart(b) - traceStart(a));
}

/** One trace by ID (`GET /api/traces/<id>`); Jaeger answers 404 when it does not have it. */
export async function queryJaegerTrace(
  options: JaegerConnection,
  traceId: string,
): Promise<JaegerTrace> {
  const base = baseUrl(options.jaegerUrl);
  const url = `${base}/api/traces/${encodeURIComponent(traceId)}`;
  const envelope = await getJson(url, options);
  const [trace] = decodeJaegerTraces(envelope.data, url, base);
  if (!trace) {
    throw new RemoraError(
      'REMORA_E_TELEMETRY_JAEGER_QUERY_FAILED',
      `Jaeger at ${base} has no trace ${traceId}; it may not be exported yet or may have expired`,
      { jaegerUrl: base, url, traceId },
    );
  }
  return trace;
}

/** Service names Jaeger has seen (`GET /api/services`). */
export async function queryJaegerServices(options: JaegerConnection): Promise<string[]> {
  const base = baseUrl(options.jaegerUrl);
  const url = `${base}/api/services`;
  const envelope = await getJson(url, options);
  if (envelope.data === null) return [];
  if (!Array.isArray(envelope.data) || envelope.data.some((s) => typeof s !== 'string')) {
    badShape(url, base, '"data" is not a list of service names');
  }
  return (envelope.data as string[]).slice().sort();
}

function traceStart(t: JaegerTrace): number {
  return t.spans.reduce((min, s) => Math.min(min, s.startTime), Infinity);
}

function tag(span: JaegerSpan, key: string): unknown {
  return span.tags?.find((t) => t.key === key)?.value;
}

export interface WaterfallRow {
  depth: number;
  spanId: string;
  service: string;
  operation: string;
  /** server, client, producer, consumer, or '' (internal). */
  kind: string;
  /** From the trace's start, microseconds. */
  offsetUs: number;
  durationUs: number;
  error: boolean;
  httpStatus?: number;
  /** Status message or error.type, when the span failed. */
  errorText?: string;
  /** Outbound attempts: the upstream called and the attempt number (remora.* tags). */
  upstream?: string;
  attempt?: number;
}

function isErrorSpan(span: JaegerSpan): boolean {
  const e = tag(span, 'error');
  return e === true || e === 'true' || tag(span, 'otel.status_code') === 'ERROR';
}

/** The spans of a trace in tree order (children after their parent, by start time). */
export function buildWaterfall(trace: JaegerTrace): WaterfallRow[] {
  const start = traceStart(trace);
  const ids = new Set(trace.spans.map((s) => s.spanID));
  const children = new Map<string, JaegerSpan[]>();
  const roots: JaegerSpan[] = [];
  for (const span of trace.spans) {
    const parent = (span.references ?? []).find((r) => r.refType === 'CHILD_OF')?.spanID;
    if (parent !== undefined && parent !== span.spanID && ids.has(parent)) {
      const list = children.get(parent) ?? [];
      list.push(span);
      children.set(parent, list);
    } else {
      roots.push(span);
    }
  }
  const byStart = (a: JaegerSpan, b: JaegerSpan): number => a.startTime - b.startTime;
  const rows: WaterfallRow[] = [];
  const seen = new Set<string>();
  const visit = (span: JaegerSpan, depth: number): void => {
    if (seen.has(span.spanID)) return;
    seen.add(span.spanID);
    const status = tag(span, 'http.response.status_code') ?? tag(span, 'http.status_code');
    const error = isErrorSpan(span);
    const errorText = tag(span, 'otel.status_description') ?? tag(span, 'error.type');
    const row: WaterfallRow = {
      depth,
      spanId: span.spanID,
      service: trace.processes[span.processID]?.serviceName ?? span.processID,
      operation: span.operationName,
      kind: typeof tag(span, 'span.kind') === 'string' ? (tag(span, 'span.kind') as string) : '',
      offsetUs: span.startTime - start,
      durationUs: span.duration,
      error,
    };
    if (status !== undefined && Number.isFinite(Number(status))) row.httpStatus = Number(status);
    if (error && typeof errorText === 'string' && errorText) row.errorText = errorText;
    const upstream = tag(span, 'remora.upstream');
    if (typeof upstream === 'string' && upstream) row.upstream = upstream;
    const attempt = Number(tag(span, 'remora.attempt'));
    if (Number.isInteger(attempt) && attempt > 0) row.attempt = attempt;
    rows.push(row);
    for (const child of (children.get(span.spanID) ?? []).sort(byStart)) visit(child, depth + 1);
  };
  for (const root of roots.sort(byStart)) visit(root, 0);
  return rows;
}

/** 1234 µs → "1.23 ms"; 2_500_000 µs → "2.50 s". */
export function formatDuration(us: number): string {
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(us < 10_000 ? 2 : 1)} ms`;
  return `${(us / 1_000_000).toFixed(2)} s`;
}

function fit(s: string, width: number): string {
  if (s.length <= width) return s.padEnd(width);
  return `${s.slice(0, width - 1)}…`;
}

export interface RenderOptions {
  jaegerUrl: string;
  /** Columns for the timeline bar. */
  barWidth?: number;
}

/**
 * One trace as text: a header (root service and operation, total duration, span count, whether
 * anything failed), one row per span (service and operation indented by depth, kind, duration,
 * status, a bar placed on the trace's timeline), and the link to the trace in the Jaeger UI.
 */
export function renderTrace(trace: JaegerTrace, options: RenderOptions): string {
  const rows = buildWaterfall(trace);
  const barWidth = options.barWidth ?? 32;
  const start = traceStart(trace);
  const end = trace.spans.reduce((max, s) => Math.max(max, s.startTime + s.duration), start);
  const total = Math.max(end - start, 1);
  const failed = rows.filter((r) => r.error).length;
  const root = rows[0];
  const services = new Set(rows.map((r) => r.service));
  const when = Number.isFinite(start) ? new Date(start / 1000).toISOString() : '?';

  const lines: string[] = [];
  lines.push(
    `trace ${trace.traceID}  ${root ? `${root.service}: ${root.operation}` : '(no spans)'}  ${formatDuration(end - start)}  ${rows.length} span${rows.length === 1 ? '' : 's'}, ${services.size} service${services.size === 1 ? '' : 's'}  ${failed ? `${failed} ERROR` : 'ok'}  at ${when}`,
  );
  const label = (r: WaterfallRow): string =>
    `${'  '.repeat(r.depth)}${r.service}  ${r.operation}${r.upstream ? ` → ${r.upstream}` : ''}${r.attempt ? ` #${r.attempt}` : ''}${r.kind ? ` [${r.kind}]` : ''}`;
  const labelWidth = Math.min(60, Math.max(20, ...rows.map((r) => label(r).length)));
  for (const r of rows) {
    const from = Math.min(barWidth - 1, Math.floor((r.offsetUs / total) * barWidth));
    const len = Math.max(
      1,
      Math.min(barWidth - from, Math.round((r.durationUs / total) * barWidth)),
    );
    const bar = `${' '.repeat(from)}${'█'.repeat(len)}`.padEnd(barWidth);
    const status = `${r.error ? 'ERROR' : 'ok'}${r.httpStatus !== undefined ? ` ${r.httpStatus}` : ''}`;
    const why = r.errorText ? `  ${r.errorText}` : '';
    lines.push(
      `  ${fit(label(r), labelWidth)}  ${formatDuration(r.durationUs).padStart(9)}  ${status.padEnd(9)} |${bar}|${why}`,
    );
  }
  for (const w of trace.warnings ?? []) lines.push(`  warning: ${w}`);
  lines.push(`  ${jaegerTraceLink(options.jaegerUrl, trace.traceID)}`);
  return lines.join('\n');
}
