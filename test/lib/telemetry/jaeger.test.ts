import t from 'tap';
import {
  buildWaterfall,
  formatDuration,
  parseLookback,
  renderTrace,
  type JaegerTrace,
} from '../../../lib/telemetry/jaeger.ts';

const T = 'abc0000000000000abc0000000000000';
const span = (
  id: string,
  parent: string | undefined,
  start: number,
  duration: number,
  pid = 'p1',
) => ({
  traceID: T,
  spanID: id,
  operationName: `op-${id}`,
  references: parent ? [{ refType: 'CHILD_OF', traceID: T, spanID: parent }] : [],
  startTime: 1_000_000 + start,
  duration,
  tags: [],
  processID: pid,
});

t.test(
  'orders spans as a tree by start time; a span whose parent is missing is a root',
  async (t) => {
    const trace: JaegerTrace = {
      traceID: T,
      spans: [
        span('c', 'a', 30, 10),
        span('b', 'a', 10, 10),
        span('a', undefined, 0, 100),
        span('x', 'gone', 50, 5, 'p2'),
      ],
      processes: { p1: { serviceName: 'web' }, p2: { serviceName: 'api' } },
    };
    const rows = buildWaterfall(trace);
    t.same(
      rows.map((r) => [r.spanId, r.depth, r.service, r.offsetUs]),
      [
        ['a', 0, 'web', 0],
        ['b', 1, 'web', 10],
        ['c', 1, 'web', 30],
        ['x', 0, 'api', 50],
      ],
    );
  },
);

t.test('a self-referencing or cyclic trace still renders each span once', async (t) => {
  const trace: JaegerTrace = {
    traceID: T,
    spans: [span('a', 'a', 0, 10), span('b', 'c', 1, 1), span('c', 'b', 2, 1)],
    processes: { p1: { serviceName: 'web' } },
  };
  const rows = buildWaterfall(trace);
  t.same(
    rows.map((r) => r.spanId),
    ['a'],
  );
  const out = renderTrace(trace, { jaegerUrl: 'http://j:16686/' });
  t.match(out, `http://j:16686/trace/${T}`);
});

t.test('an error span shows its status description', async (t) => {
  const s = {
    ...span('a', undefined, 0, 10),
    tags: [
      { key: 'otel.status_code', type: 'string', value: 'ERROR' },
      { key: 'otel.status_description', type: 'string', value: 'upstream reset' },
    ],
  };
  const out = renderTrace({ traceID: T, spans: [s], processes: {} }, { jaegerUrl: 'http://j' });
  t.match(out, /ERROR .*upstream reset/);
  t.match(out, '1 ERROR');
});

t.test('durations and lookbacks read like people write them', async (t) => {
  t.equal(formatDuration(850), '850 µs');
  t.equal(formatDuration(1234), '1.23 ms');
  t.equal(formatDuration(42_000), '42.0 ms');
  t.equal(formatDuration(2_500_000), '2.50 s');
  t.equal(parseLookback('1h'), 3_600_000);
  t.equal(parseLookback('15m'), 900_000);
  t.equal(parseLookback('2d'), 172_800_000);
  t.equal(parseLookback('0s'), undefined);
  t.equal(parseLookback('soon'), undefined);
});
