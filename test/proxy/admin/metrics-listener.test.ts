// The public /metrics listener (envoy_prometheus_bind_addr) as a scraper sees it, and what it does
// when its port is taken: said once with a code, bound as soon as the port is free.
import t, { type Test } from 'tap';
import net, { type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { createMetricsListenerSlot } from '../../../proxy/admin/metrics-listener.ts';
import { createProxyMetrics } from '../../../proxy/admin/metrics.ts';
import { createLogger } from '../../../lib/log/index.ts';
import { waitFor } from '../../../lib/util/index.ts';

function slot(t: Test) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    component: 'proxy',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        cb();
      },
    }),
  });
  const metrics = createProxyMetrics({ defaultMetrics: false });
  metrics.denials.labels('l4', 'true').inc();
  const s = createMetricsListenerSlot({ metrics, logger, retryMs: 50 });
  t.teardown(() => s.close());
  return { s, lines };
}

async function get(port: number, path: string, method = 'GET') {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: r.status, body: await r.text(), type: r.headers.get('content-type') };
}

t.test('GET /metrics is served on the address asked for, and nothing else', async (t) => {
  const { s } = slot(t);
  t.equal(s.address(), null, 'nothing before a snapshot asks');
  s.sync({ bindAddress: '127.0.0.1', bindPort: 0 });
  const port = (await waitFor('bound', () => s.address())).port;
  const m = await get(port, '/metrics');
  t.equal(m.status, 200);
  t.match(m.type, /^text\/plain/);
  t.match(m.body, /remora_proxy_intention_denials_total\{layer="l4",enforced="true"\} 1/);
  t.equal((await get(port, '/metrics?x=1')).status, 200, 'a query string is fine');
  for (const path of ['/config', '/certs', '/ready', '/'])
    t.equal((await get(port, path)).status, 404, `${path}: not served here`);
  t.equal((await get(port, '/metrics', 'POST')).status, 405);

  s.sync({ bindAddress: '127.0.0.1', bindPort: 0 });
  t.equal(s.address()?.port, port, 'the same ask keeps the same listener');
  s.sync(undefined);
  t.equal(s.address(), null);
  await t.rejects(get(port, '/metrics'), 'closed once the snapshot no longer asks');
});

t.test('a taken port is said once with a code; the listener binds once it is free', async (t) => {
  const { s, lines } = slot(t);
  const holder = net.createServer();
  holder.listen(0, '127.0.0.1');
  await once(holder, 'listening');
  const port = (holder.address() as AddressInfo).port;
  s.sync({ bindAddress: '127.0.0.1', bindPort: port });
  await waitFor('the failure logged', () => lines.find((l) => l.code !== undefined));
  await new Promise((r) => setTimeout(r, 200)); // several retries
  const failures = lines.filter((l) => l.code === 'REMORA_E_PROXY_METRICS_LISTEN_FAILED');
  t.equal(failures.length, 1, 'said once, not at every retry');
  t.match(failures[0]!.msg, `cannot listen on 127.0.0.1:${port} for /metrics`);
  t.match(failures[0]!.msg, /EADDRINUSE/);
  t.equal(s.address(), null);
  holder.close();
  await waitFor('bound once the port is free', () => s.address());
  t.equal((await get(port, '/metrics')).status, 200);
  t.ok(
    lines.some((l) => l.msg === 'serving /metrics for scrapers' && l.port === port),
    'and says so',
  );
});
