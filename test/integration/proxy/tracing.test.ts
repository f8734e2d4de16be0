import t from 'tap';
import { startOtlpReceiver } from '../../helpers/otlp-receiver.ts';
import { request, startTwoSidecars } from './mesh.ts';

t.test(
  'with a tracing endpoint each sidecar exports its span, parented across the mTLS hop',
  async (t) => {
    const rx = await startOtlpReceiver();
    const m = await startTwoSidecars();
    t.teardown(async () => {
      await m.close();
      await rx.close();
    });
    const tracing = { endpoint: rx.endpoint, sampleRatio: 1, headers: {} };
    await m.api.apply({ ...m.api.snapshot, version: 2, tracing });
    await m.web.apply({ ...m.web.snapshot, version: 2, tracing });
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parent = '00f067aa0ba902b7';
    const res = await request(m.url('/traced'), {
      headers: { traceparent: `00-${traceId}-${parent}-01` },
    });
    t.equal(res.status, 200);
    const spans = await rx.waitForSpans({ traceId, count: 2, timeoutMs: 15_000 });
    const client = spans.find((s) => s.kind === 'CLIENT')!;
    const server = spans.find((s) => s.kind === 'SERVER')!;
    t.equal(client.parentSpanId, parent, "web's CLIENT span continues the caller's trace");
    t.equal(
      server.parentSpanId,
      client.spanId,
      "api's SERVER span is the child of web's CLIENT span",
    );
    t.equal(client.resource['service.name'], 'web');
    t.equal(server.resource['service.name'], 'api');
    t.equal(server.attributes['remora.peer.spiffe_id'], m.mesh.spiffeIdFor('web'));
    t.equal(server.attributes['http.response.status_code'], 200);
  },
);
