// The tracing seam: a stage that costs one property check while tracing is off, and loads the
// OpenTelemetry stage (stages/tracing.ts) only once a snapshot names an OTLP endpoint.
import type { Logger } from '../lib/log/index.ts';
import { logError } from '../lib/log/index.ts';
import type { InstanceIdentity, TracingConfig } from '../lib/proxy-api/index.ts';
import type { Stage } from './stages/types.ts';
import type { TracingImpl } from './stages/tracing.ts';

export interface TracingSeam {
  stage(kind: 'server' | 'client', peer: string): Stage;
  configure(cfg: TracingConfig, instance: InstanceIdentity): Promise<void>;
  shutdown(): Promise<void>;
  readonly enabled: boolean;
}

export function createTracingSeam(logger: Logger): TracingSeam {
  let impl: TracingImpl | null = null;
  let key = '';
  return {
    stage(kind, peer) {
      return (next) => (req) => (impl === null ? next(req) : impl.run(kind, peer, req, next));
    },
    async configure(cfg, instance) {
      const k = JSON.stringify([cfg, instance.service, instance.id]);
      if (k === key) return;
      key = k;
      const old = impl;
      impl = null;
      if (old) void old.shutdown();
      if (cfg.endpoint === '') return;
      try {
        const mod = await import('./stages/tracing.ts');
        impl = mod.createTracingImpl(cfg, instance, logger);
      } catch (err) {
        logError(logger, err, 'tracing disabled', 'warn');
      }
    },
    async shutdown() {
      const old = impl;
      impl = null;
      await old?.shutdown();
    },
    get enabled() {
      return impl !== null;
    },
  };
}
