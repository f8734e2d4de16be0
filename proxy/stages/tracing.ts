// SERVER spans per inbound request and CLIENT spans per outbound attempt (lib/telemetry).
// Loaded only when a tracing endpoint is configured, so the hot path pays nothing otherwise.
import { SpanKind, SpanStatusCode, trace, type Attributes, type Context } from '@opentelemetry/api';
import {
  REMORA_ATTR,
  createTracing,
  httpClientAttributes,
  httpResponseAttributes,
  httpServerAttributes,
  httpSpanName,
  httpSpanStatus,
  type Tracing,
} from '../../lib/telemetry/index.ts';
import type { Logger } from '../../lib/log/index.ts';
import type { InstanceIdentity, TracingConfig } from '../../lib/proxy-api/index.ts';
import { headersRecord } from '../http/h1-parse.ts';
import type { Handler, ProxyRequest, ProxyResponse } from './types.ts';

export interface TracingImpl {
  run(
    kind: 'server' | 'client',
    peer: string,
    req: ProxyRequest,
    next: Handler,
  ): Promise<ProxyResponse>;
  shutdown(): Promise<void>;
}

const TRACE_HEADER_NAMES = new Set(['traceparent', 'tracestate']);

function replaceTraceHeaders(req: ProxyRequest, tracing: Tracing, ctx: Context): void {
  const out: Record<string, string> = {};
  tracing.inject(ctx, out);
  const h = req.headers;
  for (let i = h.length - 2; i >= 0; i -= 2)
    if (TRACE_HEADER_NAMES.has(h[i]!.toLowerCase())) h.splice(i, 2);
  for (const [k, v] of Object.entries(out)) h.push(k, v);
}

export function createTracingImpl(
  cfg: TracingConfig,
  instance: InstanceIdentity,
  logger: Logger,
): TracingImpl {
  const tracing = createTracing({
    serviceName: instance.service,
    instanceId: instance.id,
    component: 'proxy',
    endpoint: cfg.endpoint,
    headers: cfg.headers,
    sampleRatio: cfg.sampleRatio,
    logger,
  });
  return {
    async run(kind, peer, req, next) {
      const parent =
        kind === 'client' && req.ctx.trace !== null
          ? (req.ctx.trace as Context)
          : tracing.extract(headersRecord(req.headers));
      const spanKind = kind === 'server' ? SpanKind.SERVER : SpanKind.CLIENT;
      const attributes: Attributes =
        kind === 'server'
          ? {
              ...httpServerAttributes({
                method: req.method,
                target: req.target,
                scheme: 'https',
                serverAddress: req.host,
              }),
              [REMORA_ATTR.direction]: 'inbound',
            }
          : {
              ...httpClientAttributes({
                method: req.method,
                url: `https://${peer}${req.target}`,
                serverAddress: peer,
                serverPort: 0,
                attempt: req.ctx.retries + 1,
              }),
              [REMORA_ATTR.upstream]: peer,
              [REMORA_ATTR.direction]: 'outbound',
            };
      if (req.ctx.peerSpiffeId !== null)
        attributes[REMORA_ATTR.peerSpiffeId] = req.ctx.peerSpiffeId;
      const span = tracing.tracer.startSpan(
        httpSpanName(req.method),
        { kind: spanKind, attributes },
        parent,
      );
      const ctx = trace.setSpan(parent, span);
      if (kind === 'server') req.ctx.trace = ctx;
      replaceTraceHeaders(req, tracing, ctx);
      try {
        const res = await next(req);
        span.setAttributes(httpResponseAttributes(res.status));
        if (req.ctx.endpointId !== null)
          span.setAttribute(REMORA_ATTR.endpoint, req.ctx.endpointId);
        if (res.errorCode !== undefined) span.setAttribute(REMORA_ATTR.errorCode, res.errorCode);
        const st = httpSpanStatus(res.status, spanKind);
        if (st) span.setStatus(st);
        return res;
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'error';
        span.setAttribute(REMORA_ATTR.errorCode, code);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
        throw err;
      } finally {
        if (kind === 'server') span.setAttribute(REMORA_ATTR.retryCount, req.ctx.retries);
        span.end();
      }
    },
    shutdown: () => tracing.shutdown(),
  };
}
