// A service-resolver's Failover through real sidecars: web's upstream `api` fails over to
// `api-dr` (its own sidecar, identity and intentions) when api has no endpoint to take, for
// HTTP/1.1, HTTP/2 and TCP, and comes back to api once it has one again.
import t from 'tap';
import type { Test } from 'tap';
import http2 from 'node:http2';
import { once } from 'node:events';
import net from 'node:net';
import type { UpstreamConfig } from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeUpstream, type MeshCerts } from '../../helpers/mesh-certs.ts';
import { waitFor } from '../../../lib/util/index.ts';
import {
  startEchoApp,
  startEchoTcp,
  startH2AppSidecar,
  startSidecar,
  type Sidecar,
} from './mesh.ts';

interface Ports {
  api: number[];
  dr: number[];
}

/** web's upstream to api (endpoints `ports.api`) failing over to api-dr (`ports.dr`). */
function failoverUpstream(
  mesh: MeshCerts,
  ports: Ports,
  protocol: UpstreamConfig['protocol'] = 'http',
  tune: Partial<UpstreamConfig> = {},
): UpstreamConfig {
  const dr = makeUpstream(mesh, 'api-dr', ports.dr);
  return {
    ...makeUpstream(mesh, 'api', ports.api, { protocol, ...tune }),
    failover: ['api-dr'],
    targets: [
      {
        destinationName: 'api-dr',
        destinationSpiffeId: dr.destinationSpiffeId,
        loadBalancer: dr.loadBalancer,
        resilience: dr.resilience,
        endpoints: dr.endpoints,
      },
    ],
  };
}

async function failovers(web: Sidecar): Promise<string[]> {
  const text = await web.proxy.metrics.registry.metrics();
  return text.split('\n').filter((l) => l.startsWith('remora_proxy_failovers_total{'));
}

async function get(port: number): Promise<{ status: number; app: string; code: string | null }> {
  const r = await fetch(`http://127.0.0.1:${port}/`);
  const body = await r.text();
  const app = r.status === 200 ? (JSON.parse(body) as { app: string }).app : body;
  return { status: r.status, app, code: r.headers.get('x-remora-error') };
}

async function startHttpMesh(t: Test): Promise<{
  web: Sidecar;
  mesh: MeshCerts;
  ports: Ports;
  port: () => number;
  killApi: () => Promise<void>;
}> {
  const mesh = createMeshCerts();
  const apiApp = await startEchoApp('api');
  const drApp = await startEchoApp('api-dr');
  const api = await startSidecar(mesh, 'api', { appPort: apiApp.port });
  const dr = await startSidecar(mesh, 'api-dr', { appPort: drApp.port });
  const ports = { api: [api.inboundPort], dr: [dr.inboundPort] };
  const web = await startSidecar(mesh, 'web', { upstreams: [failoverUpstream(mesh, ports)] });
  let apiClosed = false;
  t.teardown(async () => {
    await web.proxy.close();
    if (!apiClosed) await api.proxy.close();
    await dr.proxy.close();
    await apiApp.close();
    await drApp.close();
  });
  return {
    web,
    mesh,
    ports,
    port: () => web.proxy.addresses().upstreams.api!.port,
    killApi: async () => {
      apiClosed = true;
      await api.proxy.close();
    },
  };
}

t.test(
  'http: calls fail over to api-dr while api has no healthy endpoint, and come back',
  async (t) => {
    const { web, mesh, ports, port } = await startHttpMesh(t);
    t.same(
      await get(port()),
      { status: 200, app: 'api', code: null },
      'api answers while it has an endpoint',
    );
    t.same(await failovers(web), [], 'no failover counted');

    const apply = (p: Ports) =>
      web.apply({
        ...web.snapshot,
        version: web.snapshot.version + 1,
        upstreams: [failoverUpstream(mesh, p)],
      });
    await apply({ api: [], dr: ports.dr });
    for (let i = 0; i < 3; i++)
      t.same(
        await get(port()),
        { status: 200, app: 'api-dr', code: null },
        'api has none: api-dr answers',
      );
    t.same(
      await failovers(web),
      ['remora_proxy_failovers_total{upstream="api",target="api-dr"} 3'],
      'each failover is counted, by upstream and target',
    );
    const clusters = web.proxy.clusters() as Array<{ name: string; failover?: string[] }>;
    t.same(
      clusters.map((c) => [c.name, c.failover ?? null]),
      [
        ['api', ['api-dr']],
        ['api-dr', null],
      ],
      '/clusters shows the failover list',
    );

    await apply({ api: [], dr: [] });
    const none = await get(port());
    t.equal(none.status, 503, 'neither has an endpoint: 503');
    t.equal(none.code, 'REMORA_E_PROXY_NO_ENDPOINTS');
    t.match(
      none.app,
      /upstream api has no healthy endpoint/,
      'the error names api, the target called',
    );

    await apply(ports);
    t.same(
      await get(port()),
      { status: 200, app: 'api', code: null },
      'api is back: calls go to it',
    );
  },
);

t.test(
  'http: an api whose lone endpoint keeps failing is ejected, and its calls fail over',
  async (t) => {
    const { web, mesh, ports, port, killApi } = await startHttpMesh(t);
    await web.apply({
      ...web.snapshot,
      version: web.snapshot.version + 1,
      upstreams: [
        failoverUpstream(mesh, ports, 'http', {
          resilience: {
            ...makeUpstream(mesh, 'api', []).resilience,
            maxRetries: 0,
            // the default share (50 %): a lone endpoint may still be ejected, as in Envoy
            outlier: { consecutiveFailures: 1, baseEjectionMs: 60_000, maxEjectionPercent: 50 },
          },
        }),
      ],
    });
    t.equal((await get(port())).app, 'api');
    await killApi();
    const failed = await get(port());
    t.equal(failed.status, 502, 'the call that meets the dead endpoint fails (no retry left)');
    t.same(
      await get(port()),
      { status: 200, app: 'api-dr', code: null },
      'api ejected: api-dr answers',
    );
  },
);

t.test('http2: streams fail over to api-dr', async (t) => {
  const mesh = createMeshCerts();
  const start = (name: string) => startH2AppSidecar(mesh, name, () => name);
  const api = await start('api');
  const dr = await start('api-dr');
  const ports = { api: [api.sc.inboundPort], dr: [dr.sc.inboundPort] };
  const web = await startSidecar(mesh, 'web', {
    upstreams: [failoverUpstream(mesh, ports, 'http2')],
  });
  const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
  client.on('error', () => {});
  t.teardown(async () => {
    client.close();
    await web.proxy.close();
    for (const x of [api, dr]) {
      await x.sc.proxy.close();
      x.app.close();
    }
  });
  const call = () =>
    new Promise<string>((resolve, reject) => {
      const req = client.request({ ':path': '/' });
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => resolve(body));
      req.on('error', reject);
    });
  t.equal(await call(), 'api');
  await web.apply({
    ...web.snapshot,
    version: web.snapshot.version + 1,
    upstreams: [failoverUpstream(mesh, { api: [], dr: ports.dr }, 'http2')],
  });
  t.same([await call(), await call()], ['api-dr', 'api-dr'], 'api has none: api-dr answers');
});

t.test('tcp: connections fail over to api-dr', async (t) => {
  const mesh = createMeshCerts();
  const named = (name: string) => startEchoTcp((s) => s.end(name));
  const apiApp = await named('api');
  const drApp = await named('api-dr');
  const api = await startSidecar(mesh, 'api', { appPort: apiApp.port, protocol: 'tcp' });
  const dr = await startSidecar(mesh, 'api-dr', { appPort: drApp.port, protocol: 'tcp' });
  const ports = { api: [api.inboundPort], dr: [dr.inboundPort] };
  const web = await startSidecar(mesh, 'web', {
    upstreams: [failoverUpstream(mesh, ports, 'tcp')],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await api.proxy.close();
    await dr.proxy.close();
    apiApp.close();
    drApp.close();
  });
  const read = async (): Promise<string> => {
    const s = net.connect(web.proxy.addresses().upstreams.api!.port, '127.0.0.1');
    let got = '';
    s.on('data', (c: Buffer) => (got += c.toString()));
    await once(s, 'end');
    s.destroy();
    return got;
  };
  t.equal(await read(), 'api');
  await web.apply({
    ...web.snapshot,
    version: web.snapshot.version + 1,
    upstreams: [failoverUpstream(mesh, { api: [], dr: ports.dr }, 'tcp')],
  });
  t.equal(await read(), 'api-dr', 'api has none: the connection reaches api-dr');
  t.same(await failovers(web), ['remora_proxy_failovers_total{upstream="api",target="api-dr"} 1']);
});

t.test('tcp: a drain waits for a connection that failed over', async (t) => {
  const mesh = createMeshCerts();
  const drApp = await startEchoTcp();
  const dr = await startSidecar(mesh, 'api-dr', { appPort: drApp.port, protocol: 'tcp' });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [failoverUpstream(mesh, { api: [], dr: [dr.inboundPort] }, 'tcp')],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await dr.proxy.close();
    drApp.close();
  });
  const s = net.connect(web.proxy.addresses().upstreams.api!.port, '127.0.0.1');
  s.on('error', () => {});
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString()));
  s.write('one');
  await waitFor('the echo through api-dr', () => got === 'ONE', 5000);
  let drained = false;
  const drain = web.proxy.drain(10_000).then(() => (drained = true));
  s.write('two');
  await waitFor('the echo while draining', () => got === 'ONETWO', 5000);
  t.notOk(drained, 'the drain waits for the failed-over connection');
  s.destroy();
  await drain;
  t.ok(drained, 'and ends once it is closed');
});
