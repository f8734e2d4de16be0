// A test app for the fault scenarios: answers every request with its instance and the request's
// `x-request-id`, and writes one line `RECV <instance> <method> <id>` to stdout when a request
// arrives (stdout to a pipe is synchronous on Linux, so a SIGKILL loses no line). The test reads
// those lines to count exactly how often each request reached an app.
//   PORT=0 INSTANCE_ID=api-1 node test/faults/recorder-app.ts
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 0);
const instance = process.env.INSTANCE_ID ?? 'api';

const server = createServer((req, res) => {
  const id = String(req.headers['x-request-id'] ?? '-');
  process.stdout.write(`RECV ${instance} ${req.method ?? '?'} ${id}\n`);
  let size = 0;
  req.on('data', (d: Buffer) => (size += d.length));
  req.on('end', () => {
    const body = JSON.stringify({ instance, id, method: req.method, size });
    res.writeHead(200, { 'content-type': 'application/json' }).end(`${body}\n`);
  });
});
server.keepAliveTimeout = 30_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${instance} ${port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
