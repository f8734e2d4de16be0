// The HTTP/1.1 server's keep-alive idle timeout as a client sees it: a quiet connection is closed
// after idleTimeoutMs; a connection in use is not, however long it lives. And a drain: an idle
// connection is closed a moment later, not under a request its client is sending.
import t from 'tap';
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import {
  DRAIN_IDLE_LINGER_MS,
  serveH1,
  type H1ServerConnection,
} from '../../../proxy/http/h1-server.ts';
import { DEFAULT_HEAD_LIMITS } from '../../../proxy/http/h1-parse.ts';
import type { RequestContext } from '../../../proxy/stages/types.ts';

const IDLE_MS = 400;

async function server(): Promise<{
  port: number;
  conns: H1ServerConnection[];
  close: () => void;
}> {
  const sockets = new Set<Socket>();
  const conns: H1ServerConnection[] = [];
  const srv = createServer((s) => {
    sockets.add(s);
    const c = serveH1(s, {
      handler: async () => ({
        status: 200,
        reason: 'OK',
        headers: [],
        body: Buffer.from('ok'),
        bodyLength: 2,
      }),
      limits: DEFAULT_HEAD_LIMITS,
      headerTimeoutMs: 5000,
      idleTimeoutMs: IDLE_MS,
      newContext: () => ({ aborted: false }) as RequestContext,
      onRefused: () => {},
    });
    conns.push(c);
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return {
    port: (srv.address() as { port: number }).port,
    conns,
    close: () => {
      for (const s of sockets) s.destroy();
      srv.close();
    },
  };
}

async function exchange(s: Socket): Promise<void> {
  const got = once(s, 'data');
  s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  const [chunk] = (await got) as [Buffer];
  if (!chunk.toString('latin1').startsWith('HTTP/1.1 200')) throw new Error('no 200');
}

t.test('a keep-alive connection left idle is closed after the idle timeout', async (t) => {
  const srv = await server();
  t.teardown(srv.close);
  const s = connect(srv.port, '127.0.0.1');
  await once(s, 'connect');
  await exchange(s);
  const idleFrom = performance.now();
  await once(s, 'close');
  const after = performance.now() - idleFrom;
  t.ok(after >= IDLE_MS - 20, `closed ${Math.round(after)} ms after the last answer`);
  t.ok(after < IDLE_MS + 1000);
});

t.test('a connection used more often than the idle timeout stays open past it', async (t) => {
  const srv = await server();
  t.teardown(srv.close);
  const s = connect(srv.port, '127.0.0.1');
  await once(s, 'connect');
  let closed = false;
  s.once('close', () => (closed = true));
  const start = performance.now();
  let lastAnswer = start;
  while (performance.now() - start < IDLE_MS * 3) {
    await exchange(s);
    lastAnswer = performance.now();
    await new Promise((ok) => setTimeout(ok, IDLE_MS / 4));
  }
  t.notOk(closed, `still open after ${Math.round(performance.now() - start)} ms of use`);
  await once(s, 'close');
  const after = performance.now() - lastAnswer;
  t.ok(after >= IDLE_MS - 20, `then closed ${Math.round(after)} ms after its last answer`);
});

t.test('a drain answers a request sent on an idle connection, then closes it', async (t) => {
  const srv = await server();
  t.teardown(srv.close);
  const s = connect(srv.port, '127.0.0.1');
  await once(s, 'connect');
  await exchange(s);
  let closed = false;
  s.once('close', () => (closed = true));
  srv.conns[0]!.drain();
  await new Promise((ok) => setTimeout(ok, DRAIN_IDLE_LINGER_MS / 5));
  t.notOk(closed, 'an idle connection stays open for a moment after the drain');
  const got = once(s, 'data');
  s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  const head = ((await got) as [Buffer])[0].toString('latin1');
  t.match(head, /^HTTP\/1\.1 200/, 'the request sent meanwhile is answered');
  t.match(head, /\r\nconnection: close\r\n/i, 'and told the connection ends');
  await once(s, 'close');
});

t.test('a drain closes a connection left idle after the linger', async (t) => {
  const srv = await server();
  t.teardown(srv.close);
  const s = connect(srv.port, '127.0.0.1');
  await once(s, 'connect');
  await exchange(s);
  const from = performance.now();
  srv.conns[0]!.drain();
  await once(s, 'close');
  const after = performance.now() - from;
  t.ok(after >= DRAIN_IDLE_LINGER_MS - 20, `closed ${Math.round(after)} ms after the drain`);
  t.ok(after < DRAIN_IDLE_LINGER_MS + 1000, 'and soon after it');
});
