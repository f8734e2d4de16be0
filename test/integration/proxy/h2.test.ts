import t from 'tap';
import type { Test } from 'tap';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../../../lib/util/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import { startSidecar } from './mesh.ts';
import { DEFAULT_RESILIENCE } from '../../../lib/proxy-api/index.ts';
import type { ResilienceConfig } from '../../../lib/proxy-api/index.ts';

for (const protocol of ['http2', 'grpc'] as const) {
  t.test(
    `${protocol}: a bidirectional stream flows through both sidecars and trailers arrive`,
    async (t) => {
      const mesh = createMeshCerts();
      const app = http2.createServer();
      app.on('stream', (stream, headers) => {
        stream.respond(
          {
            ':status': 200,
            'content-type': 'application/grpc',
            'x-peer': String(headers['x-forwarded-client-cert'] ?? ''),
          },
          { waitForTrailers: true },
        );
        let n = 0;
        stream.on('data', (c: Buffer) => {
          n++;
          stream.write(c.toString().toUpperCase());
        });
        stream.on('end', () => stream.end());
        stream.on('wantTrailers', () =>
          stream.sendTrailers({ 'grpc-status': '0', 'x-messages': String(n) }),
        );
      });
      app.listen(0, '127.0.0.1');
      await once(app, 'listening');
      const api = await startSidecar(mesh, 'api', {
        appPort: (app.address() as AddressInfo).port,
        protocol,
      });
      const web = await startSidecar(mesh, 'web', {
        upstreams: [makeUpstream(mesh, 'api', [api.inboundPort], { protocol })],
      });
      const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
      t.teardown(async () => {
        client.close();
        await web.proxy.close();
        await api.proxy.close();
        app.close();
      });
      const req = client.request({
        ':method': 'POST',
        ':path': '/echo.Echo/Chat',
        'content-type': 'application/grpc',
      });
      let got = '';
      let headers: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders | null = null;
      req.on('response', (h) => (headers = h));
      req.on('data', (c: Buffer) => (got += c.toString()));
      req.on('trailers', (tr) => (trailers = tr));
      req.write('one;');
      await waitFor('first message echoed before the request ends', () => got === 'ONE;', 5000);
      req.write('two;');
      await waitFor('second message', () => got === 'ONE;TWO;', 5000);
      req.end();
      await once(req, 'close');
      t.equal(headers[':status'], 200);
      t.match(
        String(headers['x-peer']),
        /URI=spiffe:\/\/.*\/svc\/web$/,
        'the app sees the caller identity',
      );
      t.same(trailers && { status: trailers['grpc-status'], n: trailers['x-messages'] }, {
        status: '0',
        n: '2',
      });
    },
  );
}

t.test('grpc: a denied call gets grpc-status 7 and the coded reason', async (t) => {
  const mesh = createMeshCerts();
  const app = http2.createServer();
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const api = await startSidecar(mesh, 'api', {
    appPort: (app.address() as AddressInfo).port,
    protocol: 'grpc',
    intentions: {
      intentions: [
        {
          source: 'web',
          destination: 'api',
          permissions: [{ action: 'deny', http: { pathPrefix: '/admin.' } }],
        },
      ],
    },
  });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', [api.inboundPort], { protocol: 'grpc' })],
  });
  const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
  t.teardown(async () => {
    client.close();
    await web.proxy.close();
    await api.proxy.close();
    app.close();
  });
  const req = client.request({
    ':method': 'POST',
    ':path': '/admin.Admin/Drop',
    'content-type': 'application/grpc',
  });
  req.end();
  const [h] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(h['grpc-status'], '7');
  t.equal(h['x-remora-error'], 'REMORA_E_PROXY_INTENTION_DENIED');
  t.match(decodeURIComponent(String(h['grpc-message'])), /permission #1 deny/);
});

/** An h2c app on port 0 whose stream handler is `onStream`; every stream is counted. */
async function startH2App(
  onStream: (
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    n: number,
  ) => void,
): Promise<{ server: http2.Http2Server; port: number; streams: () => number }> {
  const server = http2.createServer();
  let n = 0;
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    onStream(stream, headers, ++n);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, streams: () => n };
}

async function startH2Pair(
  t: Test,
  appPort: number,
  protocol: 'http2' | 'grpc' = 'http2',
  resilience: Partial<ResilienceConfig> = {},
): Promise<http2.ClientHttp2Session> {
  const mesh = createMeshCerts();
  const api = await startSidecar(mesh, 'api', { appPort, protocol });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [
      makeUpstream(mesh, 'api', [api.inboundPort], {
        protocol,
        resilience: { ...structuredClone(DEFAULT_RESILIENCE), ...resilience },
      }),
    ],
  });
  const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
  client.on('error', () => {});
  t.teardown(async () => {
    client.close();
    await web.proxy.close();
    await api.proxy.close();
  });
  return client;
}

interface H2Answer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  headersEnded: boolean;
  body: string;
  trailers: http2.IncomingHttpHeaders | null;
  ended: boolean;
  rstCode: number;
}

/** One request; resolves on 'close' and says whether the body ended with END_STREAM. */
function h2Call(
  client: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  o: { body?: string; trailers?: http2.OutgoingHttpHeaders } = {},
): Promise<H2Answer> {
  return new Promise((resolve) => {
    const hasBody = o.body !== undefined || o.trailers !== undefined;
    const req = client.request(headers, {
      endStream: !hasBody,
      ...(o.trailers ? { waitForTrailers: true } : {}),
    });
    const a: H2Answer = {
      status: 0,
      headers: {},
      headersEnded: false,
      body: '',
      trailers: null,
      ended: false,
      rstCode: 0,
    };
    req.on('error', () => {});
    req.on('response', (h, flags) => {
      a.headers = h;
      a.status = Number(h[':status']);
      a.headersEnded = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    req.on('data', (c: Buffer) => (a.body += c.toString()));
    req.on('trailers', (tr) => (a.trailers = tr));
    req.on('end', () => (a.ended = true));
    req.on('close', () => {
      a.rstCode = req.rstCode ?? 0;
      resolve(a);
    });
    if (o.trailers) req.on('wantTrailers', () => req.sendTrailers(o.trailers!));
    if (hasBody) req.end(o.body ?? '');
  });
}

t.test(
  'http2: an answer without trailers ends the stream at the client (END_STREAM)',
  async (t) => {
    const app = await startH2App((stream) => {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end('x'.repeat(100));
    });
    t.teardown(() => app.server.close());
    const client = await startH2Pair(t, app.port);
    for (let i = 0; i < 3; i++) {
      const a = await h2Call(client, { ':path': '/' });
      t.same(
        { status: a.status, bytes: a.body.length, ended: a.ended, rst: a.rstCode },
        { status: 200, bytes: 100, ended: true, rst: 0 },
        `request ${i + 1} ends cleanly`,
      );
    }
  },
);

t.test('http2: request trailers reach the app with the body', async (t) => {
  const app = await startH2App((stream) => {
    let body = '';
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('data', (c: Buffer) => (body += c.toString()));
    stream.on('trailers', (tr) => (trailers = tr));
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(JSON.stringify({ body, checksum: trailers['x-checksum'] ?? null }));
    });
  });
  t.teardown(() => app.server.close());
  const client = await startH2Pair(t, app.port);
  const a = await h2Call(
    client,
    { ':method': 'POST', ':path': '/upload' },
    { body: 'part-1;part-2', trailers: { 'x-checksum': 'abc123' } },
  );
  t.equal(a.status, 200);
  t.same(JSON.parse(a.body), { body: 'part-1;part-2', checksum: 'abc123' });
});

t.test(
  'grpc: a trailers-only answer arrives as one HEADERS frame that ends the stream',
  async (t) => {
    const app = await startH2App((stream) => {
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': '5',
          'grpc-message': 'not found',
        },
        { endStream: true },
      );
    });
    t.teardown(() => app.server.close());
    const client = await startH2Pair(t, app.port, 'grpc');
    const a = await h2Call(client, {
      ':method': 'POST',
      ':path': '/x.X/Get',
      'content-type': 'application/grpc',
    });
    t.equal(a.headers['grpc-status'], '5');
    t.ok(a.headersEnded, 'END_STREAM on the response HEADERS frame');
    t.equal(a.trailers, null, 'no separate trailer block');
  },
);

t.test('http2: a stream the app refuses is replayed, with its body, for any method', async (t) => {
  const app = await startH2App((stream, _h, n) => {
    if (n === 1) return stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    let body = '';
    stream.on('data', (c: Buffer) => (body += c.toString()));
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(`got ${body}`);
    });
  });
  t.teardown(() => app.server.close());
  const client = await startH2Pair(t, app.port);
  const a = await h2Call(client, { ':method': 'POST', ':path': '/' }, { body: 'payload' });
  t.same({ status: a.status, body: a.body }, { status: 200, body: 'got payload' });
  t.equal(app.streams(), 2, 'the app saw the refused attempt and the replay');
});

t.test("http2: a stream above the app's GOAWAY is replayed on a new connection", async (t) => {
  const app = await startH2App((stream) => {
    stream.respond({ ':status': 200 });
    stream.end('fresh');
  });
  // the app's first connection answers the first HEADERS frame with GOAWAY(last stream 0):
  // node's API cannot send that, so this front speaks those two frames itself
  let connections = 0;
  const front = net.createServer((sock) => {
    sock.on('error', () => {});
    if (++connections > 1) {
      const to = net.connect(app.port, '127.0.0.1');
      to.on('error', () => sock.destroy());
      sock.pipe(to).pipe(sock);
      return;
    }
    sock.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])); // SETTINGS (empty)
    let buf = Buffer.alloc(0);
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (let at = 24; at + 9 <= buf.length; at += 9 + buf.readUIntBE(at, 3)) {
        if (buf[at + 3] !== 1) continue; // HEADERS
        // GOAWAY: length 8, last stream id 0, NO_ERROR
        sock.end(Buffer.from([0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        return;
      }
    });
  });
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  t.teardown(() => {
    front.close();
    app.server.close();
  });
  const client = await startH2Pair(t, (front.address() as AddressInfo).port);
  const a = await h2Call(client, { ':method': 'POST', ':path': '/' }, { body: 'x' });
  t.same({ status: a.status, body: a.body }, { status: 200, body: 'fresh' });
  t.equal(connections, 2, 'the replay went over a new connection to the app');
});

t.test('http2: a reset is retried for GET but not for POST', async (t) => {
  const seen: string[] = [];
  const app = await startH2App((stream, h) => {
    const method = String(h[':method']);
    seen.push(method);
    if (seen.filter((m) => m === method).length === 1)
      return stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    stream.respond({ ':status': 200 });
    stream.end('second try');
  });
  t.teardown(() => app.server.close());
  const client = await startH2Pair(t, app.port);
  const get = await h2Call(client, { ':path': '/' });
  t.same({ status: get.status, body: get.body }, { status: 200, body: 'second try' });
  const post = await h2Call(client, { ':method': 'POST', ':path': '/' }, { body: 'once' });
  t.equal(post.status, 502, 'the POST is answered with an error, not replayed');
  t.same(seen, ['GET', 'GET', 'POST'], 'the app saw the POST once');
});

t.test('http2: requestTimeoutMs bounds the wait for the response head', async (t) => {
  const seen: string[] = [];
  let cancelled = 0;
  const app = await startH2App((stream, h) => {
    const method = String(h[':method']);
    seen.push(method);
    stream.on('close', () => {
      if (stream.rstCode === http2.constants.NGHTTP2_CANCEL) cancelled++;
    });
    stream.resume();
    // the first GET and every POST hang; the head of /slow-body comes at once, its body late
    if (h[':path'] === '/slow-body') {
      stream.respond({ ':status': 200 });
      stream.write('head sent;');
      setTimeout(() => stream.end('body done'), 600);
      return;
    }
    if (method === 'POST' || seen.length === 1) return;
    stream.respond({ ':status': 200 });
    stream.end('answered');
  });
  t.teardown(() => app.server.close());
  const client = await startH2Pair(t, app.port, 'http2', { requestTimeoutMs: 300 });

  const get = await h2Call(client, { ':path': '/' });
  t.same({ status: get.status, body: get.body }, { status: 200, body: 'answered' });
  t.same(seen, ['GET', 'GET'], 'the GET that got no head in time was retried');

  const post = await h2Call(client, { ':method': 'POST', ':path': '/' }, { body: 'once' });
  t.equal(post.status, 504);
  t.equal(post.headers['x-remora-error'], 'REMORA_E_PROXY_REQUEST_TIMEOUT');
  t.match(post.body, /api endpoint api-1 sent no response head within 300 ms/);
  t.same(seen, ['GET', 'GET', 'POST'], 'the POST was not replayed');
  await waitFor('the app sees both late streams cancelled', () => cancelled === 2, 5000);

  const long = await h2Call(client, { ':path': '/slow-body' });
  t.same(
    { status: long.status, body: long.body, ended: long.ended },
    { status: 200, body: 'head sent;body done', ended: true },
    'a body that outlasts the timeout is not cut once the head arrived',
  );
});

t.test('grpc: a stream whose head comes after requestTimeoutMs is not cut', async (t) => {
  const app = await startH2App((stream) => {
    // a server-streaming call whose first message (and head) comes late
    setTimeout(() => {
      if (stream.destroyed) return;
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end('late message');
    }, 600);
  });
  t.teardown(() => app.server.close());
  const client = await startH2Pair(t, app.port, 'grpc', { requestTimeoutMs: 200 });
  const a = await h2Call(client, {
    ':method': 'POST',
    ':path': '/feed.Feed/Watch',
    'content-type': 'application/grpc',
  });
  t.same(
    { status: a.status, body: a.body, grpc: a.trailers?.['grpc-status'] },
    { status: 200, body: 'late message', grpc: '0' },
  );
});
