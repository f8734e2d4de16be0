#!/usr/bin/env node
// Demo `api` app: answers every HTTP request with its instance ID and the peer identity its
// proxy passed in `x-remora-peer-id`. Dependency-free.
//   PORT=8081 INSTANCE_ID=api-1 node examples/apps/api.js
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8081);
const instance = process.env.INSTANCE_ID ?? 'api';

const server = createServer((req, res) => {
  const body = JSON.stringify({
    service: 'api',
    instance,
    path: req.url,
    peer: req.headers['x-remora-peer-id'] ?? null,
  });
  res.writeHead(200, { 'content-type': 'application/json' }).end(`${body}\n`);
});
server.listen(port, process.env.HOST ?? '127.0.0.1', () => {
  console.log(`api ${instance} listening on ${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
