#!/usr/bin/env node
// Demo TCP `echo` app: writes back every byte it receives. Dependency-free.
//   PORT=7000 node examples/apps/echo.js
import { createServer } from 'node:net';

const port = Number(process.env.PORT ?? 7000);
const server = createServer((sock) => {
  sock.on('error', () => sock.destroy());
  sock.pipe(sock);
});
server.listen(port, process.env.HOST ?? '127.0.0.1', () => {
  console.log(`echo listening on ${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
