import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { waitFor } from '../../../lib/util/index.ts';
import { DEFAULT_RESILIENCE } from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeSnapshot, makeUpstream } from '../../helpers/mesh-certs.ts';
import { request, startEchoApp, startSidecar, startTwoSidecars } from './mesh.ts';

/** A bounded load loop: `total` GETs with `concurrency` keep-alive connections; returns status counts. */
async function load(
  url: string,
  total: number,
  concurrency: number,
  during?: (done: number) => Promise<void> | void,
) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const statuses = new Map<string, number>();
  let started = 0;
  let done = 0;
  let fired = false;
  const deadline = Date.now() + 60_000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (started < total && Date.now() < deadline) {
        started++;
        let key: string;
        try {
          const r = await request(url, { agent });
          key =
            String(r.status) +
            (r.headers['x-remora-error'] ? ` ${String(r.headers['x-remora-error'])}` : '');
        } catch (e) {
          key = `error ${(e as Error).message}`;
        }
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
        done++;
        if (!fired && during && done >= total / 3) {
          fired = true;
          await during(done);
        }
      }
    }),
  );
  agent.destroy();
  return Object.fromEntries(statuses);
}

t.test('an endpoint killed under load is absorbed by retries and ejected', async (t) => {
  const mesh = createMeshCerts();
  const app1 = await startEchoApp('api-1');
  const app2 = await startEchoApp('api-2');
  const api1 = await startSidecar(mesh, 'api', { appPort: app1.port });
  const api2 = await startSidecar(mesh, 'api', { appPort: app2.port });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [
      makeUpstream(mesh, 'api', [api1.inboundPort, api2.inboundPort], {
        loadBalancer: 'round_robin',
        resilience: {
          ...structuredClone(DEFAULT_RESILIENCE),
          outlier: { consecutiveFailures: 2, baseEjectionMs: 30_000, maxEjectionPercent: 50 },
        },
      }),
    ],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await api1.proxy.close();
    await app1.close();
    await app2.close();
  });
  const url = `http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}/`;
  const statuses = await load(url, 300, 8, async () => {
    await api2.proxy.close(); // the endpoint dies: listener gone, open connections reset
  });
  t.same(statuses, { '200': 300 }, 'every request succeeded');
  const text = await web.proxy.metrics.registry.metrics();
  t.match(
    text,
    /remora_proxy_retries_total\{upstream="api",reason="[a-z_0-9]+"\} [1-9]/,
    'retries happened',
  );
  t.match(
    text,
    /remora_proxy_outlier_ejections_total\{upstream="api"\} 1/,
    'the dead endpoint was ejected',
  );
  const clusters = web.proxy.clusters() as Array<{
    endpoints: Array<{ id: string; state: string }>;
  }>;
  t.equal(clusters[0]!.endpoints.find((e) => e.id === 'api-2')!.state, 'ejected');
  t.ok(app1.hits > 150 && app2.hits > 0, 'load was spread before the failure');
});

t.test(
  'a certificate rotated under load fails no request, keeps open connections and serves the new certificate to new handshakes',
  async (t) => {
    const m = await startTwoSidecars();
    t.teardown(() => m.close());
    const connsBefore = async () =>
      /remora_proxy_connections_total\{direction="inbound",service="api"\} (\d+)/.exec(
        await m.api.proxy.metrics.registry.metrics(),
      )?.[1];
    const newApiLeaf = m.mesh.leaf('api');
    const newWebLeaf = m.mesh.leaf('web');
    const statuses = await load(m.url('/'), 300, 8, async () => {
      const before = await connsBefore();
      await m.api.rotate(newApiLeaf);
      await m.web.rotate(newWebLeaf);
      t.equal(
        await connsBefore(),
        before,
        'no new inbound connection was needed right after rotation',
      );
    });
    t.same(statuses, { '200': 300 }, 'no request failed');
    const peerSerial = await new Promise<string>((resolve, reject) => {
      const s = tls.connect(
        {
          host: '127.0.0.1',
          port: m.api.inboundPort,
          ca: [m.mesh.ca.certPem],
          cert: newWebLeaf.certPem,
          key: newWebLeaf.keyPem,
          checkServerIdentity: () => undefined,
        },
        () => {
          resolve(s.getPeerCertificate().serialNumber.toLowerCase());
          s.destroy();
        },
      );
      s.on('error', reject);
    });
    t.equal(
      peerSerial,
      (m.api.proxy.certs() as { leaf: { serialNumber: string } }).leaf.serialNumber.toLowerCase(),
    );
    t.not(
      peerSerial,
      new X509Certificate(m.api.leaf.certPem).serialNumber.toLowerCase(),
      'not the old certificate',
    );
    t.equal(m.api.proxy.status().appliedVersion, 2);
  },
);

t.test('retries go to endpoints the request has not tried yet', async (t) => {
  const mesh = createMeshCerts();
  const app = await startEchoApp('api-3');
  const live = await startSidecar(mesh, 'api', { appPort: app.port });
  const closedPort = () =>
    new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port)); // nothing listens there any more: connections are refused
      });
    });
  const dead1 = await closedPort();
  const dead2 = await closedPort();
  // random() = 0: both P2C draws favour the first eligible endpoint every time, so only the
  // exclusion of every tried endpoint gets the third attempt to the live one
  const web = await startSidecar(mesh, 'web', {
    random: () => 0,
    upstreams: [
      makeUpstream(mesh, 'api', [dead1, dead2, live.inboundPort], {
        loadBalancer: 'least_request',
        resilience: {
          ...structuredClone(DEFAULT_RESILIENCE),
          maxRetries: 2,
          outlier: { consecutiveFailures: 1000, baseEjectionMs: 30_000, maxEjectionPercent: 50 },
        },
      }),
    ],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await live.proxy.close();
    await app.close();
  });
  const url = `http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}/`;
  for (let i = 0; i < 5; i++) {
    const r = await request(url);
    t.equal(r.status, 200, `request ${i + 1}: the third attempt reached the live endpoint`);
  }
});

t.test('an endpoint re-registered at another address under its ID is reached there', async (t) => {
  const mesh = createMeshCerts();
  const [oldApp, newApp] = [await startEchoApp('api-old'), await startEchoApp('api-new')];
  const oldSc = await startSidecar(mesh, 'api', { appPort: oldApp.port });
  const newSc = await startSidecar(mesh, 'api', { appPort: newApp.port });
  const web = await startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', [oldSc.inboundPort])],
  });
  t.teardown(async () => {
    await web.proxy.close();
    await Promise.all([oldSc.proxy.close(), newSc.proxy.close()]);
    await Promise.all([oldApp.close(), newApp.close()]);
  });
  const url = `http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}/`;
  t.match(JSON.parse((await request(url)).body), { app: 'api-old' });
  // the same endpoint ID (api-1), now at the other sidecar's port: the connections web keeps
  // to the old address are not used for it any more
  await web.apply({
    ...web.snapshot,
    version: web.snapshot.version + 1,
    upstreams: [makeUpstream(mesh, 'api', [newSc.inboundPort])],
  });
  const after = [];
  for (let i = 0; i < 4; i++) after.push(JSON.parse((await request(url)).body).app);
  t.same(after, ['api-new', 'api-new', 'api-new', 'api-new'], 'every call reaches the new address');
});

t.test('circuit breakers answer overflow with a coded 503', async (t) => {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  const app = await startEchoApp('slow', (_req, res) => {
    void gate.then(() => res.end('ok'));
  });
  const m = await startTwoSidecars({
    app,
    upstream: {
      resilience: {
        ...structuredClone(DEFAULT_RESILIENCE),
        circuitBreaker: { maxConnections: 10, maxPendingRequests: 10, maxRequests: 1 },
      },
    },
  });
  t.teardown(() => m.close());
  const first = request(m.url('/slow'));
  await waitFor('first request at the app', () => app.hits === 1, 5000);
  const second = await request(m.url('/second'));
  t.equal(second.status, 503);
  t.equal(second.headers['x-remora-error'], 'REMORA_E_PROXY_OVERLOADED');
  t.match(second.body, /requests at the limit of 1/);
  release();
  t.equal((await first).status, 200);
  t.match(
    await m.web.proxy.metrics.registry.metrics(),
    /remora_proxy_circuit_breaker_overflows_total\{upstream="api",limit="requests"\} 1/,
  );
});

t.test('a snapshot that cannot bind is refused and the last good one keeps serving', async (t) => {
  const m = await startTwoSidecars();
  t.teardown(() => m.close());
  const taken = m.api.inboundPort;
  const bad = makeSnapshot(m.mesh, m.web.leaf, {
    version: 9,
    bindPort: taken,
    upstreams: m.web.snapshot.upstreams,
  });
  await t.rejects(m.web.proxy.apply(bad), { code: 'REMORA_E_PROXY_LISTEN_FAILED' });
  t.equal(m.web.proxy.status().appliedVersion, 1);
  t.equal((await request(m.url('/still'))).status, 200);
});
