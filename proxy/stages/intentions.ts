// Per-request (L7) intention enforcement on inbound HTTP. The connection-level decision is made
// once per connection (ctx.l4); only L7 intentions evaluate each request's method, path and headers.
import { RemoraError } from '../../lib/errors/index.ts';
import { evaluateIntentions } from '../../lib/intentions/index.ts';
import type { IntentionsSnapshot } from '../../lib/intentions/index.ts';
import type { JwtProvider } from '../../lib/jwt/index.ts';
import { headersRecord } from '../http/h1-parse.ts';
import { changeH1Headers, createRequestJwt, jwtDenialError } from './jwt.ts';
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

const NO_PROVIDERS: readonly JwtProvider[] = Object.freeze([]);

/**
 * L7 intentions per request; a request an intention's JWT requirement decided is answered 401
 * (REMORA_E_PROXY_JWT_MISSING / _INVALID) when denied, and loses or gains the headers its
 * providers say when allowed.
 */
export function createIntentionsStage(o: {
  intentions: () => IntentionsSnapshot;
  onDenied: (layer: 'l4' | 'l7', enforced: boolean) => void;
  jwtProviders?: () => readonly JwtProvider[] | undefined;
  now?: () => number;
  onJwtFailure?: (provider: string, reason: string) => void;
}): Stage {
  return (next) => (req) => {
    const ctx = req.ctx;
    const d = ctx.l4;
    if (d === null)
      return Promise.reject(new RemoraError('REMORA_E_INTERNAL', 'no connection decision'));
    if (d.needsRequest) {
      const layer = 'l7';
      const headers = headersRecord(req.headers);
      const jwt = createRequestJwt({
        providers: o.jwtProviders?.() ?? NO_PROVIDERS,
        headers,
        target: req.target,
        nowMs: o.now ? o.now() : Date.now(),
        onFailure: o.onJwtFailure ?? (() => {}),
      });
      const full = evaluateIntentions(o.intentions(), {
        source: ctx.source,
        destination: ctx.destination,
        request: { method: req.method, path: req.target, headers, jwt: jwt.check },
      });
      if (!full.allowed) {
        o.onDenied(layer, full.enforced);
        if (full.enforced)
          return Promise.reject(
            full.jwt
              ? jwtDenialError(ctx.source, ctx.destination, full)
              : denialError(ctx.source, ctx.destination, full),
          );
      }
      const changes = jwt.headerChanges();
      if (changes.remove.length > 0 || changes.add.length > 0)
        req.headers = changeH1Headers(req.headers, changes);
      return next(req);
    }
    if (!d.allowed) {
      o.onDenied('l4', d.enforced);
      if (d.enforced) return Promise.reject(denialError(ctx.source, ctx.destination, d));
    }
    return next(req);
  };
}
