// The admin API as a client sees it: served by the proxy's own HTTP/1.1 server on loopback.
import t from 'tap';
import net from 'node:net';
import { startAdminServer } from '../../../proxy/admin/server.ts';
import { createProxyMetrics } from '../../../proxy/admin/metrics.ts';
import type { Proxy } from '../../../proxy/proxy.ts';
import type { ProxySnapshot } from '../../../lib/proxy-api/index.ts';

function fakeProxy(over: { ready: boolean; snapshot: ProxySnapshot | null }): Proxy {
  return {
    status: () =>
      over.ready
        ? { ready: true, appliedVersion: 3, reason: '', draining: false }
        : {
            ready: false,
            appliedVersion: null,
            reason: 'no snapshot applied yet',
            draining: false,
          },
    snapshot: over.snapshot,
    metrics: createProxyMetrics({ defaultMetrics: false }),
    clusters: () => [{ name: 'api', endpoints: [] }],
    certs: () => ({ notAfter: '2030-01-01T00:00:00.000Z' }),
  } as unknown as Proxy;
}

/** Sends raw bytes, returns everything the server wrote until it closed or went quiet. */
function raw(port: number, text: string, quietMs = 300): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    let timer = setTimeout(() => s.destroy(), quietMs * 10);
    s.on('data', (c) => {
      got += c.toString('latin1');
      clearTimeout(timer);
      timer = setTimeout(() => s.destroy(), quietMs);
    });
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    s.write(text);
  });
}

const SNAPSHOT = {
  version: 3,
  inbound: { protocol: 'http' },
  tls: { certPem: 'CERT', keyPem: '-----BEGIN PRIVATE KEY-----secret', rootsPem: [] },
  tracing: { endpoint: 'http://collector:4318', sampleRatio: 1, headers: { authorization: 'x' } },
} as unknown as ProxySnapshot;

t.test('endpoints answer with status, type and length a client can rely on', async (t) => {
  const admin = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    proxy: fakeProxy({ ready: true, snapshot: SNAPSHOT }),
  });
  t.teardown(() => admin.close());
  const base = `http://127.0.0.1:${admin.port}`;

  const live = await fetch(`${base}/live`);
  t.equal(live.status, 200);
  t.equal(await live.text(), 'live\n');

  const ready = await fetch(`${base}/ready?verbose=1`);
  t.equal(ready.status, 200, 'a query string does not change the route');
  t.equal(await ready.text(), 'ready\n');

  const metrics = await fetch(`${base}/metrics`);
  t.equal(metrics.status, 200);
  t.match(metrics.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  t.match(await metrics.text(), /# TYPE remora_proxy_requests_total counter/);

  const config = await fetch(`${base}/config`);
  t.equal(config.headers.get('content-type'), 'application/json');
  const body = await config.text();
  t.notMatch(body, 'secret', 'the private key never leaves the proxy');
  t.match(JSON.parse(body), {
    snapshot: {
      inbound: { mutualTlsMode: 'strict' },
      tls: { keyPem: '[redacted]' },
      tracing: { headers: { authorization: '[redacted]' } },
    },
  });

  t.same(await (await fetch(`${base}/clusters`)).json(), [{ name: 'api', endpoints: [] }]);
  t.same(await (await fetch(`${base}/certs`)).json(), { notAfter: '2030-01-01T00:00:00.000Z' });

  const missing = await fetch(`${base}/nope`);
  t.equal(missing.status, 404);
  t.match(await missing.text(), 'try /ready /live /metrics');

  const post = await fetch(`${base}/ready`, { method: 'POST', body: 'x' });
  t.equal(post.status, 405);
  t.equal(post.headers.get('allow'), 'GET');
});

t.test('not ready: 503 with the reason; HEAD has headers and no body', async (t) => {
  const admin = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    proxy: fakeProxy({ ready: false, snapshot: null }),
  });
  t.teardown(() => admin.close());
  const ready = await fetch(`http://127.0.0.1:${admin.port}/ready`);
  t.equal(ready.status, 503);
  t.equal(await ready.text(), 'not ready: no snapshot applied yet\n');
  t.equal((await fetch(`http://127.0.0.1:${admin.port}/config`)).status, 503);

  const head = await raw(admin.port, 'HEAD /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.match(head, /^HTTP\/1\.1 200 OK\r\n/);
  t.match(head, /content-length: 5\r\n/i, 'HEAD announces the GET body length');
  t.ok(head.endsWith('\r\n\r\n'), 'and sends no body');
});

t.test('malformed requests are refused and the server keeps serving', async (t) => {
  const admin = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    proxy: fakeProxy({ ready: true, snapshot: SNAPSHOT }),
  });
  t.teardown(() => admin.close());
  const smuggle = await raw(
    admin.port,
    'GET /live HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
  );
  t.match(smuggle, /^HTTP\/1\.1 400 /);
  t.match(smuggle, /x-remora-error: REMORA_E_PROXY_BAD_REQUEST/);
  t.equal((await fetch(`http://127.0.0.1:${admin.port}/live`)).status, 200);
});

t.test('close() ends idle keep-alive connections', async (t) => {
  const admin = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    proxy: fakeProxy({ ready: true, snapshot: SNAPSHOT }),
  });
  const s = net.connect(admin.port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  s.write('GET /live HTTP/1.1\r\nHost: x\r\n\r\n');
  await new Promise((r) => s.once('data', r));
  const closed = new Promise((r) => s.once('close', r));
  await admin.close();
  await closed;
  t.pass('the kept-alive client connection was closed');
});

t.test('a non-loopback admin address is refused with the key and value', async (t) => {
  await t.rejects(
    startAdminServer({
      host: '0.0.0.0',
      port: 0,
      proxy: fakeProxy({ ready: true, snapshot: null }),
    }),
    { code: 'REMORA_E_CONFIG_INVALID', details: { key: 'admin.host', value: '0.0.0.0' } },
  );
});

t.test("a terminating gateway's /config shows no key of its linked services", async (t) => {
  const snapshot = {
    ...SNAPSHOT,
    terminating: {
      services: [
        {
          service: 'legacy',
          sni: 'legacy.default.dc1.internal.x.remora',
          protocol: 'tcp',
          certPem: 'LEAF',
          keyPem: '-----BEGIN PRIVATE KEY-----leaf-secret',
          endpoints: [],
          tls: {
            caPem: 'CA',
            certPem: 'CLIENT',
            keyPem: '-----BEGIN PRIVATE KEY-----client-secret',
          },
        },
        {
          service: 'plain',
          sni: 'plain.x',
          protocol: 'tcp',
          certPem: 'L2',
          keyPem: 'k2-secret',
          endpoints: [],
        },
      ],
    },
  } as unknown as ProxySnapshot;
  const admin = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    proxy: fakeProxy({ ready: true, snapshot }),
  });
  t.teardown(() => admin.close());
  const body = await (await fetch(`http://127.0.0.1:${admin.port}/config`)).text();
  t.notMatch(body, 'secret', 'neither the leaves’ keys nor the client key leave the proxy');
  t.match(JSON.parse(body), {
    snapshot: {
      terminating: {
        services: [
          {
            service: 'legacy',
            certPem: 'LEAF',
            keyPem: '[redacted]',
            tls: { caPem: 'CA', certPem: 'CLIENT', keyPem: '[redacted]' },
          },
          { service: 'plain', keyPem: '[redacted]' },
        ],
      },
    },
  });
});
