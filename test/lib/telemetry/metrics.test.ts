import t from 'tap';
import { Registry } from 'prom-client';
import { registerTracingMetrics } from '../../../lib/telemetry/index.ts';

t.test('span fates appear as remora_tracing_spans_total at scrape time', async (t) => {
  const registry = new Registry();
  const stats = { exported: 5, dropped: 2, failed: 1 };
  registerTracingMetrics(registry, { stats: () => ({ ...stats }) });
  let text = await registry.metrics();
  t.match(text, 'remora_tracing_spans_total{outcome="exported"} 5');
  t.match(text, 'remora_tracing_spans_total{outcome="dropped"} 2');
  t.match(text, 'remora_tracing_spans_total{outcome="failed"} 1');
  stats.exported = 9;
  text = await registry.metrics();
  t.match(text, 'remora_tracing_spans_total{outcome="exported"} 9');
});
