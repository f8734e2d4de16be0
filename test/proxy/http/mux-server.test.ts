// remora-mux/1, server half, on a raw socket: answers in the order they are ready, tagged with
// their stream; a peer that breaks the protocol loses its connection and the refusal is counted.
import t, { type Test } from 'tap';
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { serveMux } from '../../../proxy/http/mux-server.ts';
import { DEFAULT_HEAD_LIMITS } from '../../../proxy/http/h1-parse.ts';
import type { ProxyRequest, RequestContext } from '../../../proxy/stages/types.ts';

async function muxServer(
  t: Test,
  handler?: (req: ProxyRequest) => Promise<void>,
  bounds = { maxBodyBytes: 1024, maxConcurrent: 16 },
): Promise<{ port: number; refused: string[]; seen: ProxyRequest[] }> {
  const refused: string[] = [];
  const seen: ProxyRequest[] = [];
  const sockets = new Set<Socket>();
  const srv = createServer((s) => {
    sockets.add(s);
    serveMux(s, {
      handler: async (req) => {
        seen.push(req);
        if (handler) await handler(req);
        const wait = Number(/wait=(\d+)/.exec(req.target)?.[1] ?? 0);
        await new Promise((r) => setTimeout(r, wait));
        const body = Buffer.from(`${req.method} ${req.target}`);
        return { status: 200, reason: 'OK', headers: [], body, bodyLength: body.length };
      },
      limits: DEFAULT_HEAD_LIMITS,
      ...bounds,
      idleTimeoutMs: 5000,
      newContext: () => ({ aborted: false }) as RequestContext,
      onRefused: (_status, reason) => refused.push(reason),
    });
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return { port: (srv.address() as { port: number }).port, refused, seen };
}

/** Writes `text`, collects what comes back until `until` matches or the peer closes. */
function exchange(
  port: number,
  text: string,
  until?: RegExp,
): Promise<{ out: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (c: Buffer) => {
      out += c.toString('latin1');
      if (until?.test(out)) {
        s.destroy();
        resolve({ out, closed: false });
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve({ out, closed: true }));
    s.write(text);
  });
}

t.test('answers come as they are ready, each tagged with its stream', async (t) => {
  const m = await muxServer(t);
  const { out } = await exchange(
    m.port,
    'GET /slow?wait=150 HTTP/1.1\r\nhost: api\r\nremora-stream: 1\r\ncontent-length: 0\r\n\r\n' +
      'POST /fast HTTP/1.1\r\nhost: api\r\nremora-stream: 2\r\ncontent-length: 3\r\n\r\nabc',
    /GET \/slow\?wait=150$/,
  );
  const first = out.indexOf('remora-stream: 2');
  const second = out.indexOf('remora-stream: 1');
  t.ok(first !== -1 && second !== -1, out);
  t.ok(first < second, 'the fast answer (stream 2) comes before the slow one (stream 1)');
  t.match(out, 'POST /fast');
  t.equal((m.seen[1]!.body as Buffer).toString(), 'abc');
  t.notOk(
    m.seen.some((r) => r.headers.some((h) => h.toLowerCase() === 'remora-stream')),
    'the app never sees the stream field',
  );
});

for (const [name, text, reason] of [
  ['no stream field', 'GET / HTTP/1.1\r\nhost: api\r\ncontent-length: 0\r\n\r\n', 'mux_bad_stream'],
  [
    'two stream fields',
    'GET / HTTP/1.1\r\nhost: api\r\nremora-stream: 1\r\nremora-stream: 2\r\n\r\n',
    'mux_bad_stream',
  ],
  [
    'a stream number in use',
    'GET /?wait=300 HTTP/1.1\r\nhost: api\r\nremora-stream: 5\r\n\r\nGET / HTTP/1.1\r\nhost: api\r\nremora-stream: 5\r\n\r\n',
    'mux_bad_stream',
  ],
  [
    'a chunked body',
    'POST / HTTP/1.1\r\nhost: api\r\nremora-stream: 1\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n',
    'mux_unsupported_framing',
  ],
  [
    'a body over the bound',
    'POST / HTTP/1.1\r\nhost: api\r\nremora-stream: 1\r\ncontent-length: 4096\r\n\r\n',
    'mux_body_too_large',
  ],
  [
    'smuggling (Content-Length with Transfer-Encoding)',
    'POST / HTTP/1.1\r\nhost: api\r\nremora-stream: 1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\nabc',
    'content_length_with_te',
  ],
] as const) {
  t.test(`a peer that sends ${name} loses the connection; the refusal is counted`, async (t) => {
    const m = await muxServer(t);
    const r = await exchange(m.port, text);
    t.ok(r.closed, 'connection closed');
    t.notMatch(
      r.out,
      /^HTTP\/1\.1 200/,
      'nothing processed before the violation is answered as if fine',
    );
    t.same(m.refused, [reason]);
    // the server goes on serving other connections
    const ok = await exchange(
      m.port,
      'GET /next HTTP/1.1\r\nhost: api\r\nremora-stream: 1\r\n\r\n',
      /GET \/next$/,
    );
    t.match(ok.out, /^HTTP\/1\.1 200 OK\r\nremora-stream: 1\r\n/);
  });
}

t.test(
  'request bodies held by one connection are bounded: reading pauses, nothing is lost',
  async (t) => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    let inHandler = 0;
    let most = 0;
    const m = await muxServer(
      t,
      async () => {
        inHandler++;
        most = Math.max(most, inHandler);
        await gate;
        inHandler--;
      },
      { maxBodyBytes: 1024 * 1024, maxConcurrent: 256 },
    );
    const body = 'x'.repeat(1024 * 1024);
    let text = '';
    for (let i = 1; i <= 12; i++)
      text += `POST /up/${i} HTTP/1.1\r\nhost: api\r\nremora-stream: ${i}\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    const done = exchange(m.port, text, /(HTTP\/1\.1 200 OK[^]*){12}/);
    // wait until reading has paused: the held requests stop growing
    for (let last = -1, i = 0; i < 50 && (most === 0 || most !== last); i++) {
      last = most;
      await new Promise((r) => setTimeout(r, 200));
    }
    t.ok(
      most >= 8 && most <= 9,
      `at most 8 MiB of bodies held at once (${most} requests of 1 MiB)`,
    );
    release();
    const { out } = await done.catch((e: Error) => {
      throw new Error(`${e.message}; refused: ${JSON.stringify(m.refused)}`);
    });
    for (let i = 1; i <= 12; i++) t.match(out, `POST /up/${i}`);
    t.same(m.refused, []);
  },
);
