import t from 'tap';
import { Counter, Gauge, Registry, registerProcessMetrics } from '../../../proxy/admin/prom.ts';
import { createProxyMetrics } from '../../../proxy/admin/metrics.ts';

t.test('counters and gauges render as Prometheus text with escaped label values', async (t) => {
  const r = new Registry();
  const c = new Counter({
    name: 'x_total',
    help: 'Things.',
    labelNames: ['kind'] as const,
    registers: [r],
  });
  const g = new Gauge({ name: 'y', help: 'Level.', registers: [r] });
  c.labels('a"b\\c\nd').inc();
  c.labels('a"b\\c\nd').inc(2);
  g.set(5);
  const text = await r.metrics();
  t.match(text, '# HELP x_total Things.\n# TYPE x_total counter\n');
  t.match(text, 'x_total{kind="a\\"b\\\\c\\nd"} 3\n');
  t.match(text, '# TYPE y gauge\ny 5\n');
  c.reset();
  t.notMatch(await r.metrics(), /x_total\{/, 'reset drops every series');
});

t.test('an unlabelled counter that never moved still shows 0', async (t) => {
  const r = new Registry();
  new Counter({ name: 'z_total', help: 'Z.', registers: [r] });
  t.match(await r.metrics(), /^z_total 0$/m);
});

t.test('process metrics report memory and CPU under the prefix', async (t) => {
  const r = new Registry();
  registerProcessMetrics(r, 'p_');
  const text = await r.metrics();
  t.match(text, /^p_resident_memory_bytes \d+$/m);
  t.match(text, /^p_cpu_user_seconds_total [\d.e-]+$/m);
});

t.test('request counts and latency buckets render per direction and service', async (t) => {
  const m = createProxyMetrics({ defaultMetrics: false });
  const meter = m.meter('outbound', 'api');
  meter.observe(200, 3);
  meter.observe(503, 30);
  const text = await m.registry.metrics();
  t.match(text, 'remora_proxy_requests_total{direction="outbound",service="api",code="2xx"} 1');
  t.match(text, 'remora_proxy_requests_total{direction="outbound",service="api",code="5xx"} 1');
  t.match(
    text,
    'remora_proxy_request_duration_seconds_bucket{direction="outbound",service="api",le="0.005"} 1',
  );
  t.match(
    text,
    'remora_proxy_request_duration_seconds_bucket{direction="outbound",service="api",le="+Inf"} 2',
  );
  t.match(
    text,
    'remora_proxy_request_duration_seconds_count{direction="outbound",service="api"} 2',
  );
});
