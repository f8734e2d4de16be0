// An ingress gateway's TLS listeners (docs/gateways.md, "TLS"), with real sockets and real TLS:
// a caller outside the mesh that trusts the mesh root reaches services by a name the gateway's
// certificate covers, over HTTP/1.1, HTTP/2 (ALPN h2) and TCP; a listener flips from plain to TLS
// live; a renewed certificate reaches new connections while open ones go on; the apps see
// X-Forwarded-For and X-Forwarded-Proto as an edge Envoy sets them.
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { createProxy, type Proxy } from '../../../proxy/proxy.ts';
import { forwardedH1 } from '../../../proxy/outbound/ingress.ts';
import { createSilentLogger } from '../../../lib/log/index.ts';
import type { IngressListener, ProxySnapshot } from '../../../lib/proxy-api/index.ts';
import { freePort } from '../../helpers/nats.ts';
import { createMeshCerts, makeSnapshot, makeUpstream } from '../../helpers/mesh-certs.ts';
import { startEchoApp, startEchoTcp, startSidecar } from '../../integration/proxy/mesh.ts';

interface Seen {
  app: string;
  host: string | null;
  xff: string | null;
  xfp: string | null;
}

/** An app answering with the Host and forwarding headers it received. */
const echoHeaders = (app: string) => (req: http.IncomingMessage, res: http.ServerResponse) => {
  const h = (n: string) => (req.headers[n] as string | undefined) ?? null;
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(
    JSON.stringify({
      app,
      host: h('host'),
      xff: h('x-forwarded-for'),
      xfp: h('x-forwarded-proto'),
    }),
  );
};

t.test('X-Forwarded-For gets the caller appended, X-Forwarded-Proto is replaced', async (t) => {
  const h = ['Host', 'a', 'X-Forwarded-For', '10.0.0.1', 'x-forwarded-proto', 'https', 'X-A', '1'];
  forwardedH1(h, '192.0.2.7', 'http');
  t.same(h, [
    'Host',
    'a',
    'X-A',
    '1',
    'x-forwarded-for',
    '10.0.0.1, 192.0.2.7',
    'x-forwarded-proto',
    'http',
  ]);
  const none = ['Host', 'a'];
  forwardedH1(none, '2001:db8::1', 'https');
  t.same(none, ['Host', 'a', 'x-forwarded-for', '2001:db8::1', 'x-forwarded-proto', 'https']);
});

t.test('outside callers reach services over TLS with the gateway’s certificate', async (t) => {
  const mesh = createMeshCerts();
  const names = ['*.ingress.consul', 'api.example.com'];
  const gwLeaf = mesh.leaf('ingress', { dnsNames: names });
  const apiApp = await startEchoApp('api', echoHeaders('api'));
  const tcpApp = await startEchoTcp();
  const h2App = http2.createServer();
  h2App.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(
      JSON.stringify({
        app: 'greeter',
        host: headers[':authority'] ?? null,
        xff: headers['x-forwarded-for'] ?? null,
        xfp: headers['x-forwarded-proto'] ?? null,
      }),
    );
  });
  h2App.listen(0, '127.0.0.1');
  await once(h2App, 'listening');
  const api = await startSidecar(mesh, 'api', { appPort: apiApp.port });
  const echo = await startSidecar(mesh, 'echo', { appPort: tcpApp.port, protocol: 'tcp' });
  const greeter = await startSidecar(mesh, 'greeter', {
    appPort: (h2App.address() as net.AddressInfo).port,
    protocol: 'http2',
  });
  const gw: Proxy = createProxy({ logger: createSilentLogger() });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([api.proxy.close(), echo.proxy.close(), greeter.proxy.close()]);
    tcpApp.close();
    h2App.close();
    await apiApp.close();
  });
  const [httpPort, h2Port, tcpPort] = [await freePort(), await freePort(), await freePort()];
  const listener = (
    port: number,
    protocol: IngressListener['protocol'],
    upstream: string,
    tlsParams?: IngressListener['tls'],
  ): IngressListener => ({
    bindAddress: '127.0.0.1',
    bindPort: port,
    protocol,
    services: [
      {
        upstream,
        hosts: protocol === 'tcp' ? [] : [`${upstream}.ingress.*`, `${upstream}.example.com`],
      },
    ],
    ...(tlsParams ? { tls: tlsParams } : {}),
  });
  const snapshot = (version: number, leaf = gwLeaf, tlsOn = true): ProxySnapshot => ({
    ...makeSnapshot(mesh, leaf, {
      version,
      upstreams: [
        makeUpstream(mesh, 'api', [api.inboundPort], { listener: false }),
        makeUpstream(mesh, 'echo', [echo.inboundPort], { protocol: 'tcp', listener: false }),
        makeUpstream(mesh, 'greeter', [greeter.inboundPort], {
          protocol: 'http2',
          listener: false,
        }),
      ],
    }),
    ingress: {
      listeners: [
        listener(httpPort, 'http', 'api', tlsOn ? {} : undefined),
        listener(h2Port, 'http2', 'greeter', {}),
        listener(tcpPort, 'tcp', 'echo', { minVersion: 'TLSv1_3' }),
      ],
    },
  });

  // 1. plain first: X-Forwarded-Proto http, whatever the caller claims
  await gw.apply(snapshot(1, gwLeaf, false));
  const plain = await new Promise<Seen>((resolve, reject) => {
    http
      .get(
        {
          host: '127.0.0.1',
          port: httpPort,
          path: '/',
          agent: false,
          headers: {
            host: 'api.example.com',
            'x-forwarded-for': '203.0.113.9',
            'x-forwarded-proto': 'https',
          },
        },
        (res) => {
          let b = '';
          res.on('data', (d: Buffer) => (b += d.toString()));
          res.on('end', () => resolve(JSON.parse(b) as Seen));
        },
      )
      .on('error', reject);
  });
  t.same(
    plain,
    { app: 'api', host: 'api.example.com', xff: '203.0.113.9, 127.0.0.1', xfp: 'http' },
    'plain: the caller appended to X-Forwarded-For, its X-Forwarded-Proto not trusted',
  );

  // 2. the same listener turns to TLS live
  await gw.apply(snapshot(2));
  const ca = mesh.ca.certPem;
  const get = (host: string, o: https.RequestOptions = {}) =>
    new Promise<{ seen: Seen; cert: tls.PeerCertificate; port: number }>((resolve, reject) => {
      const req = https.get(
        {
          host: '127.0.0.1',
          port: httpPort,
          path: '/',
          servername: host,
          headers: { host },
          ca,
          agent: false,
          ...o,
        },
        (res) => {
          let b = '';
          const sock = res.socket as tls.TLSSocket;
          const cert = sock.getPeerCertificate();
          const port = sock.localPort ?? 0;
          res.on('data', (d: Buffer) => (b += d.toString()));
          res.on('end', () => resolve({ seen: JSON.parse(b) as Seen, cert, port }));
        },
      );
      req.on('error', reject);
    });
  const byHost = await get('api.example.com');
  t.same(
    byHost.seen,
    { app: 'api', host: 'api.example.com', xff: '127.0.0.1', xfp: 'https' },
    'a client trusting the mesh root reaches api by a host of the entry, X-Forwarded-Proto https',
  );
  t.match(byHost.cert.subjectaltname, `URI:${mesh.spiffeIdFor('ingress')}`);
  const byDefault = await get('api.ingress.consul');
  t.equal(byDefault.seen.app, 'api', 'and by its default name, under *.ingress.consul');

  const failure = (p: Promise<unknown>) =>
    p.then(
      () => 'succeeded',
      (e: NodeJS.ErrnoException) => e.code ?? e.message,
    );
  t.equal(
    await failure(get('api.ingress.example.org')),
    'ERR_TLS_CERT_ALTNAME_INVALID',
    'a name the certificate does not cover fails the client’s check',
  );
  t.match(
    await failure(get('api.example.com', { ca: mesh.otherCa().certPem })),
    /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER/,
    'a client that does not trust the mesh root refuses the gateway',
  );
  const plainNow = await new Promise<string>((resolve) => {
    const s = net.connect(httpPort, '127.0.0.1', () =>
      s.write('GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n'),
    );
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', () => resolve(out));
    s.on('close', () => resolve(out));
  });
  t.notMatch(plainNow, /"app":"api"/, 'plain HTTP is no longer served on that port');

  // 3. HTTP/2 over TLS, negotiated by ALPN
  const h2 = http2.connect(`https://127.0.0.1:${h2Port}`, {
    ca,
    servername: 'greeter.ingress.consul',
  });
  t.teardown(() => h2.close());
  const h2Seen = await new Promise<Seen>((resolve, reject) => {
    const s = h2.request({ ':path': '/', ':authority': 'greeter.ingress.consul' });
    let b = '';
    s.on('data', (d: Buffer) => (b += d.toString()));
    s.on('end', () => resolve(JSON.parse(b) as Seen));
    s.on('error', reject);
    s.end();
  });
  t.same(
    h2Seen,
    { app: 'greeter', host: 'greeter.ingress.consul', xff: '127.0.0.1', xfp: 'https' },
    'an h2 stream reaches greeter by :authority',
  );
  t.equal(
    await failure(
      new Promise((resolve, reject) => {
        const c = tls.connect(
          { port: h2Port, host: '127.0.0.1', ca, servername: 'x', ALPNProtocols: ['http/1.1'] },
          () => resolve(c.alpnProtocol),
        );
        c.on('error', reject);
      }),
    ),
    'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL',
    'an HTTP/2 listener does not take an HTTP/1.1-only client',
  );

  // 4. TCP over TLS, with the listener's minimum version
  const tcpOver = (o: tls.ConnectionOptions) =>
    new Promise<string>((resolve, reject) => {
      const c = tls.connect({ port: tcpPort, host: '127.0.0.1', ca, servername: 'x', ...o }, () =>
        c.write('through tls'),
      );
      c.on('data', (d: Buffer) => {
        resolve(d.toString());
        c.destroy();
      });
      c.on('error', reject);
    });
  t.equal(
    await tcpOver({ checkServerIdentity: () => undefined }),
    'THROUGH TLS',
    'the tcp listener terminates TLS and reaches echo',
  );
  t.match(
    await failure(tcpOver({ maxVersion: 'TLSv1.2', checkServerIdentity: () => undefined })),
    /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|VERSION/,
    'a TLS 1.2 client is refused by a TLSv1_3 minimum',
  );

  // 5. a renewed certificate: new connections get it, an open one goes on with the old
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const before = await get('api.example.com', { agent });
  const renewed = mesh.leaf('ingress', { dnsNames: names });
  await gw.apply(snapshot(3, renewed));
  const sameConn = await get('api.example.com', { agent });
  t.equal(sameConn.port, before.port, 'the open connection was kept');
  t.equal(sameConn.seen.app, 'api', 'and still serves');
  const fresh = await get('api.example.com');
  t.equal(
    fresh.cert.serialNumber,
    new X509Certificate(renewed.certPem).serialNumber,
    'a new connection gets the renewed certificate',
  );
  t.not(fresh.cert.serialNumber, before.cert.serialNumber);
});
