import type { Stage } from './types.ts';

/** Header the inbound proxy sets to tell the app who called (Envoy's XFCC, URI element only). */
export const CLIENT_CERT_HEADER = 'x-forwarded-client-cert';

/**
 * Replaces any client-supplied `x-forwarded-client-cert` with the verified peer identity, so the
 * local app can trust it; with `sanitize()` true (the mesh entry's
 * `HTTP.SanitizeXForwardedClientCert`) the app gets none at all.
 */
export function createPeerIdentityStage(self: () => string, sanitize: () => boolean): Stage {
  // the value is the same for every request of a peer: built again only when an ID changes
  let lastSelf = '';
  let lastPeer = '';
  let lastValue = '';
  const value = (peer: string): string => {
    const me = self();
    if (me !== lastSelf || peer !== lastPeer) {
      lastSelf = me;
      lastPeer = peer;
      lastValue = `By=${me};URI=${peer}`;
    }
    return lastValue;
  };
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
    if (req.ctx.peerSpiffeId !== null && !sanitize())
      h.push(CLIENT_CERT_HEADER, value(req.ctx.peerSpiffeId));
    return next(req);
  };
}
