import { Counter, type Registry } from 'prom-client';
import type { ExportStats } from './export-guard.ts';

/**
 * `remora_tracing_spans_total{outcome="exported"|"dropped"|"failed"}` on a Prometheus registry,
 * read from a Tracing's counters at scrape time.
 */
export function registerTracingMetrics(
  registry: Registry,
  tracing: { stats(): ExportStats },
): void {
  const spans = new Counter({
    name: 'remora_tracing_spans_total',
    help: 'Finished sampled spans by fate: exported to the collector, dropped (queue full or shut down), failed (collector refused or did not answer).',
    labelNames: ['outcome'] as const,
    registers: [registry],
    collect() {
      const s = tracing.stats();
      this.reset();
      this.inc({ outcome: 'exported' }, s.exported);
      this.inc({ outcome: 'dropped' }, s.dropped);
      this.inc({ outcome: 'failed' }, s.failed);
    },
  });
  void spans;
}
