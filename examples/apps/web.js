#!/usr/bin/env node
// Demo `web` app: for each request it calls `api` through its local proxy listener and answers
// with which api instance answered and the identities each side's proxy verified (`api.peer`:
// web's identity as api's proxy saw it; `api.self`: api's identity, which web's proxy checked).
// A refusal from the mesh (403, 5xx with `x-remora-error`) is passed on with its status. GET /echo?msg=hi sends a line through the TCP `echo`
// upstream. Dependency-free.
//   PORT=8080 API_URL=http://127.0.0.1:9191 ECHO_ADDR=127.0.0.1:9292 node examples/apps/web.js
import { createServer, request } from 'node:http';
import { connect } from 'node:net';

const port = Number(process.env.PORT ?? 8080);
const instance = process.env.INSTANCE_ID ?? 'web';
const apiUrl = new URL(process.env.API_URL ?? 'http://127.0.0.1:9191');
const [echoHost, echoPort] = (process.env.ECHO_ADDR ?? '127.0.0.1:9292').split(':');

function callApi(path, headers) {
  return new Promise((resolve) => {
    const req = request(
      { host: apiUrl.hostname, port: apiUrl.port, path, method: 'GET', headers, timeout: 5000 },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (data += d));
        res.on('end', () => {
          let body;
          try {
            body = JSON.parse(data);
          } catch {
            body = data;
          }
          resolve({ status: res.statusCode, error: res.headers['x-remora-error'] ?? null, body });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 502, error: err.message, body: null }));
    req.end();
  });
}

function callEcho(msg) {
  return new Promise((resolve) => {
    const sock = connect(Number(echoPort), echoHost);
    let got = '';
    sock.setTimeout(5000, () => sock.destroy(new Error('timeout')));
    sock.on('connect', () => sock.write(`${msg}\n`));
    sock.on('data', (d) => {
      got += d.toString();
      if (got.includes('\n')) sock.end();
    });
    sock.on('close', () => resolve({ echoed: got.trim() }));
    sock.on('error', (err) => resolve({ error: err.message }));
  });
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://web');
  const xfcc = req.headers['x-forwarded-client-cert'];
  const peer = typeof xfcc === 'string' ? (/(?:^|;)URI=([^;,]+)/.exec(xfcc)?.[1] ?? null) : null;
  let out;
  if (url.pathname === '/echo') {
    out = { service: 'web', instance, echo: await callEcho(url.searchParams.get('msg') ?? 'ping') };
  } else {
    // pass the trace context on so one trace shows web → api
    const headers = {};
    for (const h of ['traceparent', 'tracestate']) if (req.headers[h]) headers[h] = req.headers[h];
    const api = await callApi(url.pathname + url.search, headers);
    out = {
      service: 'web',
      instance,
      peer,
      api: api.body,
      apiStatus: api.status,
      apiError: api.error,
    };
  }
  // pass refusals on (403 from an intention, 429/503 from a breaker…); other failures are 502
  const status =
    !out.apiStatus || out.apiStatus < 400 ? 200 : out.apiStatus < 500 ? out.apiStatus : 502;
  res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(out)}\n`);
});
server.listen(port, process.env.HOST ?? '127.0.0.1', () => {
  console.log(`web ${instance} listening on ${port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGINT', () => server.close(() => process.exit(0)));
