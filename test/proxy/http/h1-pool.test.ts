// The keep-alive pool against a real TCP server whose second request on a connection is read and
// then answered with a reset — what a crashed app or a killed proxy looks like. A GET is replayed
// once on a fresh connection; a POST is not (the server may already have acted on it).
import t from 'tap';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { H1Pool } from '../../../proxy/http/h1-client.ts';
import { DEFAULT_HEAD_LIMITS } from '../../../proxy/http/h1-parse.ts';
import type { ProxyRequest } from '../../../proxy/stages/types.ts';
import { proxyRequest } from '../../helpers/proxy-request.ts';
import type { RemoraError } from '../../../lib/errors/index.ts';

function req(method: string, id: string): ProxyRequest {
  const body = method === 'POST' ? Buffer.from(`{"id":"${id}"}`) : null;
  return proxyRequest({ method, target: `/orders?id=${id}`, host: 'app', body });
}

/**
 * Answers the first request on every connection with 200 keep-alive; any later request on that
 * connection is recorded and then the socket is reset without an answer.
 */
async function crashingServer(): Promise<{ server: Server; port: number; received: string[] }> {
  const received: string[] = [];
  const server = createServer((s: Socket) => {
    let n = 0;
    let buf = '';
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        buf = buf.slice(end + 4 + len);
        received.push(head.split('\r\n')[0]!);
        if (n++ === 0) {
          s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
        } else {
          s.resetAndDestroy();
          return;
        }
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port, received };
}

async function pool(port: number): Promise<H1Pool> {
  return new H1Pool({
    target: `app (127.0.0.1:${port})`,
    limits: DEFAULT_HEAD_LIMITS,
    idleTimeoutMs: 10_000,
    dial: async () => {
      const s = connect(port, '127.0.0.1');
      await once(s, 'connect');
      return s;
    },
  });
}

async function drain(p: H1Pool, r: ProxyRequest): Promise<number> {
  const res = await p.request(r, 5000);
  if (res.body !== null && !Buffer.isBuffer(res.body)) await res.body.collect(1 << 20);
  // the pool takes the connection back on the next tick
  await new Promise((ok) => setImmediate(ok));
  return res.status;
}

t.test('a GET reset on a reused connection is replayed once on a fresh one', async (t) => {
  const { server, port, received } = await crashingServer();
  t.teardown(() => server.close());
  const p = await pool(port);
  t.teardown(() => p.close());
  t.equal(await drain(p, req('GET', 'a')), 200);
  t.equal(p.idleCount, 1, 'the first connection went back to the pool');
  t.equal(await drain(p, req('GET', 'b')), 200, 'the replay on a fresh connection answered');
  t.same(
    received.filter((l) => l.includes('id=b')),
    ['GET /orders?id=b HTTP/1.1', 'GET /orders?id=b HTTP/1.1'],
    'the GET reached the server twice: the reset attempt and the replay',
  );
});

t.test('a POST reset on a reused connection fails and is never sent again', async (t) => {
  const { server, port, received } = await crashingServer();
  t.teardown(() => server.close());
  const p = await pool(port);
  t.teardown(() => p.close());
  t.equal(await drain(p, req('POST', 'a')), 200);
  t.equal(p.idleCount, 1, 'the first connection went back to the pool');
  const err = await p.request(req('POST', 'b'), 5000).then(
    () => null,
    (e: unknown) => e as RemoraError,
  );
  t.equal(err?.code, 'REMORA_E_PROXY_UPSTREAM_RESET', 'the caller gets a coded reset');
  // give a wrongly replayed request time to arrive before counting
  await new Promise((ok) => setTimeout(ok, 100));
  t.same(
    received.filter((l) => l.includes('id=b')),
    ['POST /orders?id=b HTTP/1.1'],
    'the POST reached the server exactly once',
  );
});

/** Answers the first request on every connection at once; later ones never (a hung upstream). */
async function hangingServer(): Promise<{ server: Server; port: number }> {
  const server = createServer((s: Socket) => {
    let n = 0;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      if (d.includes('\r\n\r\n') && n++ === 0)
        s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port };
}

t.test('the response timeout counts from each request, also on a reused connection', async (t) => {
  const { server, port } = await hangingServer();
  t.teardown(() => server.close());
  const p = await pool(port);
  t.teardown(() => p.close());
  const timeoutMs = 400;
  const first = await p.request(req('GET', 'a'), timeoutMs);
  t.equal(first.status, 200);
  await new Promise((ok) => setTimeout(ok, 250)); // the connection's timer is already running
  const sent = performance.now();
  const err = (await p.request(req('GET', 'b'), timeoutMs).catch((e: unknown) => e)) as RemoraError;
  const waited = performance.now() - sent;
  t.equal(err.code, 'REMORA_E_PROXY_REQUEST_TIMEOUT');
  t.ok(
    waited >= timeoutMs - 20,
    `timed out after ${Math.round(waited)} ms, not before ${timeoutMs}`,
  );
  t.ok(waited < timeoutMs + 1000, `and not much later (${Math.round(waited)} ms)`);
});
