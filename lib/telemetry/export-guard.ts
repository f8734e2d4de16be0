import { TraceFlags, type Context } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, Span, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace';

/** Span counts of one exporter pipeline. */
export interface ExportStats {
  /** Spans the collector accepted. */
  exported: number;
  /** Spans never sent: the queue was full, or shutdown came before they could be sent. */
  dropped: number;
  /** Spans sent but not accepted: collector unreachable, refusing, or too slow. */
  failed: number;
}

export interface ExportGuardOptions {
  /** Most spans waiting or in flight; more are dropped and counted. */
  maxQueueSize: number;
  /** A batch still unanswered after this long counts as failed. */
  answerDeadlineMs: number;
  /** The one place export trouble goes: counted already, to be logged (rate-limited). */
  onTrouble(kind: 'failed' | 'dropped', spans: number, error?: unknown): void;
}

/**
 * Keeps tracing off the traffic path: bounds what is held for export, counts every span's fate,
 * and turns every exporter outcome into SUCCESS for the batch processor so that failures are
 * handled here once (counted and reported) instead of also reaching OpenTelemetry's global
 * handler. `wrapExporter` goes between the batch processor and the OTLP exporter;
 * `wrapProcessor` goes in front of the batch processor.
 */
export function createExportGuard(options: ExportGuardOptions) {
  const stats: ExportStats = { exported: 0, dropped: 0, failed: 0 };
  let pending = 0;
  let closed = false;
  let final = false;

  function wrapExporter(inner: SpanExporter): SpanExporter {
    return {
      export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
        const n = spans.length;
        let answered = false;
        const finish = (result: ExportResult): void => {
          if (answered) return;
          answered = true;
          clearTimeout(timer);
          if (!final) {
            pending -= n;
            if (result.code === ExportResultCode.SUCCESS) stats.exported += n;
            else {
              stats.failed += n;
              options.onTrouble('failed', n, result.error);
            }
          }
          resultCallback({ code: ExportResultCode.SUCCESS });
        };
        const timer = setTimeout(
          () =>
            finish({
              code: ExportResultCode.FAILED,
              error: new Error(`collector did not answer within ${options.answerDeadlineMs} ms`),
            }),
          options.answerDeadlineMs,
        );
        timer.unref();
        try {
          inner.export(spans, finish);
        } catch (err) {
          finish({ code: ExportResultCode.FAILED, error: err as Error });
        }
      },
      shutdown: () => inner.shutdown(),
      forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
    };
  }

  function wrapProcessor(inner: SpanProcessor): SpanProcessor {
    return {
      onStart(span: Span, parentContext: Context): void {
        inner.onStart(span, parentContext);
      },
      onEnd(span: ReadableSpan): void {
        if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
        if (closed || pending >= options.maxQueueSize) {
          stats.dropped += 1;
          options.onTrouble('dropped', 1);
          return;
        }
        pending += 1;
        inner.onEnd(span);
      },
      forceFlush: () => inner.forceFlush(),
      shutdown: () => {
        closed = true;
        return inner.shutdown();
      },
    };
  }

  return {
    wrapExporter,
    wrapProcessor,
    stats: (): ExportStats => ({ ...stats }),
    /** After shutdown (or its deadline): whatever is still pending will never be delivered. */
    finalize(): void {
      if (final) return;
      closed = true;
      if (pending > 0) {
        stats.dropped += pending;
        options.onTrouble('dropped', pending);
      }
      pending = 0;
      final = true;
    },
  };
}
