// The server half of remora-tcp/1 spoken to frame by frame over a plain socket: what a peer
// sidecar may and may not send, and what it gets back.
import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { RemoraError } from '../../../lib/errors/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import { createMeshCerts } from '../../helpers/mesh-certs.ts';
import {
  ACCEPT,
  CREDIT,
  DATA,
  FIN,
  GOAWAY,
  OPEN,
  RST,
  RST_APP_UNAVAILABLE,
  RST_DENIED,
  RST_REFUSED,
  serveTunnel,
  STREAM_WINDOW,
  type TunnelServerConnection,
} from '../../../proxy/tcp/tunnel.ts';
import { encodeFrame as frame, u32 } from '../../../proxy/tcp/framed.ts';

interface Frame {
  type: number;
  id: number;
  payload: Buffer;
}

/** A raw peer: sends frames, collects the ones it gets. */
class Peer {
  readonly socket: net.Socket;
  readonly frames: Frame[] = [];
  #buf = Buffer.alloc(0);
  closed = false;

  constructor(port: number, socket?: net.Socket) {
    this.socket = socket ?? net.connect(port, '127.0.0.1');
    this.socket.on('error', () => {});
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('data', (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      while (this.#buf.length >= 9) {
        const len = this.#buf.readUInt32BE(5);
        if (this.#buf.length < 9 + len) break;
        this.frames.push({
          type: this.#buf[0]!,
          id: this.#buf.readUInt32BE(1),
          payload: this.#buf.subarray(9, 9 + len),
        });
        this.#buf = this.#buf.subarray(9 + len);
      }
    });
  }

  send(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  async next(type: number, id: number): Promise<Frame> {
    let f: Frame | undefined;
    await waitFor(
      `frame ${type} on stream ${id}`,
      () => (f = this.frames.find((x) => x.type === type && x.id === id)) !== undefined,
      5000,
    );
    return f!;
  }
}

async function startTunnelServer(
  t: Test,
  o: { open?: () => Promise<net.Socket>; maxStreams?: number; idleTimeoutMs?: number } = {},
): Promise<{
  port: number;
  errors: string[];
  streams: { opened: number; closed: number };
  conns: TunnelServerConnection[];
}> {
  // the app: upper-cases what it gets and ends once the peer has ended
  const app = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.on('data', (c: Buffer) => s.write(c.toString().toUpperCase()));
    s.on('end', () => s.end());
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const appPort = (app.address() as AddressInfo).port;
  const errors: string[] = [];
  const streams = { opened: 0, closed: 0 };
  const conns: TunnelServerConnection[] = [];
  const server = net.createServer((s) => {
    conns.push(
      serveTunnel(s, {
        open:
          o.open ??
          (async () => {
            const a = net.connect(appPort, '127.0.0.1');
            await once(a, 'connect');
            return a;
          }),
        maxStreams: o.maxStreams ?? 16,
        idleTimeoutMs: o.idleTimeoutMs ?? 60_000,
        onStreamOpened: () => streams.opened++,
        onStreamClosed: () => streams.closed++,
        onProtocolError: (what) => errors.push(what),
      }),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    server.close();
    app.close();
  });
  return { port: (server.address() as AddressInfo).port, errors, streams, conns };
}

t.test('a stream opens, carries bytes both ways and half-closes both ways', async (t) => {
  const srv = await startTunnelServer(t);
  const p = new Peer(srv.port);
  t.teardown(() => p.socket.destroy());
  p.send(frame(OPEN, 1, u32(STREAM_WINDOW)));
  const accept = await p.next(ACCEPT, 1);
  t.equal(accept.payload.readUInt32BE(0), STREAM_WINDOW, 'ACCEPT grants a window');
  p.send(frame(DATA, 1, Buffer.from('abc')));
  const data = await p.next(DATA, 1);
  t.equal(data.payload.toString(), 'ABC', "the app's answer comes back on the stream");
  p.send(frame(FIN, 1));
  await p.next(FIN, 1);
  t.pass('FIN reached the app, which ended its side in turn');
  await waitFor('stream closed', () => srv.streams.closed === 1, 5000);
  t.same(srv.streams, { opened: 1, closed: 1 });
  t.notOk(
    p.frames.some((f) => f.type === RST),
    'a stream both sides finished is not reset',
  );
});

t.test('a peer that breaks the protocol loses its connection, and it is counted', async (t) => {
  const cases: Array<[string, (p: Peer) => Promise<void>, RegExp]> = [
    [
      'DATA before ACCEPT',
      async (p) => p.send(frame(OPEN, 1, u32(STREAM_WINDOW)), frame(DATA, 1, Buffer.from('x'))),
      /DATA before ACCEPT on stream 1/,
    ],
    [
      'DATA beyond the window',
      async (p) => {
        p.send(frame(OPEN, 1, u32(STREAM_WINDOW)));
        await p.next(ACCEPT, 1);
        p.send(frame(DATA, 1, Buffer.alloc(STREAM_WINDOW + 1)));
      },
      /DATA beyond what was granted on stream 1/,
    ],
    [
      'a stream number used twice',
      async (p) => p.send(frame(OPEN, 3, u32(1024)), frame(OPEN, 3, u32(1024))),
      /OPEN of stream 3 after 3/,
    ],
    [
      'an oversized control frame',
      async (p) => p.send(frame(CREDIT, 1, Buffer.alloc(8))),
      /control frame 6 of 8 bytes/,
    ],
    ['an unknown frame type', async (p) => p.send(frame(42, 1)), /frame type 42 from the client/],
    [
      'a frame only servers send',
      async (p) => p.send(frame(GOAWAY, 0)),
      /frame type 7 from the client/,
    ],
  ];
  for (const [name, act, why] of cases) {
    const srv = await startTunnelServer(t);
    const p = new Peer(srv.port);
    await once(p.socket, 'connect');
    await act(p);
    await waitFor(`closed after ${name}`, () => p.closed, 5000);
    t.match(srv.errors, [why], `${name}: connection closed and counted`);
  }
});

t.test('refusals: stream limit, drain, denial and a missing app are told apart', async (t) => {
  let mode: 'ok' | 'deny' | 'down' = 'ok';
  const app = net.createServer((s) => s.on('error', () => {}));
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  t.teardown(() => app.close());
  const srv = await startTunnelServer(t, {
    maxStreams: 1,
    open: async () => {
      if (mode === 'deny')
        throw new RemoraError('REMORA_E_PROXY_INTENTION_DENIED', 'web → api denied');
      if (mode === 'down')
        throw new RemoraError('REMORA_E_PROXY_CONNECT_FAILED', 'local app refused', {});
      const a = net.connect((app.address() as AddressInfo).port, '127.0.0.1');
      await once(a, 'connect');
      return a;
    },
  });
  const p = new Peer(srv.port);
  t.teardown(() => p.socket.destroy());
  p.send(frame(OPEN, 1, u32(STREAM_WINDOW)));
  await p.next(ACCEPT, 1);
  p.send(frame(OPEN, 2, u32(STREAM_WINDOW)));
  t.same([...(await p.next(RST, 2)).payload], [RST_REFUSED], 'over the stream limit: refused');
  p.send(frame(RST, 1));
  await waitFor('stream 1 closed', () => srv.streams.closed === 1, 5000);
  mode = 'deny';
  p.send(frame(OPEN, 3, u32(STREAM_WINDOW)));
  t.same([...(await p.next(RST, 3)).payload], [RST_DENIED], 'denied by intention');
  mode = 'down';
  p.send(frame(OPEN, 4, u32(STREAM_WINDOW)));
  t.same([...(await p.next(RST, 4)).payload], [RST_APP_UNAVAILABLE], 'the app did not accept');
  mode = 'ok';
  p.send(frame(OPEN, 5, u32(STREAM_WINDOW)));
  await p.next(ACCEPT, 5);
  srv.conns[0]!.drain();
  await p.next(GOAWAY, 0);
  p.send(frame(OPEN, 6, u32(STREAM_WINDOW)));
  t.same([...(await p.next(RST, 6)).payload], [RST_REFUSED], 'draining: refused');
  t.notOk(p.closed, 'the connection stays while a stream is open');
  p.send(frame(FIN, 5));
  p.send(frame(RST, 5));
  await waitFor('connection ended after its last stream', () => p.closed, 5000);
  t.same(srv.errors, [], 'no protocol error along the way');
});

t.test('a caller whose certificate has expired opens no stream over its old tunnel', async (t) => {
  const mesh = createMeshCerts();
  const api = mesh.leaf('api');
  const web = mesh.leaf('web', { ttlMs: 2000 });
  const errors: string[] = [];
  let opened = 0;
  const server = tls.createServer(
    {
      cert: api.certPem,
      key: api.keyPem,
      ca: mesh.ca.certPem,
      requestCert: true,
      rejectUnauthorized: false,
    },
    (s) =>
      serveTunnel(s, {
        open: () => Promise.reject(new Error('not reached')),
        maxStreams: 16,
        idleTimeoutMs: 60_000,
        onStreamOpened: () => opened++,
        onStreamClosed: () => {},
        onProtocolError: (what) => errors.push(what),
      }),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const socket = tls.connect({
    port,
    host: '127.0.0.1',
    cert: web.certPem,
    key: web.keyPem,
    ca: mesh.ca.certPem,
    checkServerIdentity: () => undefined,
  });
  const p = new Peer(port, socket);
  t.teardown(() => {
    p.socket.destroy();
    server.close();
  });
  await once(socket, 'secureConnect');
  await new Promise((r) => setTimeout(r, Math.max(0, web.notAfter.getTime() - Date.now() + 50)));
  p.send(frame(OPEN, 1, u32(STREAM_WINDOW)));
  t.same([...(await p.next(RST, 1)).payload], [RST_REFUSED], 'the stream is refused');
  await p.next(GOAWAY, 0);
  t.pass('and the caller is told to open a new tunnel');
  t.equal(opened, 0, 'nothing was opened');
  t.same(errors, []);
});

t.test('an idle tunnel is ended; a stream asked for meanwhile is left to the caller', async (t) => {
  const srv = await startTunnelServer(t, { idleTimeoutMs: 100 });
  const p = new Peer(srv.port);
  t.teardown(() => p.socket.destroy());
  let ended = false;
  p.socket.on('end', () => {
    ended = true;
    // the OPEN crosses the end: it is not taken (the caller opens it on a new tunnel)
    p.send(frame(OPEN, 1, u32(STREAM_WINDOW)));
  });
  await waitFor('the idle tunnel ended', () => ended, 5000);
  await new Promise((r) => setTimeout(r, 200));
  t.same(srv.streams, { opened: 0, closed: 0 }, 'no stream was opened after the end');
  t.same(p.frames, [], 'and nothing was answered');
  t.same(srv.errors, []);
});

t.test(
  'bytes still held for want of credit are not lost when both sides have finished',
  async (t) => {
    let appSide: net.Socket | null = null;
    const app = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      appSide = s;
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    t.teardown(() => app.close());
    const srv = await startTunnelServer(t, {
      open: async () => {
        const a = net.connect((app.address() as AddressInfo).port, '127.0.0.1');
        await once(a, 'connect');
        return a;
      },
    });
    const p = new Peer(srv.port);
    t.teardown(() => p.socket.destroy());
    const dataBytes = () =>
      p.frames
        .filter((f) => f.type === DATA && f.id === 1)
        .reduce((n, f) => n + f.payload.length, 0);
    p.send(frame(OPEN, 1, u32(10))); // the peer grants 10 bytes only
    await p.next(ACCEPT, 1);
    await waitFor('app connected', () => appSide !== null, 5000);
    appSide!.write(Buffer.alloc(50, 1));
    await waitFor('the first 10 bytes', () => dataBytes() === 10, 5000);
    appSide!.end(Buffer.alloc(50, 2)); // the rest and the app's end wait behind the window
    await new Promise((r) => setTimeout(r, 100));
    p.send(frame(FIN, 1)); // the peer is done too: the app connection closes both ways
    await new Promise((r) => setTimeout(r, 100));
    p.send(frame(CREDIT, 1, u32(40)));
    await waitFor('40 more bytes', () => dataBytes() === 50, 5000);
    await new Promise((r) => setTimeout(r, 200));
    t.notOk(
      p.frames.some((f) => f.type === RST),
      'the stream is not reset while bytes wait for credit',
    );
    p.send(frame(CREDIT, 1, u32(1000)));
    await p.next(FIN, 1);
    t.equal(dataBytes(), 100, 'every byte the app sent arrived, then FIN');
    await waitFor('stream closed', () => srv.streams.closed === 1, 5000);
  },
);
