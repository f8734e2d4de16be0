// The demo application of the compose and Vagrant environments and of the lab test: a plain
// HTTP service that knows nothing about the mesh. It answers with its service and instance name
// and, when UPSTREAM_URL is set, with the answer of its upstream, which it calls through the
// local proxy listener (e.g. http://127.0.0.1:9091/), and with the caller's SPIFFE ID as its
// proxy reports it (`peer`). The W3C trace context of the incoming
// request is forwarded, so one trace covers web -> proxy -> proxy -> api.
//
//   SERVICE=api INSTANCE=api-1 PORT=9090 node compose/apps/demo-http.js
//   SERVICE=web INSTANCE=web-1 PORT=8080 UPSTREAM_URL=http://127.0.0.1:9091/ node compose/apps/demo-http.js
import { createServer, request } from 'node:http';
import { hostname } from 'node:os';

const service = process.env.SERVICE ?? 'demo';
const instance = process.env.INSTANCE ?? service;
const port = Number(process.env.PORT ?? 8080);
const host = process.env.LISTEN_HOST ?? '127.0.0.1';
const upstreamUrl = process.env.UPSTREAM_URL ?? '';
const TRACE_HEADERS = [
  'traceparent',
  'tracestate',
  'b3',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-sampled',
];

/**
 * The caller's identity as the local proxy vouches for it: the `URI=` element of the
 * x-forwarded-client-cert header the inbound proxy sets (Envoy's format), or null when the
 * request did not come through the mesh.
 */
function peerOf(req) {
  const xfcc = req.headers['x-forwarded-client-cert'];
  const m = typeof xfcc === 'string' ? /(?:^|;)URI=([^;,]+)/.exec(xfcc) : null;
  return m ? m[1] : (req.headers['x-remora-peer-id'] ?? null);
}

function callUpstream(incoming) {
  return new Promise((resolve) => {
    const headers = {};
    for (const h of TRACE_HEADERS) if (incoming.headers[h]) headers[h] = incoming.headers[h];
    const req = request(upstreamUrl, { headers, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        let parsed = body;
        try {
          parsed = JSON.parse(body);
        } catch {
          /* not JSON: an error page of the proxy, keep the text */
        }
        resolve({
          status: res.statusCode,
          error: res.headers['x-remora-error'],
          body: parsed,
        });
      });
    });
    req.on('timeout', () => req.destroy(new Error('upstream timed out after 5000 ms')));
    req.on('error', (err) => resolve({ status: 0, error: err.message }));
    req.end();
  });
}

const server = createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  void (async () => {
    const answer = { service, instance, host: hostname(), path: req.url, peer: peerOf(req) };
    let status = 200;
    if (upstreamUrl) {
      answer.upstream = await callUpstream(req);
      if (answer.upstream.status !== 200) status = 502;
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(`${JSON.stringify(answer)}\n`);
  })();
});

server.listen(port, host, () => {
  process.stdout.write(`${instance} (${service}) listening on ${host}:${port}\n`);
});
// Stop on SIGTERM/SIGINT: refuse new connections, end idle keep-alive ones, let Node exit.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeIdleConnections();
  });
}
