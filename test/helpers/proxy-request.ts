// A request as the proxy's stages see it, for tests that call a handler or a pool directly.
import { newRequestContext, type ProxyRequest } from '../../proxy/stages/types.ts';

export function proxyRequest(o: {
  method: string;
  target?: string;
  host: string;
  body?: Buffer | null;
  source?: string;
  destination?: string;
}): ProxyRequest {
  const body = o.body ?? null;
  return {
    method: o.method,
    target: o.target ?? '/',
    host: o.host,
    versionMinor: 1,
    headers: ['host', o.host],
    body,
    bodyLength: body ? body.length : 0,
    upgrade: null,
    ctx: newRequestContext('inbound', o.source ?? 'web', o.destination ?? 'api'),
  };
}
