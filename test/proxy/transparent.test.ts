// The proxy's transparent HTTP listener: Host parsing, and routing of intercepted plain-HTTP
// calls to the matching upstream over real mTLS (two proxies in this process, real sockets).
import t from 'tap';
import net from 'node:net';
import { hostOfHead, serviceFromHost } from '../../proxy/outbound/transparent.ts';
import { decodeProxySnapshot, type ProxySnapshot } from '../../lib/proxy-api/index.ts';
import { freePort } from '../helpers/nats.ts';
import { makeUpstream } from '../helpers/mesh-certs.ts';
import { startEchoApp, startEchoTcp, startSidecar } from '../integration/proxy/mesh.ts';
import { createMeshCerts } from '../helpers/mesh-certs.ts';

t.test('a Host names a service with or without port and .service.consul', async (t) => {
  const cases: Array<[string, string | null]> = [
    ['api', 'api'],
    ['api:8080', 'api'],
    ['API:80', 'api'],
    ['api.service.consul', 'api'],
    ['api.service.consul:8080', 'api'],
    ['api.service.dc1.consul', 'api'],
    ['api.service.consul.', 'api'],
    ['my_api-2', 'my_api-2'],
    ['10.0.0.12:8080', null],
    ['api.example.com', null],
    ['[::1]:8080', null],
    ['api:port', null],
    ['', null],
  ];
  for (const [host, want] of cases) t.equal(serviceFromHost(host), want, JSON.stringify(host));
  t.equal(hostOfHead('GET / HTTP/1.1\r\nX-A: b\r\nHost:  api:8080 \r\n'), 'api:8080');
  t.equal(hostOfHead('GET / HTTP/1.1\r\nx-host: api\r\n'), null);
});

t.test('the snapshot field is optional, checked, and must not reuse a port', async (t) => {
  const mesh = createMeshCerts();
  const api = await startSidecar(mesh, 'web');
  t.teardown(() => api.proxy.close());
  const base = api.snapshot;
  t.notOk('transparent' in decodeProxySnapshot(base), 'absent stays absent');
  const listener = { bindAddress: '127.0.0.1', bindPort: 15001, upstream: 'api' };
  const ok = { ...base, transparent: { http: [listener] } };
  t.same(decodeProxySnapshot(ok).transparent, ok.transparent);
  t.throws(
    () =>
      decodeProxySnapshot({
        ...base,
        transparent: { http: [{ bindAddress: '127.0.0.1', upstream: 'api' }] },
      }),
    /transparent\.http\[0\]\.bindPort/,
  );
  const clash = {
    ...base,
    upstreams: [makeUpstream(mesh, 'api', [1], { localBindPort: 15001 })],
    transparent: { http: [listener] },
  };
  t.throws(() => decodeProxySnapshot(clash), /already used by upstream api/);
  const twice = { ...base, transparent: { http: [listener, { ...listener, upstream: 'b' }] } };
  t.throws(() => decodeProxySnapshot(twice), /already used by the transparent listener of api/);
  const six = { ...listener, bindAddress: '::1' };
  const withApi = { ...base, upstreams: [makeUpstream(mesh, 'api', [1])] };
  const forward = { ...withApi, transparent: { http: [listener], forward: [six] } };
  t.same(decodeProxySnapshot(forward).transparent, forward.transparent, 'the same port on ::1');
  t.throws(
    () => decodeProxySnapshot({ ...base, transparent: { http: [], forward: [six] } }),
    /transparent\.forward\[0\]\.upstream` names no upstream/,
  );
  t.throws(
    () => decodeProxySnapshot({ ...withApi, transparent: { http: [six], forward: [{ ...six }] } }),
    /transparent\.forward\[0\]\.bindPort` is already used by the transparent listener of api/,
  );
});

t.test(
  'a forward listener on ::1 hands connections to its upstream, whatever the protocol',
  async (t) => {
    const mesh = createMeshCerts();
    const app = await startEchoApp('api');
    const tcpApp = await startEchoTcp();
    t.teardown(async () => {
      tcpApp.close();
      await app.close();
    });
    const api = await startSidecar(mesh, 'api', { appPort: app.port });
    const echo = await startSidecar(mesh, 'echo', { appPort: tcpApp.port, protocol: 'tcp' });
    const web = await startSidecar(mesh, 'web', {
      upstreams: [
        makeUpstream(mesh, 'api', [api.inboundPort]),
        makeUpstream(mesh, 'echo', [echo.inboundPort], { protocol: 'tcp' }),
      ],
    });
    t.teardown(async () => {
      await web.proxy.close();
      await api.proxy.close();
      await echo.proxy.close();
    });
    const [httpPort, echoPort] = [await freePort(), await freePort()];
    await web.apply({
      ...web.snapshot,
      version: 2,
      transparent: {
        http: [
          { bindAddress: '127.0.0.1', bindPort: httpPort, upstream: 'api' },
          { bindAddress: '::1', bindPort: httpPort, upstream: 'api' },
        ],
        forward: [{ bindAddress: '::1', bindPort: echoPort, upstream: 'echo' }],
      },
    });
    const raw = await exchange(
      httpPort,
      ['GET / HTTP/1.1\r\nHost: [fd00::12]:8080\r\nConnection: close\r\n\r\n'],
      '::1',
    );
    t.match(raw, /^HTTP\/1\.1 200 /, 'an HTTP call that arrived on ::1 is answered');
    t.match(raw, /"app":"api"/, 'by api, the destination’s service');
    const echoed = await new Promise<string>((resolve, reject) => {
      const s = net.connect(echoPort, '::1', () => s.write('over ipv6'));
      s.on('data', (d: Buffer) => {
        resolve(d.toString());
        s.destroy();
      });
      s.on('error', reject);
    });
    t.equal(
      echoed,
      'OVER IPV6',
      'a TCP connection on the ::1 listener reaches echo through its upstream',
    );
    const metrics = await web.proxy.metrics.registry.metrics();
    t.match(
      metrics,
      /remora_proxy_connections_total\{direction="outbound",service="echo"\} 1/,
      'counted as echo’s outbound connection',
    );
  },
);

/** One raw HTTP/1.1 exchange (keep-alive requests in order), as an unmodified client sends it. */
function exchange(port: number, requests: string[], host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host, () => s.write(requests.join('')));
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', reject);
    s.on('close', () => resolve(out));
    s.setTimeout(5000, () => s.destroy(new Error(`no answer: ${out}`)));
  });
}

t.test('intercepted HTTP calls go to the Host’s upstream, else the destination’s', async (t) => {
  const mesh = createMeshCerts();
  const apiApp = await startEchoApp('api');
  const otherApp = await startEchoApp('other');
  t.teardown(() => Promise.all([apiApp.close(), otherApp.close()]));
  const api = await startSidecar(mesh, 'api', { appPort: apiApp.port });
  const other = await startSidecar(mesh, 'other', { appPort: otherApp.port });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [
      makeUpstream(mesh, 'api', [api.inboundPort]),
      makeUpstream(mesh, 'other', [other.inboundPort]),
      makeUpstream(mesh, 'echo', [1], { protocol: 'tcp' }),
    ],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await api.proxy.close();
    await other.proxy.close();
  });
  const port = await freePort();
  const echoPort = await freePort();
  const next: ProxySnapshot = {
    ...web.snapshot,
    version: 2,
    transparent: {
      http: [
        { bindAddress: '127.0.0.1', bindPort: port, upstream: 'api' },
        // a listener whose upstream is not an HTTP one: only Host names can route from it
        { bindAddress: '127.0.0.1', bindPort: echoPort, upstream: 'echo' },
      ],
    },
  };
  await web.apply(next);

  // the JSON body, whether framed by length or in chunks
  const body = (raw: string) =>
    JSON.parse(raw.slice(raw.indexOf('{'), raw.lastIndexOf('}') + 1)) as {
      app: string;
      xfcc: string | null;
    };
  for (const host of ['api', 'api:8080', 'api.service.consul', 'API.service.dc1.consul:80']) {
    const raw = await exchange(port, [
      `GET /x HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    ]);
    t.match(raw, /^HTTP\/1\.1 200 /, `Host ${host} is answered`);
    t.equal(body(raw).app, 'api', `Host ${host} reaches api`);
    t.match(body(raw).xfcc, new RegExp(`URI=${mesh.spiffeIdFor('web')}`), 'over mTLS as web');
  }
  const o = await exchange(port, ['GET / HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n']);
  t.equal(body(o).app, 'other', 'a Host naming another HTTP upstream reaches that one');
  for (const host of ['10.0.0.12:8080', 'api-1-pod:9090', 'nosuch']) {
    const raw = await exchange(port, [
      `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    ]);
    t.equal(body(raw).app, 'api', `Host ${host} goes to the destination's service (api)`);
  }

  const two = await exchange(port, [
    'GET /1 HTTP/1.1\r\nHost: api:8080\r\n\r\n',
    'GET /2 HTTP/1.1\r\nHost: api:8080\r\nConnection: close\r\n\r\n',
  ]);
  t.equal(two.match(/HTTP\/1\.1 200 /g)?.length, 2, 'keep-alive requests on one connection');

  const viaEcho = await exchange(echoPort, [
    'GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n',
  ]);
  t.equal(body(viaEcho).app, 'api', 'a Host naming an HTTP upstream routes from any listener');
  for (const host of ['nosuch', 'echo', '10.0.0.12:8080']) {
    const raw = await exchange(echoPort, [`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`]);
    t.match(raw, /^HTTP\/1\.1 421 /, `Host ${host} is refused`);
    t.match(raw, /x-remora-error: REMORA_E_PROXY_TRANSPARENT_UNKNOWN_HOST/);
    t.match(raw, /known: api, other/, 'the refusal lists the HTTP upstreams');
  }
  const metrics = await web.proxy.metrics.registry.metrics();
  t.match(metrics, /transparent_unknown_host"} 3/, 'refusals are counted');

  // a snapshot without the field closes the listeners
  await web.apply({ ...web.snapshot, version: 3, transparent: undefined });
  const closed = await new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve('open');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  t.equal(closed, 'ECONNREFUSED', 'the listeners are gone with the field');
});
