import t from 'tap';
import { ROOT_CONTEXT, TraceFlags, createContextKey, trace } from '@opentelemetry/api';
import {
  extractB3,
  extractContext,
  injectContext,
  parseOtlpHeaders,
} from '../../../lib/telemetry/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';

t.test('reads traceparent and tracestate whatever the header case', async (t) => {
  const ctx = extractContext({ TraceParent: `00-${TRACE}-${SPAN}-01`, TRACESTATE: 'a=1,b=2' });
  const sc = trace.getSpanContext(ctx);
  t.equal(sc?.traceId, TRACE);
  t.equal(sc?.spanId, SPAN);
  t.equal(sc?.traceFlags, TraceFlags.SAMPLED);
  t.equal(sc?.isRemote, true);
  t.equal(sc?.traceState?.serialize(), 'a=1,b=2');
});

t.test(
  'takes the first of repeated traceparent headers (array values as node:http gives)',
  async (t) => {
    const ctx = extractContext({
      traceparent: [`00-${TRACE}-${SPAN}-01`, `00-${'1'.repeat(32)}-${SPAN}-01`],
    });
    t.equal(trace.getSpanContext(ctx)?.traceId, TRACE);
  },
);

t.test('prefers W3C over B3 when both are present', async (t) => {
  const ctx = extractContext({
    traceparent: `00-${TRACE}-${SPAN}-01`,
    b3: `${'a'.repeat(32)}-${'b'.repeat(16)}-1`,
  });
  t.equal(trace.getSpanContext(ctx)?.traceId, TRACE);
});

t.test('falls back to B3 when traceparent is malformed', async (t) => {
  const ctx = extractContext({
    traceparent: 'garbage',
    b3: `${TRACE}-${SPAN}-1`,
  });
  t.equal(trace.getSpanContext(ctx)?.spanId, SPAN);
});

t.test('B3 single header: sampled, debug, unsampled, deferred, with parent id', async (t) => {
  t.equal(extractB3({ b3: `${TRACE}-${SPAN}-1` })?.traceFlags, TraceFlags.SAMPLED);
  t.equal(extractB3({ b3: `${TRACE}-${SPAN}-d` })?.traceFlags, TraceFlags.SAMPLED);
  t.equal(extractB3({ b3: `${TRACE}-${SPAN}-0` })?.traceFlags, TraceFlags.NONE);
  t.equal(
    extractB3({ b3: `${TRACE}-${SPAN}` })?.traceFlags,
    TraceFlags.NONE,
    'deferred is not sampled',
  );
  t.equal(extractB3({ b3: `${TRACE}-${SPAN}-1-${'c'.repeat(16)}` })?.spanId, SPAN);
  t.equal(extractB3({ b3: '0' }), undefined, 'a bare sampling flag carries no context');
});

t.test('B3 multi headers, and a 64-bit trace id left-padded to 128 bits', async (t) => {
  const sc = extractB3({
    'X-B3-TraceId': 'A3CE929D0E0E4736',
    'X-B3-SpanId': SPAN,
    'X-B3-Flags': '1',
  });
  t.equal(sc?.traceId, '0000000000000000a3ce929d0e0e4736');
  t.equal(sc?.traceFlags, TraceFlags.SAMPLED, 'debug flag means sampled');
  t.equal(extractB3({ 'x-b3-traceid': TRACE, 'x-b3-spanid': 'zz' }), undefined);
  t.equal(
    extractB3({ 'x-b3-traceid': '0'.repeat(32), 'x-b3-spanid': SPAN, 'x-b3-sampled': '1' }),
    undefined,
    'all-zero ids are invalid',
  );
});

t.test('headers without trace context leave the given parent context as it was', async (t) => {
  const key = createContextKey('k');
  const parent = ROOT_CONTEXT.setValue(key, 'v');
  t.equal(extractContext({ host: 'x' }, parent), parent);
  t.equal(extractContext({}), ROOT_CONTEXT);
});

t.test('injects W3C headers into any string map (HTTP or NATS headers)', async (t) => {
  const ctx = extractContext({ traceparent: `00-${TRACE}-${SPAN}-01`, tracestate: 'k=v' });
  const out: Record<string, string> = {};
  injectContext(ctx, out);
  t.same(out, { traceparent: `00-${TRACE}-${SPAN}-01`, tracestate: 'k=v' });
  const none: Record<string, string> = {};
  injectContext(ROOT_CONTEXT, none);
  t.same(none, {}, 'nothing to inject without a span');
});

t.test('parses exporter headers from "k=v,k2=v2"', async (t) => {
  t.same(parseOtlpHeaders(''), {});
  t.same(parseOtlpHeaders(' authorization = Bearer abc , x-tenant=t%201,'), {
    authorization: 'Bearer abc',
    'x-tenant': 't 1',
  });
  t.same(parseOtlpHeaders('a=b=c'), { a: 'b=c' }, 'only the first = splits');
  let err: unknown;
  try {
    parseOtlpHeaders('authorization=secret,novalue');
  } catch (e) {
    err = e;
  }
  t.ok(hasCode(err, 'REMORA_E_TELEMETRY_CONFIG_INVALID'));
  t.match(String(err), 'entry 2');
  t.notMatch(String(err), 'secret', 'header values never appear in errors');
});
