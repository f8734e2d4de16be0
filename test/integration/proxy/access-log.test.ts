// Access logs (docs/proxy.md, "Access logs"): one line per request, stream and TCP connection, on
// both sidecars, written to a file — the proxy's own JSON or a format of Envoy operators; real
// sidecars, real mTLS.
import t, { type Test } from 'tap';
import http2 from 'node:http2';
import net from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../../../lib/util/index.ts';
import type { AccessLogConfig } from '../../../lib/proxy-api/index.ts';
import {
  request,
  startEchoTcp,
  startH2Pair,
  startTwoSidecars,
  type Sidecar,
  type TwoSidecars,
} from './mesh.ts';

function logFile(t: Test, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'remora-access-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, name);
}

async function withLogs(sc: Sidecar, accessLogs: AccessLogConfig | undefined): Promise<void> {
  const { accessLogs: _old, ...rest } = sc.snapshot;
  await sc.apply({
    ...rest,
    version: sc.snapshot.version + 1,
    ...(accessLogs ? { accessLogs } : {}),
  });
}

/** The JSON lines of `path` once there are `n` of them. */
async function lines(path: string, n: number): Promise<Record<string, unknown>[]> {
  const read = () =>
    existsSync(path)
      ? readFileSync(path, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>)
      : [];
  await waitFor(`${n} lines in ${path}`, () => read().length >= n, 5000);
  return read();
}

async function logBoth(t: Test, m: TwoSidecars) {
  const web = logFile(t, 'web.log');
  const api = logFile(t, 'api.log');
  await withLogs(m.web, { type: 'file', path: web });
  await withLogs(m.api, { type: 'file', path: api });
  return { web, api };
}

/** An http2 pair whose app answers every stream with `head` and "ok". */
async function h2Pair(t: Test, head: http2.OutgoingHttpHeaders): Promise<TwoSidecars> {
  const m = await startH2Pair((stream) => {
    stream.resume();
    stream.respond(head);
    stream.end('ok');
  });
  t.teardown(() => m.close());
  return m;
}

/** One h2c stream through `m` (`body` sent when given), read to its end. */
async function h2Call(t: Test, m: TwoSidecars, method: string, path: string, body?: string) {
  const client = http2.connect(`http://127.0.0.1:${m.port}`);
  client.on('error', () => {});
  t.teardown(() => client.close());
  await new Promise<void>((resolve, reject) => {
    const req = client.request({ ':method': method, ':path': path });
    req.on('error', reject);
    if (body !== undefined) req.end(body);
    req.resume();
    req.on('end', () => resolve());
  });
}

/** A tcp pair to an echo app. */
async function tcpPair(t: Test): Promise<TwoSidecars> {
  const app = await startEchoTcp();
  const m = await startTwoSidecars({ protocol: 'tcp', app: { port: app.port } as never });
  t.teardown(async () => {
    await m.close().catch(() => {});
    app.close();
  });
  return m;
}

/** One connection through a tcp pair: "hello" out, the echo back, closed. */
async function tcpHello(m: TwoSidecars): Promise<void> {
  const sock = net.connect(m.port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  sock.write('hello');
  await new Promise((r) => sock.once('data', r));
  sock.end();
  await new Promise((r) => sock.once('close', r));
}

t.test('each HTTP/1.1 request is one line on each side, without its query', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const files = await logBoth(t, m);
  const r = await request(m.url('/v1/things?token=secret'), { method: 'POST', body: 'x' });
  t.equal(r.status, 200);
  const [out] = await lines(files.web, 1);
  t.match(out, {
    log: 'access',
    direction: 'outbound',
    source: 'web',
    destination: 'api',
    protocol: 'HTTP/1.1',
    method: 'POST',
    path: '/v1/things',
    status: 200,
    endpoint: 'api-1',
    retries: 0,
  });
  t.type(out!.durationMs, 'number');
  t.match(out!.time, /^\d{4}-\d\d-\d\dT/);
  const [inb] = await lines(files.api, 1);
  t.match(inb, { direction: 'inbound', source: 'web', destination: 'api', status: 200 });
  for (const f of [files.web, files.api]) {
    t.notMatch(readFileSync(f, 'utf8'), /secret/, 'the query string is not logged');
    t.equal(statSync(f).mode & 0o777, 0o600, 'readable by the proxy user only');
  }

  // switched off by the next snapshot
  await withLogs(m.web, undefined);
  await request(m.url('/again'));
  await lines(files.api, 2);
  t.equal((await lines(files.web, 1)).length, 1, 'no line once switched off');
});

t.test('a denied request is logged with its code on both sides', async (t) => {
  const m = await startTwoSidecars({
    intentions: { intentions: [{ source: 'web', destination: 'api', action: 'deny' }] },
  });
  t.teardown(() => m.close());
  const files = await logBoth(t, m);
  t.equal((await request(m.url('/'))).status, 403);
  t.match((await lines(files.api, 1))[0], {
    direction: 'inbound',
    status: 403,
    error: 'REMORA_E_PROXY_INTENTION_DENIED',
  });
  t.match((await lines(files.web, 1))[0], { direction: 'outbound', status: 403 });
});

t.test('HTTP/2 streams and TCP connections are logged too', async (t) => {
  const h2 = await h2Pair(t, { ':status': 200 });
  const files = await logBoth(t, h2);
  await h2Call(t, h2, 'GET', '/h2/path?q=1');
  t.match((await lines(files.web, 1))[0], {
    direction: 'outbound',
    protocol: 'HTTP/2',
    method: 'GET',
    path: '/h2/path',
    status: 200,
    endpoint: 'api-1',
  });
  t.match((await lines(files.api, 1))[0], {
    direction: 'inbound',
    protocol: 'HTTP/2',
    status: 200,
  });

  const tcp = await tcpPair(t);
  const tfiles = await logBoth(t, tcp);
  await tcpHello(tcp);
  t.match((await lines(tfiles.web, 1))[0], {
    direction: 'outbound',
    protocol: 'tcp',
    source: 'web',
    destination: 'api',
    bytesIn: 5,
    bytesOut: 5,
  });
  t.match((await lines(tfiles.api, 1))[0], {
    direction: 'inbound',
    protocol: 'tcp',
    source: 'web',
    bytesIn: 5,
    bytesOut: 5,
  });
});

t.test('a JSON format and a text format shape the lines of both sides', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const web = logFile(t, 'web.log');
  const api = logFile(t, 'api.log');
  const jsonFormat = JSON.stringify({
    at: '%START_TIME%',
    call: '%REQ(:METHOD)% %REQ(:PATH)%',
    code: '%RESPONSE_CODE%',
    details: '%RESPONSE_CODE_DETAILS%',
    ua: '%REQ(USER-AGENT)%',
    auth: '%REQ(AUTHORIZATION)%',
    type: '%RESP(CONTENT-TYPE)%',
    upstream: { host: '%UPSTREAM_HOST%', cluster: '%UPSTREAM_CLUSTER%' },
    peer: '%DOWNSTREAM_PEER_URI_SAN%',
    from: '%DOWNSTREAM_REMOTE_ADDRESS%',
    received: '%BYTES_RECEIVED%',
    sent: '%BYTES_SENT%',
  });
  await withLogs(m.web, { type: 'file', path: web, jsonFormat });
  await withLogs(m.api, { type: 'file', path: api, jsonFormat });
  const r = await request(m.url('/things?token=secret'), {
    method: 'POST',
    body: 'hello',
    headers: { 'user-agent': 'probe/1', authorization: 'Bearer hunter2' },
  });
  t.equal(r.status, 200);
  const [out] = await lines(web, 1);
  const [inb] = await lines(api, 1);
  const ep = m.web.snapshot.upstreams[0]!.endpoints[0]!;
  t.match(out, {
    at: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    call: 'POST /things',
    code: 200,
    details: 'via_upstream',
    ua: 'probe/1',
    auth: '[redacted]',
    type: r.headers['content-type'],
    upstream: { host: `${ep.address}:${ep.port}`, cluster: 'api' },
    peer: null,
    from: /^127\.0\.0\.1:\d+$/,
    received: 5,
    sent: null, // the echo app streams its answer: its length is not known at its head
  });
  t.match(inb, {
    call: 'POST /things',
    code: 200,
    ua: 'probe/1',
    auth: '[redacted]',
    upstream: { host: `127.0.0.1:${m.api.snapshot.inbound.localAppPort}`, cluster: 'local_app' },
    peer: m.web.snapshot.instance.spiffeId,
  });
  t.same(Object.keys(out!), Object.keys(JSON.parse(jsonFormat)), 'only the fields asked for');
  for (const f of [web, api]) t.notMatch(readFileSync(f, 'utf8'), /secret|hunter2/);

  // a text format, then back to the proxy's own line, each from the next snapshot
  await withLogs(m.web, {
    type: 'file',
    path: web,
    textFormat:
      '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% %REQ(X-NONE)%',
  });
  const denied = await request(m.url('/text'), { method: 'DELETE' });
  t.equal(denied.status, 200);
  await waitFor('the text line', () => readFileSync(web, 'utf8').split('\n').length >= 3, 5000);
  t.match(
    readFileSync(web, 'utf8').split('\n')[1],
    /^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] "DELETE \/text HTTP\/1\.1" 200 -$/,
  );
  await withLogs(m.web, { type: 'file', path: web });
  await request(m.url('/own'));
  await waitFor('the own line', () => readFileSync(web, 'utf8').split('\n').length >= 4, 5000);
  t.match(JSON.parse(readFileSync(web, 'utf8').split('\n')[2]!), { log: 'access', path: '/own' });
});

t.test('a format reads HTTP/2 streams and TCP connections', async (t) => {
  const h2 = await h2Pair(t, { ':status': 202, 'x-app': 'yes' });
  const textFormat =
    '%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %RESPONSE_CODE% %RESP(X-APP)% %UPSTREAM_CLUSTER%';
  const web = logFile(t, 'web.log');
  const api = logFile(t, 'api.log');
  await withLogs(h2.web, { type: 'file', path: web, textFormat });
  await withLogs(h2.api, { type: 'file', path: api, textFormat });
  await h2Call(t, h2, 'PUT', '/h2?q=1', 'x');
  const text = async (f: string) => {
    await waitFor(`a line in ${f}`, () => existsSync(f) && readFileSync(f, 'utf8') !== '', 5000);
    return readFileSync(f, 'utf8');
  };
  t.equal(await text(web), `HTTP/2 PUT /h2 127.0.0.1:${h2.port} 202 yes api\n`);
  t.match(await text(api), /^HTTP\/2 PUT \/h2 \S+ 202 yes local_app\n$/);

  const tcp = await tcpPair(t);
  const tweb = logFile(t, 'tweb.log');
  const tapi = logFile(t, 'tapi.log');
  const tcpFormat = '%PROTOCOL% %BYTES_RECEIVED% %BYTES_SENT% %DOWNSTREAM_PEER_URI_SAN%';
  await withLogs(tcp.web, { type: 'file', path: tweb, textFormat: tcpFormat });
  await withLogs(tcp.api, { type: 'file', path: tapi, textFormat: tcpFormat });
  await tcpHello(tcp);
  t.equal(await text(tweb), '- 5 5 -\n');
  t.equal(await text(tapi), `- 5 5 ${tcp.web.snapshot.instance.spiffeId}\n`);
});

t.test('a file that cannot be written drops lines, counted; traffic is unaffected', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  await withLogs(m.web, { type: 'file', path: '/nonexistent-remora-dir/access.log' });
  for (let i = 0; i < 3; i++) t.equal((await request(m.url(`/${i}`))).status, 200);
  await waitFor(
    'the drops counted',
    async () =>
      /remora_proxy_access_log_dropped_total [1-9]/.test(
        await m.web.proxy.metrics.registry.metrics(),
      ),
    5000,
  );
  t.pass('dropped lines are counted');
});
