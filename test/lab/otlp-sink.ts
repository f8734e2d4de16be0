// An OTLP/HTTP trace receiver for the lab, run as a process inside the server host's namespace so
// that every host can reach it: listens on <host>:<port>, decodes JSON exports with the telemetry
// test helper's decoder, and writes one JSON line per span on stdout.
//   node test/lab/otlp-sink.ts 10.213.0.11:4318
import http from 'node:http';
import { decodeOtlpJson } from '../helpers/otlp-receiver.ts';

const [host, port] = (process.argv[2] ?? '0.0.0.0:4318').split(':');

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/v1/traces') {
    res.writeHead(404).end();
    return;
  }
  if (!String(req.headers['content-type'] ?? '').includes('json')) {
    res.writeHead(415).end();
    return;
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => (body += d));
  req.on('end', () => {
    try {
      for (const s of decodeOtlpJson(JSON.parse(body) as never)) {
        const line = {
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId,
          name: s.name,
          kind: s.kind,
          service: s.resource['service.name'],
          instance: s.resource['service.instance.id'],
          attributes: s.attributes,
        };
        process.stdout.write(`${JSON.stringify(line)}\n`);
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    } catch (err) {
      res.writeHead(400).end(String(err));
    }
  });
});
server.listen(Number(port), host, () =>
  process.stderr.write(`otlp sink listening on ${host}:${port}\n`),
);
process.on('SIGTERM', () => server.close());
