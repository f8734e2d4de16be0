// The destination sidecar's own settings for its app (docs/proxy.md, "Inbound"): a bound on the
// wait for the app's answer (`local_request_timeout_ms`) over HTTP/1.1 and HTTP/2, and a limit on
// the connections its port holds (`max_inbound_connections`). Real sidecars, real mTLS.
import t, { type Test } from 'tap';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { request, startEchoApp, startH2Pair, startTwoSidecars, type Sidecar } from './mesh.ts';

/**
 * A port whose connects never complete: a child process listens with a backlog of 1 and then
 * blocks its event loop, so nothing is accepted; once the queue holds what the kernel lets it,
 * the next SYN goes unanswered.
 */
async function unansweredPort(t: Test): Promise<number> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s = require('node:net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () =>
        process.stdout.write(s.address().port + '\\n', () =>
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000)));`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const fill: net.Socket[] = [];
  t.teardown(() => {
    for (const s of fill) s.destroy();
    child.kill('SIGKILL');
  });
  const [line] = (await once(child.stdout, 'data')) as [Buffer];
  const port = Number(line.toString().trim());
  for (let i = 0; i < 8; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    fill.push(s);
    const connected = await Promise.race([
      once(s, 'connect').then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 300)),
    ]);
    if (!connected) return port;
  }
  throw new Error(`port ${port} kept accepting connections`);
}

/** A new snapshot of `sc` with `inbound` fields changed, as the agent sends one. */
function withInbound(sc: Sidecar, fields: Record<string, number | undefined>) {
  return sc.apply({
    ...sc.snapshot,
    version: sc.snapshot.version + 1,
    inbound: { ...sc.snapshot.inbound, ...fields },
  });
}

t.test('local_request_timeout_ms bounds the wait for the app over HTTP/1.1', async (t) => {
  const app = await startEchoApp('api', (_req, res) => {
    setTimeout(() => res.writeHead(200).end('late'), 400);
  });
  const m = await startTwoSidecars({ app });
  t.teardown(() => m.close());
  await withInbound(m.api, { localRequestTimeoutMs: 100 });
  // a POST: the caller's sidecar does not retry it, so the app is called once
  const r = await request(m.url('/slow'), { method: 'POST', body: 'x' });
  t.same(
    [r.status, r.headers['x-remora-error']],
    [504, 'REMORA_E_PROXY_REQUEST_TIMEOUT'],
    "the destination's sidecar answers 504 with the code",
  );
  t.match(r.body, /local app 127\.0\.0\.1:\d+ sent no response within 100 ms/);
  await withInbound(m.api, { localRequestTimeoutMs: undefined });
  const ok = await request(m.url('/slow'), { method: 'POST', body: 'x' });
  t.same([ok.status, ok.body], [200, 'late'], 'without it the app takes its time');
});

t.test('local_request_timeout_ms bounds the wait for the app over HTTP/2', async (t) => {
  const m = await startH2Pair((stream) => {
    stream.resume();
    setTimeout(() => {
      if (!stream.destroyed) stream.respond({ ':status': 200 }, { endStream: false });
      if (!stream.destroyed) stream.end('late');
    }, 400);
  });
  t.teardown(() => m.close());
  await withInbound(m.api, { localRequestTimeoutMs: 100 });
  const client = http2.connect(`http://127.0.0.1:${m.port}`);
  client.on('error', () => {});
  t.teardown(() => client.close());
  const call = () =>
    new Promise<{ status: number; code: string | undefined }>((resolve, reject) => {
      const req = client.request({ ':method': 'POST', ':path': '/slow' });
      req.on('response', (h) =>
        resolve({ status: Number(h[':status']), code: h['x-remora-error'] as string | undefined }),
      );
      req.on('error', reject);
      req.resume();
      req.end('x');
    });
  t.same(await call(), { status: 504, code: 'REMORA_E_PROXY_REQUEST_TIMEOUT' });
  await withInbound(m.api, { localRequestTimeoutMs: 0 });
  t.same(await call(), { status: 200, code: undefined }, '0 sets no bound');
});

t.test(
  'local_connect_timeout_ms bounds the connect to the app over HTTP/1.1 and HTTP/2',
  async (t) => {
    const port = await unansweredPort(t);
    for (const protocol of ['http', 'http2'] as const) {
      const m = await startTwoSidecars({ protocol, app: await startEchoApp() });
      t.teardown(() => m.close());
      await withInbound(m.api, { localAppPort: port, localConnectTimeoutMs: 200 });
      let got: { status: number; code: unknown; body: string };
      if (protocol === 'http') {
        const r = await request(m.url('/x'), { method: 'POST', body: 'x' });
        got = { status: r.status, code: r.headers['x-remora-error'], body: r.body };
      } else {
        const client = http2.connect(`http://127.0.0.1:${m.port}`);
        client.on('error', () => {});
        t.teardown(() => client.close());
        got = await new Promise((resolve, reject) => {
          const req = client.request({ ':method': 'POST', ':path': '/x' });
          let body = '';
          let head: http2.IncomingHttpHeaders = {};
          req.on('response', (h) => (head = h));
          req.on('data', (d: Buffer) => (body += d.toString()));
          req.on('end', () =>
            resolve({ status: Number(head[':status']), code: head['x-remora-error'], body }),
          );
          req.on('error', reject);
          req.end('x');
        });
      }
      t.same(
        [got.status, got.code],
        [502, 'REMORA_E_PROXY_APP_UNAVAILABLE'],
        `${protocol}: 502 with the code`,
      );
      t.match(
        got.body,
        /took longer than 200 ms/,
        `${protocol}: the reason names the timeout set, not the 5 s default`,
      );
    }
  },
);

t.test('max_inbound_connections closes the connections past it as they arrive', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  await withInbound(m.api, { maxInboundConnections: 1 });
  const leaf = m.mesh.cachedLeaf('web');
  const open = (): Promise<'open' | 'closed'> =>
    new Promise((resolve) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port: m.api.inboundPort,
        ca: [m.mesh.ca.certPem],
        cert: leaf.certPem,
        key: leaf.keyPem,
        ALPNProtocols: ['http/1.1'],
        checkServerIdentity: () => undefined,
      });
      s.on('error', () => {});
      s.once('secureConnect', () => {
        held.push(s);
        resolve('open');
      });
      s.once('close', () => resolve('closed'));
    });
  const held: tls.TLSSocket[] = [];
  t.teardown(() => held.forEach((s) => s.destroy()));
  t.equal(await open(), 'open', 'the first connection is taken');
  t.equal(await open(), 'closed', 'the second is closed on arrival');
  t.match(
    await m.api.proxy.metrics.registry.metrics(),
    /remora_proxy_inbound_connections_limited_total 1\n/,
    'and counted',
  );
  held.shift()!.destroy();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(await open(), 'open', 'a place freed is taken again');
  await withInbound(m.api, { maxInboundConnections: 0 });
  t.equal(await open(), 'open', '0 removes the limit');
});
