import os from 'node:os';
import {
  context,
  diag,
  DiagLogLevel,
  type Context,
  type DiagLogger,
  type Tracer,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { setGlobalErrorHandler } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { RemoraError, toRemoraError } from '../errors/index.ts';
import { createSilentLogger, logError, type Logger } from '../log/index.ts';
import { RESOURCE_ATTR } from './attributes.ts';
import { createExportGuard, type ExportStats } from './export-guard.ts';
import { parseOtlpHeaders } from './headers.ts';
import { extractContext, injectContext, type HeaderCarrier } from './propagation.ts';

export const DEFAULT_EXPORT_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_QUEUE_SIZE = 2048;
/** How long finished spans wait before a batch is sent (unless a full batch is ready). */
export const DEFAULT_EXPORT_DELAY_MS = 1000;
export const DEFAULT_MAX_EXPORT_BATCH_SIZE = 512;
/** At most one warning per this interval about export trouble; the rest are summed into it. */
export const EXPORT_WARN_INTERVAL_MS = 30_000;

export type TracingComponent = 'proxy' | 'agent' | 'control' | 'dev';

export interface CreateTracingOptions {
  /** The mesh service (or program) name: resource `service.name`. */
  serviceName: string;
  /** Resource `service.instance.id`. */
  instanceId: string;
  /** Resource `remora.component`. */
  component: TracingComponent;
  /** Resource `host.name`; the OS host name by default. */
  hostName?: string;
  /** OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces. Empty: spans are made (so
   * context still propagates) but never exported. */
  endpoint: string;
  /** Extra request headers for the collector (see parseOtlpHeaders). */
  headers?: Record<string, string>;
  /** Share of new (root) traces sampled, 0..1; an incoming parent's decision always wins. */
  sampleRatio: number;
  /** Per-export request deadline. */
  timeoutMs?: number;
  /** Most spans held for export; beyond it spans are dropped and counted. */
  maxQueueSize?: number;
  /** Delay before a partial batch is sent. */
  exportDelayMs?: number;
  logger?: Logger;
  /** Time source for rate-limiting warnings (tests). */
  now?: () => number;
}

export interface Tracing {
  /** Make spans with this; pass parent contexts explicitly (`tracer.startSpan(name, opts, ctx)`). */
  tracer: Tracer;
  /** Trace context from headers: W3C traceparent/tracestate, else B3 single or multi. */
  extract(headers: HeaderCarrier, parent?: Context): Context;
  /** Writes W3C traceparent/tracestate of the context's span into `headers`. */
  inject(ctx: Context, headers: Record<string, string>): void;
  /** What happened to finished, sampled spans so far. */
  stats(): ExportStats;
  /** Sends what is queued now (tests, before exit). Never rejects. */
  flush(): Promise<void>;
  /** Sends what is queued, bounded by the export timeout, then stops exporting. Never rejects. */
  shutdown(): Promise<void>;
  /** True when spans are exported (an endpoint is set). */
  enabled: boolean;
}

function validate(opts: CreateTracingOptions): void {
  const bad = (msg: string, details: Record<string, unknown>): never => {
    throw new RemoraError('REMORA_E_TELEMETRY_CONFIG_INVALID', msg, details);
  };
  if (!Number.isFinite(opts.sampleRatio) || opts.sampleRatio < 0 || opts.sampleRatio > 1) {
    bad(
      `tracing.sampleRatio is ${opts.sampleRatio}; use a number from 0 (no new traces) to 1 (all)`,
      { key: 'tracing.sampleRatio', value: opts.sampleRatio },
    );
  }
  if (opts.endpoint !== '') {
    let url: URL | undefined;
    try {
      url = new URL(opts.endpoint);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      bad(
        `tracing.endpoint "${opts.endpoint}" is not an http(s) URL; use e.g. http://127.0.0.1:4318/v1/traces, or empty to disable export`,
        { key: 'tracing.endpoint', value: opts.endpoint },
      );
    }
  }
  for (const [name, v] of [
    ['tracing.timeoutMs', opts.timeoutMs],
    ['tracing.maxQueueSize', opts.maxQueueSize],
  ] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) {
      bad(`${name} is ${v}; use a whole number of at least 1`, { key: name, value: v });
    }
  }
}

/**
 * Warnings about export trouble, at most one per interval, with what happened since the last.
 * The single handler for exporter errors of one Tracing.
 */
function createTroubleReporter(logger: Logger, now: () => number, endpoint: string) {
  let lastWarnAt = -Infinity;
  let failedSince = 0;
  let droppedSince = 0;
  return (kind: 'failed' | 'dropped', spans: number, error?: unknown): void => {
    if (kind === 'failed') failedSince += spans;
    else droppedSince += spans;
    const t = now();
    if (t - lastWarnAt < EXPORT_WARN_INTERVAL_MS) return;
    lastWarnAt = t;
    const reason =
      error instanceof Error ? error.message : typeof error === 'string' ? error : undefined;
    const err = new RemoraError(
      'REMORA_E_TELEMETRY_EXPORT_FAILED',
      `spans not delivered to the OTLP collector at ${endpoint}: ${failedSince} failed, ${droppedSince} dropped${reason ? ` (last error: ${reason})` : ''}; traffic is not affected`,
      { endpoint, failed: failedSince, dropped: droppedSince },
    );
    failedSince = 0;
    droppedSince = 0;
    logError(logger, err, undefined, 'warn');
  };
}

let otelGlobalsInstalled = false;

/**
 * OpenTelemetry's own diagnostics (diag) and its global error handler are process-wide: the first
 * Tracing created with a logger routes them to that logger at warn, rate-limited.
 */
function installOtelGlobals(logger: Logger, now: () => number): void {
  if (otelGlobalsInstalled) return;
  otelGlobalsInstalled = true;
  let lastAt = -Infinity;
  let suppressed = 0;
  const warn = (msg: string, args: unknown[]): void => {
    const t = now();
    if (t - lastAt < EXPORT_WARN_INTERVAL_MS) {
      suppressed += 1;
      return;
    }
    lastAt = t;
    const extra = args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ');
    logger.warn(
      { otel: true, suppressed },
      `OpenTelemetry: ${msg}${extra ? ` ${extra}` : ''}`.slice(0, 2000),
    );
    suppressed = 0;
  };
  const diagLogger: DiagLogger = {
    error: (m, ...a) => warn(m, a),
    warn: (m, ...a) => warn(m, a),
    info: () => {},
    debug: () => {},
    verbose: () => {},
  };
  diag.setLogger(diagLogger, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
  setGlobalErrorHandler((ex) => warn('error', [ex]));
}

let contextManagerEnabled = false;

/**
 * Registers AsyncLocalStorage as OpenTelemetry's context manager (once per process), so that
 * `context.active()` follows async work. For the agent and control plane; the proxy passes
 * contexts explicitly instead.
 */
export function enableAsyncContext(): void {
  if (contextManagerEnabled) return;
  contextManagerEnabled = context.setGlobalContextManager(
    new AsyncLocalStorageContextManager().enable(),
  );
}

/**
 * Tracing for one program instance: a tracer whose spans carry the instance's resource, are
 * sampled parent-based with `sampleRatio` for new traces, and leave through a bounded batch
 * processor to an OTLP/HTTP (JSON) exporter. Exporting never slows or fails the caller: when the
 * collector is down or slow, spans are dropped and counted (`stats()`) and one warning per 30 s
 * says so.
 */
export function createTracing(opts: CreateTracingOptions): Tracing {
  validate(opts);
  const logger = opts.logger ?? createSilentLogger();
  const now = opts.now ?? Date.now;
  if (opts.logger) installOtelGlobals(logger, now);

  const resource = resourceFromAttributes({
    [RESOURCE_ATTR.serviceName]: opts.serviceName,
    [RESOURCE_ATTR.serviceInstanceId]: opts.instanceId,
    [RESOURCE_ATTR.hostName]: opts.hostName ?? os.hostname(),
    [RESOURCE_ATTR.component]: opts.component,
  });
  const sampler = new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(opts.sampleRatio) });
  const timeoutMs = opts.timeoutMs ?? DEFAULT_EXPORT_TIMEOUT_MS;
  const maxQueueSize = opts.maxQueueSize ?? DEFAULT_MAX_QUEUE_SIZE;
  const enabled = opts.endpoint !== '';

  const guard = createExportGuard({
    maxQueueSize,
    // the exporter retries within its own timeout; allow it that plus a margin to answer
    answerDeadlineMs: timeoutMs + 1000,
    onTrouble: createTroubleReporter(logger, now, opts.endpoint),
  });

  let provider: TracerProvider;
  if (enabled) {
    const exporter = new OTLPTraceExporter({
      url: opts.endpoint,
      headers: { ...opts.headers },
      timeoutMillis: timeoutMs,
    });
    const batch = new BatchSpanProcessor({
      exporter: guard.wrapExporter(exporter),
      maxQueueSize,
      maxExportBatchSize: Math.min(DEFAULT_MAX_EXPORT_BATCH_SIZE, maxQueueSize),
      scheduledDelayMillis: opts.exportDelayMs ?? DEFAULT_EXPORT_DELAY_MS,
      exportTimeoutMillis: timeoutMs + 2000,
    });
    provider = new TracerProvider({
      resource,
      sampler,
      spanProcessors: [guard.wrapProcessor(batch)],
    });
  } else {
    provider = new TracerProvider({ resource, sampler });
  }
  const tracer = provider.getTracer(`remora-${opts.component}`, '0.1.0');

  const bounded = async (what: string, p: () => Promise<void>): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        p(),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs + 2000);
          timer.unref();
        }),
      ]);
    } catch (err) {
      logError(logger, toRemoraError(err), `tracing ${what}`, 'warn');
    } finally {
      clearTimeout(timer);
    }
  };

  let shutdownPromise: Promise<void> | undefined;
  return {
    tracer,
    enabled,
    extract: (headers, parent) => extractContext(headers, parent),
    inject: (ctx, headers) => injectContext(ctx, headers),
    stats: () => guard.stats(),
    flush: () => bounded('flush', () => provider.forceFlush({ timeoutMillis: timeoutMs + 1000 })),
    shutdown() {
      shutdownPromise ??= bounded('shutdown', () => provider.shutdown()).then(() =>
        guard.finalize(),
      );
      return shutdownPromise;
    },
  };
}

/** The `tracing` section every program's config has (lib/config/schemas/common.ts). */
export interface TracingConfigSection {
  endpoint: string;
  sampleRatio: number;
  headers: string;
  timeoutMs: number;
  maxQueueSize: number;
}

/**
 * createTracing options from a program's `tracing` config section: parses the `k=v,…` headers
 * and fails with a coded error on a bad value.
 */
export function tracingOptionsFromConfig(
  config: TracingConfigSection,
): Pick<
  CreateTracingOptions,
  'endpoint' | 'headers' | 'sampleRatio' | 'timeoutMs' | 'maxQueueSize'
> {
  return {
    endpoint: config.endpoint,
    headers: parseOtlpHeaders(config.headers),
    sampleRatio: config.sampleRatio,
    timeoutMs: config.timeoutMs,
    maxQueueSize: config.maxQueueSize,
  };
}
