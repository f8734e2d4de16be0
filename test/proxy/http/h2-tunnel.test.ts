// remora-h2/1 (proxy/http/h2-tunnel.ts) between its own two halves over a loopback socket, and
// spoken to frame by frame: heads, bodies and trailers both ways, per-stream flow control, resets,
// drain, and what a peer may not send.
import t, { type Test } from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http2';
import { waitFor } from '../../../lib/util/index.ts';
import type { H2TunnelStream } from '../../../proxy/http/h2-tunnel.ts';
import {
  CANCEL,
  DATA,
  decodeHead,
  H2TunnelClient,
  OPEN,
  REFUSED_STREAM,
  RST,
  serveH2Tunnel,
  STREAM_WINDOW,
  type H2TunnelServerOptions,
} from '../../../proxy/http/h2-tunnel.ts';
import { encodeFrame as frame } from '../../../proxy/tcp/framed.ts';

type OnStream = H2TunnelServerOptions['onStream'];

/** A connected client half and a server half handing streams to `onStream`. */
async function pair(t: Test, onStream: OnStream, o: Partial<H2TunnelServerOptions> = {}) {
  const errors: string[] = [];
  let server: ReturnType<typeof serveH2Tunnel> | null = null;
  const listener = net.createServer((s) => {
    server = serveH2Tunnel(s, {
      onStream,
      maxStreams: 16,
      idleTimeoutMs: 60_000,
      onProtocolError: (what) => errors.push(what),
      ...o,
    });
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const socket = net.connect((listener.address() as AddressInfo).port, '127.0.0.1');
  await once(socket, 'connect');
  let gone = false;
  const client = new H2TunnelClient(socket, () => (gone = true));
  await waitFor('the server half', () => server !== null);
  t.teardown(() => {
    socket.destroy();
    listener.close();
  });
  return {
    client,
    server: server!,
    errors,
    gone: () => gone,
    socket,
    port: (listener.address() as AddressInfo).port,
  };
}

function readAll(s: H2TunnelStream): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (out += d));
    s.on('end', () => resolve(out));
  });
}

t.test(
  'a request and its answer: heads, bodies and trailers both ways, then both sides forget it',
  async (t) => {
    let seen: {
      headers: IncomingHttpHeaders;
      flags: number;
      body: string;
      trailers: unknown;
    } | null = null;
    const { client, server } = await pair(t, (stream, headers, flags) => {
      const trailers: unknown[] = [];
      stream.on('trailers', (x) => trailers.push(x));
      void readAll(stream).then((body) => {
        seen = { headers, flags, body, trailers: trailers[0] };
        stream.respond({ ':status': 200, 'content-type': 'text/plain' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(`echo:${body}`);
      });
    });
    const up = client.request(
      { ':method': 'POST', ':path': '/v1/x', 'x-multi': ['a', 'b'] },
      { waitForTrailers: true },
    );
    up.on('wantTrailers', () => up.sendTrailers({ 'x-checksum': '42' }));
    // listeners before the answer: head, body, trailers and FIN may arrive in one read
    const response = once(up, 'response');
    const trailers = once(up, 'trailers');
    const body = readAll(up);
    up.write('hel');
    up.end('lo');
    const [head, flags] = (await response) as [IncomingHttpHeaders, number];
    t.same(head, { ':status': 200, 'content-type': 'text/plain' });
    t.equal(flags, 0, 'a body follows');
    t.equal(await body, 'echo:hello');
    t.same((await trailers)[0], { 'grpc-status': '0' });
    await waitFor(
      'both sides to forget the stream',
      () => client.load === 0 && server.streams === 0,
    );
    t.same(seen, {
      headers: { ':method': 'POST', ':path': '/v1/x', 'x-multi': ['a', 'b'] },
      flags: 0,
      body: 'hello',
      trailers: { 'x-checksum': '42' },
    });
  },
);

t.test('END_STREAM on a head: a GET without body, a trailers-only answer', async (t) => {
  const flagsSeen: number[] = [];
  const { client, server } = await pair(t, (stream, _h, flags) => {
    flagsSeen.push(flags);
    stream.respond({ ':status': 200, 'grpc-status': '5' }, { endStream: true });
  });
  const up = client.request({ ':method': 'GET', ':path': '/' }, { endStream: true });
  const [head, flags] = (await once(up, 'response')) as [IncomingHttpHeaders, number];
  t.equal(head['grpc-status'], '5');
  t.equal(flags & 1, 1, 'the answer ended with its head');
  await waitFor('the stream closed', () => up.destroyed);
  t.same(flagsSeen, [1], 'the server saw the request end with its head');
  await waitFor('both sides to forget it', () => client.load === 0 && server.streams === 0);
  t.equal(up.rstCode, undefined, 'closed, not reset');
});

t.test('a reader that stops holds back its own stream only', async (t) => {
  const big = Buffer.alloc(4 * STREAM_WINDOW, 'x');
  let bigStream: H2TunnelStream | null = null;
  const { client } = await pair(t, (stream, headers) => {
    stream.respond({ ':status': 200 });
    if (headers[':path'] === '/big') {
      bigStream = stream;
      stream.end(big);
    } else stream.end('small');
  });
  const slow = client.request({ ':path': '/big' }, { endStream: true });
  await once(slow, 'response');
  slow.pause();
  await waitFor(
    'the sender to be held back',
    () => bigStream !== null && bigStream.writableLength > 0,
  );
  const held = bigStream!.writableLength;
  t.ok(
    held >= 2 * STREAM_WINDOW,
    `the server holds what the window does not allow (${held} bytes)`,
  );
  const fast = client.request({ ':path': '/small' }, { endStream: true });
  t.equal(await readAll(fast), 'small', 'another stream of the same connection is answered');
  slow.resume();
  t.equal((await readAll(slow)).length, big.length, 'the held stream completes once read');
});

t.test('resets travel with their code; a draining server refuses new streams', async (t) => {
  const closed: (number | undefined)[] = [];
  const { client, server } = await pair(t, (stream, headers) => {
    stream.on('close', () => closed.push(stream.rstCode));
    if (headers[':path'] === '/refuse') stream.close(REFUSED_STREAM);
  });
  const a = client.request({ ':path': '/hang' });
  await waitFor('the server to have it', () => server.streams === 1);
  a.close(CANCEL);
  await waitFor('the server stream closed', () => closed.length === 1);
  t.same(closed, [CANCEL], 'the server sees the caller cancel');
  const b = client.request({ ':path': '/refuse' }, { endStream: true });
  await waitFor('b closed', () => b.destroyed);
  t.equal(b.rstCode, REFUSED_STREAM, 'the caller sees REFUSED_STREAM (retry elsewhere)');

  server.drain();
  await waitFor('GOAWAY', () => client.retiring);
  t.throws(() => client.request({ ':path': '/late' }), /closing/, 'no new streams here');
});

t.test('a stream opened while GOAWAY was on its way is refused, not processed', async (t) => {
  let processed = 0;
  const { client, server } = await pair(t, () => processed++);
  const first = client.request({ ':path': '/1' });
  await waitFor('stream 1 at the server', () => server.streams === 1);
  server.drain();
  const second = client.request({ ':path': '/2' }); // GOAWAY not read yet
  await waitFor('the second closed', () => second.destroyed);
  t.equal(second.rstCode, REFUSED_STREAM);
  t.equal(processed, 1, 'only the first reached the handler');
  t.notOk(first.destroyed, 'open streams continue through a drain');
  first.close();
});

t.test('a server connection without streams for idleTimeoutMs is ended, not before', async (t) => {
  const { client, gone } = await pair(
    t,
    (stream) => {
      stream.respond({ ':status': 200 }, { endStream: true });
    },
    { idleTimeoutMs: 300 },
  );
  const up = client.request({ ':path': '/' }, { endStream: true });
  await waitFor('the answer', () => up.destroyed);
  const done = Date.now();
  await waitFor('the idle connection ended', gone, 5000);
  t.ok(Date.now() - done >= 250, 'after its idle time');
});

t.test('what a peer may not send closes the connection and is counted', async (t) => {
  const cases: [string, (port: number) => Buffer, RegExp][] = [
    ['a head that is no JSON', () => frame(OPEN, 1, Buffer.from('\x00{nope')), /bad request head/],
    [
      'a header value with CRLF',
      () => frame(OPEN, 1, head({ ':path': '/', 'x-a': 'b\r\nx-evil: 1' })),
      /bad request head/,
    ],
    [
      'DATA beyond the window',
      () =>
        Buffer.concat([
          frame(OPEN, 1, head({ ':path': '/' })),
          frame(DATA, 1, Buffer.alloc(STREAM_WINDOW + 1)),
        ]),
      /DATA beyond what was granted on stream 1/,
    ],
    [
      'a stream id going back',
      () =>
        Buffer.concat([
          frame(OPEN, 3, head({ ':path': '/' })),
          frame(OPEN, 2, head({ ':path': '/' })),
        ]),
      /OPEN of stream 2 after 3/,
    ],
    ['an oversized RST', () => frame(RST, 1, Buffer.alloc(8)), /control frame 5 of 8 bytes/],
  ];
  for (const [what, bytes, reason] of cases) {
    const { errors, socket } = await pair(t, () => {});
    socket.write(bytes(0));
    await waitFor(`${what}: the connection closed`, () => socket.destroyed || errors.length > 0);
    await waitFor(`${what}: counted`, () => errors.length > 0);
    t.match(errors[0], reason, what);
  }
});

t.test('heads are checked as node:http2 would before sending them on', async (t) => {
  const ok = (h: unknown) => decodeHead(Buffer.from(JSON.stringify(h)));
  t.same(ok({ ':status': 204, 'set-cookie': ['a=1', 'b=2'] }), {
    ':status': 204,
    'set-cookie': ['a=1', 'b=2'],
  });
  t.equal(ok({ ':status': '200' }), null, 'a status is a number');
  t.equal(ok({ ':bogus': 'x' }), null, 'unknown pseudo-field');
  t.equal(ok({ 'X-Upper': 'x' }), null, 'upper case');
  t.equal(ok({ connection: 'close' }), null, 'a connection-specific field');
  t.equal(ok({ 'x-a': 'b\nc' }), null, 'a line break');
  t.equal(ok({ 'x-a': 1 }), null, 'a number elsewhere');
  t.equal(ok(['x']), null, 'not an object');
});

function head(h: Record<string, string>): Buffer {
  return Buffer.concat([Buffer.of(0), Buffer.from(JSON.stringify(h))]);
}
