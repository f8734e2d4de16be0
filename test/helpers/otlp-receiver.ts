/**
 * A real OTLP/HTTP trace receiver for tests: a node:http server on 127.0.0.1, port 0, that
 * accepts `POST /v1/traces` with the JSON body @opentelemetry/exporter-trace-otlp-http sends
 * (protobuf bodies are answered 415) and keeps every span, flattened.
 *
 *   const rx = await startOtlpReceiver();
 *   const tracing = createTracing({ ..., endpoint: rx.endpoint });
 *   const spans = await rx.waitForSpans({ traceId, count: 2 });   // or { name: 'GET' }
 *   rx.spans;                  // every span received so far (ReceivedSpan[])
 *   rx.mode = 'hang';          // 'ok' (default) | 'hang' (never answer) | 'fail' (HTTP 503)
 *   rx.requests;               // export requests seen, in any mode
 *   await rx.close();          // also ends requests held by 'hang'
 *
 * ReceivedSpan: { traceId, spanId, parentSpanId?, name, kind ('SERVER' | 'CLIENT' | …),
 * startTimeUnixNano, endTimeUnixNano (bigint), attributes, resource (plain objects of values),
 * scope, status: { code: 'UNSET' | 'OK' | 'ERROR', message? }, events: [{ name, attributes }] }.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../../lib/util/index.ts';

export type AttrValue = string | number | boolean | null | AttrValue[] | { [k: string]: AttrValue };

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: 'UNSPECIFIED' | 'INTERNAL' | 'SERVER' | 'CLIENT' | 'PRODUCER' | 'CONSUMER';
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  attributes: Record<string, AttrValue>;
  resource: Record<string, AttrValue>;
  scope: { name: string; version?: string };
  status: { code: 'UNSET' | 'OK' | 'ERROR'; message?: string };
  events: Array<{ name: string; attributes: Record<string, AttrValue> }>;
}

export interface SpanQuery {
  traceId?: string;
  name?: string;
  /** service.name of the resource. */
  service?: string;
  /** Wait until at least this many match (default 1). */
  count?: number;
  timeoutMs?: number;
}

export interface OtlpReceiver {
  /** Base URL, e.g. http://127.0.0.1:43123 */
  url: string;
  /** The traces URL to give an exporter: `${url}/v1/traces`. */
  endpoint: string;
  spans: ReceivedSpan[];
  requests: number;
  mode: 'ok' | 'hang' | 'fail';
  /** Spans matching every given field. */
  find(q: Omit<SpanQuery, 'count' | 'timeoutMs'>): ReceivedSpan[];
  waitForSpans(q: SpanQuery): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
}

const KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'] as const;
const STATUS = ['UNSET', 'OK', 'ERROR'] as const;

interface JsonKeyValue {
  key: string;
  value: JsonAnyValue;
}
interface JsonAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: JsonAnyValue[] };
  kvlistValue?: { values?: JsonKeyValue[] };
  bytesValue?: string;
}

function decodeValue(v: JsonAnyValue): AttrValue {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(decodeValue);
  if (v.kvlistValue) return decodeAttributes(v.kvlistValue.values);
  if (v.bytesValue !== undefined) return v.bytesValue;
  return null;
}

function decodeAttributes(kvs: JsonKeyValue[] | undefined): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of kvs ?? []) out[kv.key] = decodeValue(kv.value);
  return out;
}

interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano: string | number;
  endTimeUnixNano: string | number;
  attributes?: JsonKeyValue[];
  status?: { code?: number; message?: string };
  events?: Array<{ name: string; attributes?: JsonKeyValue[] }>;
}
interface JsonExport {
  resourceSpans?: Array<{
    resource?: { attributes?: JsonKeyValue[] };
    scopeSpans?: Array<{ scope?: { name: string; version?: string }; spans?: JsonSpan[] }>;
  }>;
}

/** Flattens one OTLP/JSON ExportTraceServiceRequest. */
export function decodeOtlpJson(body: JsonExport): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const resource = decodeAttributes(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        const span: ReceivedSpan = {
          traceId: s.traceId.toLowerCase(),
          spanId: s.spanId.toLowerCase(),
          name: s.name,
          kind: KINDS[s.kind ?? 0] ?? 'UNSPECIFIED',
          startTimeUnixNano: BigInt(s.startTimeUnixNano),
          endTimeUnixNano: BigInt(s.endTimeUnixNano),
          attributes: decodeAttributes(s.attributes),
          resource,
          scope: {
            name: ss.scope?.name ?? '',
            ...(ss.scope?.version ? { version: ss.scope.version } : {}),
          },
          status: {
            code: STATUS[s.status?.code ?? 0] ?? 'UNSET',
            ...(s.status?.message ? { message: s.status.message } : {}),
          },
          events: (s.events ?? []).map((e) => ({
            name: e.name,
            attributes: decodeAttributes(e.attributes),
          })),
        };
        if (s.parentSpanId) span.parentSpanId = s.parentSpanId.toLowerCase();
        out.push(span);
      }
    }
  }
  return out;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const held = new Set<http.ServerResponse>();
  const rx: OtlpReceiver = {
    url: '',
    endpoint: '',
    spans: [],
    requests: 0,
    mode: 'ok',
    find(q) {
      return rx.spans.filter(
        (s) =>
          (q.traceId === undefined || s.traceId === q.traceId) &&
          (q.name === undefined || s.name === q.name) &&
          (q.service === undefined || s.resource['service.name'] === q.service),
      );
    },
    async waitForSpans(q) {
      const count = q.count ?? 1;
      return waitFor(
        `${count} span(s) matching ${JSON.stringify({ traceId: q.traceId, name: q.name, service: q.service })} at the OTLP receiver (have ${rx.spans.length} in all)`,
        () => {
          const found = rx.find(q);
          return found.length >= count ? found : undefined;
        },
        q.timeoutMs ?? 10_000,
      );
    },
    async close() {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      rx.requests += 1;
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      if (rx.mode === 'hang') {
        held.add(res);
        res.on('close', () => held.delete(res));
        return;
      }
      if (rx.mode === 'fail') {
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"message":"unavailable"}');
        return;
      }
      if (!String(req.headers['content-type'] ?? '').startsWith('application/json')) {
        res.writeHead(415).end('this test receiver decodes OTLP/JSON only');
        return;
      }
      try {
        rx.spans.push(...decodeOtlpJson(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
      } catch (err) {
        res.writeHead(400).end(String(err));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  rx.url = `http://127.0.0.1:${port}`;
  rx.endpoint = `${rx.url}/v1/traces`;
  return rx;
}
