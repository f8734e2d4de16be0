import { performance } from 'node:perf_hooks';
import type { RequestMeter } from '../admin/metrics.ts';
import type { Stage } from './types.ts';

/** Counts each answer and records its latency (request head in → response head out). */
export function createMetricsStage(meter: () => RequestMeter): Stage {
  return (next) => async (req) => {
    const start = performance.now();
    const res = await next(req);
    meter().observe(res.status, performance.now() - start);
    return res;
  };
}
