import type { Stage } from './types.ts';

/** Header the inbound proxy sets to tell the app who called (Envoy's XFCC, URI element only). */
export const CLIENT_CERT_HEADER = 'x-forwarded-client-cert';

/**
 * Replaces any client-supplied `x-forwarded-client-cert` with the verified peer identity, so the
 * local app can trust it.
 */
export function createPeerIdentityStage(self: () => string): Stage {
  return (next) => (req) => {
    const h = req.headers;
    for (let i = 0; i < h.length; i += 2) {
      if (
        h[i]!.length === CLIENT_CERT_HEADER.length &&
        h[i]!.toLowerCase() === CLIENT_CERT_HEADER
      ) {
        h.splice(i, 2);
        i -= 2;
      }
    }
    if (req.ctx.peerSpiffeId !== null)
      h.push(CLIENT_CERT_HEADER, `By=${self()};URI=${req.ctx.peerSpiffeId}`);
    return next(req);
  };
}
