export {
  createTracing,
  enableAsyncContext,
  tracingOptionsFromConfig,
  DEFAULT_EXPORT_DELAY_MS,
  DEFAULT_EXPORT_TIMEOUT_MS,
  DEFAULT_MAX_QUEUE_SIZE,
  type CreateTracingOptions,
  type Tracing,
  type TracingConfigSection,
  type TracingComponent,
} from './tracing.ts';
export type { ExportStats } from './export-guard.ts';
export { parseOtlpHeaders } from './headers.ts';
export { registerTracingMetrics } from './metrics.ts';
export {
  extractB3,
  extractContext,
  injectContext,
  TRACE_HEADER_NAMES,
  TRACE_HEADERS,
  type HeaderCarrier,
} from './propagation.ts';
export {
  REMORA_ATTR,
  RESOURCE_ATTR,
  errorAttributes,
  httpClientAttributes,
  httpMethodAttributes,
  httpResponseAttributes,
  httpServerAttributes,
  httpSpanName,
  httpSpanStatus,
  tcpBytesAttributes,
  tcpConnectionAttributes,
  type HttpClientRequestInfo,
  type HttpServerRequestInfo,
  type TcpConnectionInfo,
} from './attributes.ts';
