// Per-request (L7) intention enforcement on inbound HTTP. The connection-level decision is made
// once per connection (ctx.l4); only L7 intentions evaluate each request's method, path and headers.
import { RemoraError } from '../../lib/errors/index.ts';
import { evaluateIntentions } from '../../lib/intentions/index.ts';
import type { IntentionsSnapshot } from '../../lib/intentions/index.ts';
import { headersRecord } from '../http/h1-parse.ts';
import type { ConnectionDecision, Stage } from './types.ts';

export function denialError(
  source: string,
  destination: string,
  d: ConnectionDecision,
): RemoraError {
  return new RemoraError(
    'REMORA_E_PROXY_INTENTION_DENIED',
    `intention denies ${source} → ${destination} (${d.reason}); allow it with: remora intention create ${source} ${destination}`,
    { source, destination, reason: d.reason },
  );
}

export function createIntentionsStage(o: {
  intentions: () => IntentionsSnapshot;
  onDenied: (layer: 'l4' | 'l7', enforced: boolean) => void;
}): Stage {
  return (next) => (req) => {
    const ctx = req.ctx;
    let d = ctx.l4;
    let layer: 'l4' | 'l7' = 'l4';
    if (d === null)
      return Promise.reject(new RemoraError('REMORA_E_INTERNAL', 'no connection decision'));
    if (d.needsRequest) {
      layer = 'l7';
      d = evaluateIntentions(o.intentions(), {
        source: ctx.source,
        destination: ctx.destination,
        request: { method: req.method, path: req.target, headers: headersRecord(req.headers) },
      });
    }
    if (!d.allowed) {
      o.onDenied(layer, d.enforced);
      if (d.enforced) return Promise.reject(denialError(ctx.source, ctx.destination, d));
    }
    return next(req);
  };
}
