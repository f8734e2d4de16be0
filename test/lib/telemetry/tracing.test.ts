import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import {
  createTracing,
  enableAsyncContext,
  tracingOptionsFromConfig,
  httpResponseAttributes,
  httpServerAttributes,
  httpSpanName,
  httpSpanStatus,
  REMORA_ATTR,
  type Tracing,
} from '../../../lib/telemetry/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';
import { createLogger } from '../../../lib/log/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import { startOtlpReceiver } from '../../helpers/otlp-receiver.ts';
import { freePort } from '../../helpers/nats.ts';

const PARENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN = '00f067aa0ba902b7';

function base(endpoint: string) {
  return {
    serviceName: 'orders',
    instanceId: 'orders-1',
    component: 'proxy' as const,
    hostName: 'host-a',
    endpoint,
    sampleRatio: 1,
    exportDelayMs: 20,
  };
}

function captureLogs() {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return {
    logger: createLogger({ component: 'proxy', destination: stream, level: 'info' }),
    lines: (): Array<Record<string, unknown>> =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** A tiny app that makes one SERVER span per request, the way the proxy does. */
async function startTracedServer(tracing: Tracing) {
  const server = http.createServer((req, res) => {
    const parent = tracing.extract(req.headers);
    const span = tracing.tracer.startSpan(
      httpSpanName(req.method ?? 'GET'),
      {
        kind: SpanKind.SERVER,
        attributes: httpServerAttributes({
          method: req.method ?? 'GET',
          target: req.url ?? '/',
          scheme: 'http',
        }),
      },
      parent,
    );
    res.writeHead(200).end('ok');
    span.setAttributes(httpResponseAttributes(200));
    span.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

t.test('exports spans with the instance resource and the given attributes', async (t) => {
  const rx = await startOtlpReceiver();
  t.teardown(() => rx.close());
  const tracing = createTracing(base(rx.endpoint));
  t.teardown(() => tracing.shutdown());
  t.equal(tracing.enabled, true);

  const server = tracing.tracer.startSpan(
    'GET /orders',
    {
      kind: SpanKind.SERVER,
      attributes: {
        ...httpServerAttributes({ method: 'GET', target: '/orders?id=7', scheme: 'https' }),
        [REMORA_ATTR.peerSpiffeId]: 'spiffe://c.remora/ns/default/dc/dc1/svc/web',
      },
    },
    ROOT_CONTEXT,
  );
  const client = tracing.tracer.startSpan(
    'GET',
    { kind: SpanKind.CLIENT, attributes: { [REMORA_ATTR.upstream]: 'billing' } },
    trace.setSpan(ROOT_CONTEXT, server),
  );
  client.setStatus(httpSpanStatus(503, SpanKind.CLIENT) ?? { code: SpanStatusCode.UNSET });
  client.end();
  server.end();

  const [srv] = await rx.waitForSpans({ name: 'GET /orders' });
  const [cli] = await rx.waitForSpans({ name: 'GET' });
  t.ok(srv && cli);
  if (!srv || !cli) return;
  t.same(srv.resource, {
    'service.name': 'orders',
    'service.instance.id': 'orders-1',
    'host.name': 'host-a',
    'remora.component': 'proxy',
  });
  t.equal(srv.kind, 'SERVER');
  t.match(srv.attributes, {
    'http.request.method': 'GET',
    'url.path': '/orders',
    'url.query': 'id=7',
    'url.scheme': 'https',
    'remora.peer.spiffe_id': 'spiffe://c.remora/ns/default/dc/dc1/svc/web',
  });
  t.equal(srv.parentSpanId, undefined, 'a span with no parent is a root');
  t.equal(cli.kind, 'CLIENT');
  t.equal(cli.traceId, srv.traceId);
  t.equal(cli.parentSpanId, srv.spanId);
  t.equal(cli.status.code, 'ERROR');
  t.equal(cli.attributes['remora.upstream'], 'billing');
  await waitFor('exported count', () => tracing.stats().exported === 2);
  t.same(tracing.stats(), { exported: 2, dropped: 0, failed: 0 });
});

t.test('a W3C traceparent from the caller continues its trace', async (t) => {
  const rx = await startOtlpReceiver();
  t.teardown(() => rx.close());
  const tracing = createTracing(base(rx.endpoint));
  t.teardown(() => tracing.shutdown());
  const app = await startTracedServer(tracing);
  t.teardown(() => app.close());

  const res = await fetch(`${app.url}/x`, {
    headers: { traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`, tracestate: 'vendor=abc' },
  });
  t.equal(res.status, 200);
  const [span] = await rx.waitForSpans({ traceId: PARENT_TRACE });
  t.equal(span?.parentSpanId, PARENT_SPAN);
  t.equal(span?.kind, 'SERVER');
  t.equal(span?.attributes['http.response.status_code'], 200);

  const out: Record<string, string> = {};
  const ctx = tracing.extract({
    traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
    tracestate: 'vendor=abc',
  });
  const child = tracing.tracer.startSpan('child', {}, ctx);
  tracing.inject(trace.setSpan(ctx, child), out);
  child.end();
  t.match(out.traceparent, new RegExp(`^00-${PARENT_TRACE}-[0-9a-f]{16}-01$`));
  t.not(out.traceparent, `00-${PARENT_TRACE}-${PARENT_SPAN}-01`, 'the child span id goes out');
  t.equal(out.tracestate, 'vendor=abc', 'tracestate is carried on');
});

t.test('B3 headers on input continue the trace', async (t) => {
  const rx = await startOtlpReceiver();
  t.teardown(() => rx.close());
  const tracing = createTracing(base(rx.endpoint));
  t.teardown(() => tracing.shutdown());
  const app = await startTracedServer(tracing);
  t.teardown(() => app.close());

  await fetch(`${app.url}/single`, { headers: { b3: `${PARENT_TRACE}-${PARENT_SPAN}-1` } });
  const multiTrace = '463ac35c9f6413ad48485a3953bb6124';
  await fetch(`${app.url}/multi`, {
    headers: {
      'X-B3-TraceId': multiTrace,
      'X-B3-SpanId': 'a2fb4a1d1a96d312',
      'X-B3-Sampled': '1',
    },
  });
  const [single] = await rx.waitForSpans({ traceId: PARENT_TRACE });
  const [multi] = await rx.waitForSpans({ traceId: multiTrace });
  t.equal(single?.parentSpanId, PARENT_SPAN);
  t.equal(multi?.parentSpanId, 'a2fb4a1d1a96d312');
});

t.test(
  'sampling is parent-based: ratio 0 still records a sampled parent, never a new trace',
  async (t) => {
    const rx = await startOtlpReceiver();
    t.teardown(() => rx.close());
    const tracing = createTracing({ ...base(rx.endpoint), sampleRatio: 0 });
    t.teardown(() => tracing.shutdown());

    const root = tracing.tracer.startSpan('new-trace', {}, ROOT_CONTEXT);
    t.equal(root.isRecording(), false, 'a new trace is not sampled at ratio 0');
    root.end();
    const unsampled = tracing.tracer.startSpan(
      'parent-not-sampled',
      {},
      tracing.extract({ traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-00` }),
    );
    t.equal(unsampled.isRecording(), false);
    unsampled.end();
    const span = tracing.tracer.startSpan(
      'parent-sampled',
      {},
      tracing.extract({ traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01` }),
    );
    t.equal(span.isRecording(), true);
    span.end();
    await tracing.flush();
    await rx.waitForSpans({ name: 'parent-sampled' });
    t.same(
      rx.spans.map((s) => s.name),
      ['parent-sampled'],
    );

    const out: Record<string, string> = {};
    const noCtx = trace.setSpan(ROOT_CONTEXT, tracing.tracer.startSpan('x', {}, ROOT_CONTEXT));
    tracing.inject(noCtx, out);
    t.match(out.traceparent, /-00$/, 'an unsampled new trace still propagates, flagged unsampled');
  },
);

t.test('with an empty endpoint spans propagate but nothing is exported', async (t) => {
  const tracing = createTracing(base(''));
  t.equal(tracing.enabled, false);
  const span = tracing.tracer.startSpan(
    'x',
    {},
    tracing.extract({ traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01` }),
  );
  const out: Record<string, string> = {};
  tracing.inject(trace.setSpan(ROOT_CONTEXT, span), out);
  span.end();
  t.match(out.traceparent, new RegExp(`^00-${PARENT_TRACE}-`));
  await tracing.flush();
  await tracing.shutdown();
  t.same(tracing.stats(), { exported: 0, dropped: 0, failed: 0 });
});

t.test(
  'an unreachable collector changes nothing for callers; spans are counted and one warning is logged',
  async (t) => {
    const port = await freePort();
    const logs = captureLogs();
    const tracing = createTracing({
      ...base(`http://127.0.0.1:${port}/v1/traces`),
      timeoutMs: 300,
      logger: logs.logger,
      now: () => 1000,
    });
    const app = await startTracedServer(tracing);
    t.teardown(() => app.close());

    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${app.url}/r${i}`);
      t.equal(res.status, 200);
      await res.text();
    }
    await waitFor('spans counted as failed', () => tracing.stats().failed === 20, 15_000);
    await tracing.shutdown();
    t.same(tracing.stats(), { exported: 0, dropped: 0, failed: 20 });
    const warns = logs.lines().filter((l) => l.code === 'REMORA_E_TELEMETRY_EXPORT_FAILED');
    t.equal(warns.length, 1, 'warnings are rate-limited');
    t.equal(warns[0]?.level, 'warn');
    t.match(String(warns[0]?.msg), `127.0.0.1:${port}`);
  },
);

t.test(
  'a collector that never answers does not hold requests; excess spans are dropped and counted',
  async (t) => {
    const rx = await startOtlpReceiver();
    t.teardown(() => rx.close());
    rx.mode = 'hang';
    // a long export timeout: nothing held is released while the requests below run
    const tracing = createTracing({ ...base(rx.endpoint), maxQueueSize: 10, timeoutMs: 5000 });
    const app = await startTracedServer(tracing);
    t.teardown(() => app.close());

    for (let i = 0; i < 30; i++) {
      const res = await fetch(`${app.url}/r${i}`);
      t.equal(res.status, 200);
      await res.text();
    }
    await waitFor('an export request at the collector', () => rx.requests > 0);
    t.ok(tracing.stats().dropped >= 20, `dropped ${tracing.stats().dropped} of 30`);
    await rx.close(); // the collector goes away: held exports fail at once
    await tracing.shutdown();
    const s = tracing.stats();
    t.equal(s.exported, 0);
    t.equal(s.exported + s.dropped + s.failed, 30, 'every span is accounted for');
  },
);

t.test('bad settings fail at start with a coded error naming the key', async (t) => {
  const codeOf = (fn: () => unknown): string => {
    try {
      fn();
      return 'no error';
    } catch (err) {
      return hasCode(err, 'REMORA_E_TELEMETRY_CONFIG_INVALID')
        ? String(err)
        : `other: ${String(err)}`;
    }
  };
  t.match(
    codeOf(() => createTracing({ ...base('http://x:4318/v1/traces'), sampleRatio: 1.5 })),
    /tracing\.sampleRatio is 1\.5/,
  );
  t.match(
    codeOf(() => createTracing(base('127.0.0.1:4318'))),
    /tracing\.endpoint "127\.0\.0\.1:4318"/,
  );
  t.match(
    codeOf(() => createTracing({ ...base('http://x:4318/v1/traces'), maxQueueSize: 0 })),
    /tracing\.maxQueueSize is 0/,
  );
});

t.test('exporter headers reach the collector', async (t) => {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(String(req.headers.authorization));
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  const tracing = createTracing({
    ...base(`http://127.0.0.1:${port}/v1/traces`),
    headers: { authorization: 'Bearer t0k' },
  });
  tracing.tracer.startSpan('x', {}, ROOT_CONTEXT).end();
  await tracing.shutdown();
  t.same(seen, ['Bearer t0k']);
  t.equal(tracing.stats().exported, 1);
});

t.test("a program's tracing config section becomes createTracing options", async (t) => {
  const opts = tracingOptionsFromConfig({
    endpoint: 'http://127.0.0.1:4318/v1/traces',
    sampleRatio: 0.25,
    headers: 'x-tenant=a',
    timeoutMs: 5000,
    maxQueueSize: 100,
  });
  t.same(opts, {
    endpoint: 'http://127.0.0.1:4318/v1/traces',
    headers: { 'x-tenant': 'a' },
    sampleRatio: 0.25,
    timeoutMs: 5000,
    maxQueueSize: 100,
  });
});

t.test(
  'with async context enabled, spans started inside a callback find their parent',
  async (t) => {
    const rx = await startOtlpReceiver();
    t.teardown(() => rx.close());
    enableAsyncContext();
    const tracing = createTracing({ ...base(rx.endpoint), component: 'agent' });
    t.teardown(() => tracing.shutdown());
    await tracing.tracer.startActiveSpan('issue certificate', async (parent) => {
      await new Promise((resolve) => setImmediate(resolve));
      const headers: Record<string, string> = {};
      tracing.inject(context.active(), headers);
      tracing.tracer.startSpan('sign request').end();
      parent.end();
      t.match(
        headers.traceparent,
        new RegExp(`^00-${parent.spanContext().traceId}-${parent.spanContext().spanId}-01$`),
      );
    });
    const [child] = await rx.waitForSpans({ name: 'sign request' });
    const [parent] = await rx.waitForSpans({ name: 'issue certificate' });
    t.equal(child?.parentSpanId, parent?.spanId);
    t.equal(parent?.resource['remora.component'], 'agent');
  },
);

t.test('a call across two services is one trace with SERVER → CLIENT → SERVER links', async (t) => {
  const rx = await startOtlpReceiver();
  t.teardown(() => rx.close());
  const web = createTracing({ ...base(rx.endpoint), serviceName: 'web', instanceId: 'web-1' });
  const api = createTracing({ ...base(rx.endpoint), serviceName: 'api', instanceId: 'api-1' });
  t.teardown(() => Promise.all([web.shutdown(), api.shutdown()]));
  const apiServer = await startTracedServer(api);
  t.teardown(() => apiServer.close());

  const webServer = http.createServer((req, res) => {
    const parent = web.extract(req.headers);
    const server = web.tracer.startSpan('GET', { kind: SpanKind.SERVER }, parent);
    const inServer = trace.setSpan(parent, server);
    const client = web.tracer.startSpan(
      'GET',
      { kind: SpanKind.CLIENT, attributes: { [REMORA_ATTR.upstream]: 'api' } },
      inServer,
    );
    const headers: Record<string, string> = {};
    web.inject(trace.setSpan(inServer, client), headers);
    void fetch(`${apiServer.url}/orders`, { headers }).then(async (r) => {
      client.setAttributes(httpResponseAttributes(r.status));
      await r.text();
      client.end();
      res.writeHead(200).end('ok');
      server.end();
    });
  });
  await new Promise<void>((resolve) => webServer.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    webServer.closeAllConnections();
    return new Promise<void>((resolve) => webServer.close(() => resolve()));
  });

  const res = await fetch(`http://127.0.0.1:${(webServer.address() as AddressInfo).port}/`);
  t.equal(res.status, 200);
  const [apiSpan] = await rx.waitForSpans({ service: 'api' });
  const webSpans = await rx.waitForSpans({ service: 'web', count: 2 });
  const webServerSpan = webSpans.find((s) => s.kind === 'SERVER');
  const webClientSpan = webSpans.find((s) => s.kind === 'CLIENT');
  t.ok(apiSpan && webServerSpan && webClientSpan);
  t.equal(webClientSpan?.traceId, webServerSpan?.traceId);
  t.equal(apiSpan?.traceId, webServerSpan?.traceId, 'both services are in one trace');
  t.equal(webServerSpan?.parentSpanId, undefined);
  t.equal(webClientSpan?.parentSpanId, webServerSpan?.spanId);
  t.equal(apiSpan?.parentSpanId, webClientSpan?.spanId);
  t.equal(apiSpan?.resource['service.instance.id'], 'api-1');
  t.equal(webClientSpan?.attributes['http.response.status_code'], 200);
});
