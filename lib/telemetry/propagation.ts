import {
  ROOT_CONTEXT,
  TraceFlags,
  defaultTextMapSetter,
  isSpanContextValid,
  trace,
  type Context,
  type SpanContext,
  type TextMapGetter,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';

/** A header map as node:http gives it, or NATS headers turned into a record. */
export type HeaderCarrier = Record<string, string | string[] | undefined>;

const w3c = new W3CTraceContextPropagator();

/** Header names Remora reads or writes for trace context. */
export const TRACE_HEADERS = {
  traceparent: 'traceparent',
  tracestate: 'tracestate',
  b3: 'b3',
  b3TraceId: 'x-b3-traceid',
  b3SpanId: 'x-b3-spanid',
  b3Sampled: 'x-b3-sampled',
  b3Flags: 'x-b3-flags',
  b3ParentSpanId: 'x-b3-parentspanid',
} as const;

/** Every header a proxy should treat as trace context (to strip or replace when forwarding). */
export const TRACE_HEADER_NAMES: readonly string[] = Object.values(TRACE_HEADERS);

function lowerCased(carrier: HeaderCarrier): Map<string, string | string[]> {
  const map = new Map<string, string | string[]>();
  for (const [k, v] of Object.entries(carrier)) {
    if (v !== undefined) map.set(k.toLowerCase(), v);
  }
  return map;
}

const mapGetter: TextMapGetter<Map<string, string | string[]>> = {
  keys: (m) => [...m.keys()],
  get: (m, key) => m.get(key.toLowerCase()),
};

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

const HEX = /^[0-9a-f]+$/;

function b3Id(id: string | undefined, lengths: readonly number[]): string | undefined {
  if (id === undefined) return undefined;
  const s = id.trim().toLowerCase();
  if (!lengths.includes(s.length) || !HEX.test(s)) return undefined;
  return s.length === 16 && lengths.includes(32) ? `0000000000000000${s}` : s;
}

function b3Context(
  traceIdRaw: string | undefined,
  spanIdRaw: string | undefined,
  sampled: string | undefined,
  debug: string | undefined,
): SpanContext | undefined {
  const traceId = b3Id(traceIdRaw, [16, 32]);
  const spanId = b3Id(spanIdRaw, [16]);
  if (!traceId || !spanId) return undefined;
  const s = sampled?.trim().toLowerCase();
  const isSampled = debug?.trim() === '1' || s === '1' || s === 'd' || s === 'true';
  const sc: SpanContext = {
    traceId,
    spanId,
    traceFlags: isSampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
    isRemote: true,
  };
  return isSpanContextValid(sc) ? sc : undefined;
}

/**
 * B3 in its single-header form `b3: {traceId}-{spanId}[-{sampled}[-{parentSpanId}]]` or the
 * multi-header form `X-B3-TraceId` / `X-B3-SpanId` / `X-B3-Sampled` / `X-B3-Flags`. A 64-bit
 * trace ID is left-padded to 128 bits. An absent sampling flag (a "deferred" decision) counts as
 * not sampled, as in OpenTelemetry's B3 propagator.
 */
export function extractB3(carrier: HeaderCarrier): SpanContext | undefined {
  const m = lowerCased(carrier);
  const single = first(m.get(TRACE_HEADERS.b3));
  if (single !== undefined) {
    const parts = single.trim().split('-');
    if (parts.length >= 2) {
      const sc = b3Context(parts[0], parts[1], parts[2], undefined);
      if (sc) return sc;
    }
  }
  return b3Context(
    first(m.get(TRACE_HEADERS.b3TraceId)),
    first(m.get(TRACE_HEADERS.b3SpanId)),
    first(m.get(TRACE_HEADERS.b3Sampled)),
    first(m.get(TRACE_HEADERS.b3Flags)),
  );
}

/**
 * Reads trace context from headers: W3C `traceparent`/`tracestate` first, then B3 (single or
 * multi). Header names are matched without regard to case. Returns `parent` (or the root context)
 * unchanged when the headers carry no valid context.
 */
export function extractContext(carrier: HeaderCarrier, parent: Context = ROOT_CONTEXT): Context {
  const m = lowerCased(carrier);
  const fromW3c = w3c.extract(parent, m, mapGetter);
  if (fromW3c !== parent) return fromW3c;
  const b3 = extractB3(carrier);
  return b3 ? trace.setSpanContext(parent, b3) : parent;
}

/**
 * Writes the context's span as W3C `traceparent` (and `tracestate` when present) into `headers`.
 * Writes nothing when the context holds no valid span.
 */
export function injectContext(ctx: Context, headers: Record<string, string>): void {
  w3c.inject(ctx, headers, defaultTextMapSetter);
}
