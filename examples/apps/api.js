#!/usr/bin/env node
// Demo `api` app: answers every HTTP request with its instance ID and the identities its proxy
// vouches for in `x-forwarded-client-cert` (Envoy's format, set by the inbound proxy): `peer` is
// the caller's SPIFFE ID (URI=…), `self` this service's own (By=…, what the caller's proxy
// verified), and the X-Forwarded-For / X-Forwarded-Proto an ingress gateway adds. Dependency-free.
//   PORT=8081 INSTANCE_ID=api-1 node examples/apps/api.js
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8081);
const instance = process.env.INSTANCE_ID ?? 'api';

/** One element (`URI`, `By`) of the x-forwarded-client-cert header, or null. */
function xfcc(req, key) {
  const h = req.headers['x-forwarded-client-cert'];
  const m = typeof h === 'string' ? new RegExp(`(?:^|;)${key}=([^;,]+)`).exec(h) : null;
  return m ? m[1] : null;
}

const server = createServer((req, res) => {
  const body = JSON.stringify({
    service: 'api',
    instance,
    path: req.url,
    peer: xfcc(req, 'URI'),
    self: xfcc(req, 'By'),
    forwardedFor: req.headers['x-forwarded-for'] ?? null,
    forwardedProto: req.headers['x-forwarded-proto'] ?? null,
  });
  res.writeHead(200, { 'content-type': 'application/json' }).end(`${body}\n`);
});
server.listen(port, process.env.HOST ?? '127.0.0.1', () => {
  console.log(`api ${instance} listening on ${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
