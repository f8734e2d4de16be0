// W3C trace context (traceparent/tracestate) carried in NATS message headers, as plain carriers
// so lib/telemetry's propagator can `extract`/`inject` without lib/nats depending on it.
import { headers as natsHeaders, type MsgHdrs } from 'nats';

export type TraceCarrier = Record<string, string>;

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** NATS headers carrying the carrier's traceparent/tracestate (others are copied too). */
export function headersWithTraceContext(carrier: TraceCarrier, base?: MsgHdrs): MsgHdrs {
  const h = base ?? natsHeaders();
  for (const [k, v] of Object.entries(carrier)) {
    if (typeof v !== 'string' || v === '') continue;
    if (k === 'traceparent' && !TRACEPARENT.test(v)) continue;
    h.set(k, v);
  }
  return h;
}

/** The trace carrier found in NATS headers (empty when absent or malformed). */
export function traceContextFromHeaders(h: MsgHdrs | undefined): TraceCarrier {
  const out: TraceCarrier = {};
  if (!h) return out;
  const tp = h.get('traceparent');
  if (!tp || !TRACEPARENT.test(tp)) return out;
  out.traceparent = tp;
  const ts = h.get('tracestate');
  if (ts) out.tracestate = ts;
  return out;
}
