import type { ErrorSpec } from './types.ts';

/** Error codes of the telemetry area. Append only; never rename or reuse a code. */
export const TELEMETRY_ERRORS = {
  REMORA_E_TELEMETRY_CONFIG_INVALID: {
    meaning:
      'A tracing setting is unusable: the OTLP endpoint is not an http(s) URL, the sampling ratio is outside 0..1, or an exporter header is not a k=v pair.',
    remedy:
      'Fix `tracing.endpoint` (e.g. http://127.0.0.1:4318/v1/traces, or empty to disable export), `tracing.sampleRatio` (0 to 1) or `tracing.headers` (k=v,k2=v2).',
  },
  REMORA_E_TELEMETRY_EXPORT_FAILED: {
    meaning:
      'Spans could not be delivered to the OTLP collector (unreachable, slow or refusing); they were dropped and counted, traffic was not affected.',
    remedy:
      'Check that the collector (e.g. Jaeger with COLLECTOR_OTLP_ENABLED=true, port 4318) runs at `tracing.endpoint`, or set the endpoint to empty to disable export.',
  },
  REMORA_E_TELEMETRY_JAEGER_UNREACHABLE: {
    meaning:
      "Jaeger's query API could not be reached (connection refused, DNS failure or timeout).",
    remedy:
      'Start Jaeger (docker run -p 16686:16686 -p 4318:4318 jaegertracing/all-in-one) or point `remora traces` at it with --jaeger-url or REMORA_CLI_JAEGER_URL.',
  },
  REMORA_E_TELEMETRY_JAEGER_QUERY_FAILED: {
    meaning: "Jaeger's query API answered the trace search with an error.",
    remedy:
      'Read the error Jaeger returned; check the service name (`remora traces --help`) and the --lookback and --limit values.',
  },
  REMORA_E_TELEMETRY_JAEGER_BAD_RESPONSE: {
    meaning:
      "The answer from the Jaeger URL is not shaped like Jaeger's query API (/api/traces), so it is probably not Jaeger.",
    remedy:
      'Point --jaeger-url (or REMORA_CLI_JAEGER_URL) at the Jaeger query service, port 16686 by default.',
  },
} as const satisfies Record<string, ErrorSpec>;
