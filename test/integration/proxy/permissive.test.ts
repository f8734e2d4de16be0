// Permissive mutual TLS through real sidecars over real mTLS: a caller outside the mesh reaches
// api's app through api's sidecar port in plain HTTP, while mesh callers still go over mTLS with
// intentions enforced; in strict mode (the default) the plain caller is refused.
//   plain caller ─────────────── plain ──┐
//   web's app → web's sidecar ── mTLS ───┼─→ api's sidecar → api's app
//   ops's app → ops's sidecar ── mTLS ───┘   (intentions: web allowed, ops denied)
import t from 'tap';
import net from 'node:net';
import type { ProxySnapshot } from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import { request, startEchoApp, startSidecar, type Sidecar } from './mesh.ts';

const mesh = createMeshCerts();

const intentions: Partial<ProxySnapshot['intentions']> = {
  defaultPolicy: 'deny',
  intentions: [
    { source: 'web', destination: 'api', action: 'allow' },
    { source: 'ops', destination: 'api', action: 'deny' },
  ],
};

/** api's sidecar switched to `mode` by a new snapshot, as the agent sends it. */
async function setMode(api: Sidecar, mode: 'strict' | 'permissive'): Promise<void> {
  const { mutualTlsMode: _old, ...inbound } = api.snapshot.inbound;
  await api.apply({
    ...api.snapshot,
    version: api.snapshot.version + 1,
    inbound: mode === 'permissive' ? { ...inbound, mutualTlsMode: 'permissive' } : inbound,
  });
}

/** One plain HTTP/1.1 request straight to `port`: the status line, or how the connection ended. */
function plainCall(port: number, path: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.on('connect', () =>
      s.write(`GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`),
    );
    s.on('data', (c: Buffer) => (out += c.toString('latin1')));
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code ?? e.message}`));
    s.on('close', () => resolve(out === '' ? 'closed without an answer' : out));
  });
}

async function plainCount(sc: Sidecar): Promise<number> {
  const m = /remora_proxy_inbound_plain_connections_total (\d+)/.exec(
    await sc.proxy.metrics.registry.metrics(),
  );
  return m ? Number(m[1]) : 0;
}

async function denials(sc: Sidecar): Promise<number> {
  const m = /remora_proxy_intention_denials_total\{layer="l4",enforced="true"\} (\d+)/.exec(
    await sc.proxy.metrics.registry.metrics(),
  );
  return m ? Number(m[1]) : 0;
}

t.test(
  'permissive: a plain caller reaches the app, mesh callers still meet mTLS and intentions',
  async (t) => {
    const app = await startEchoApp();
    t.teardown(() => app.close());
    const api = await startSidecar(mesh, 'api', {
      appPort: app.port,
      protocol: 'http',
      intentions,
    });
    t.teardown(() => api.proxy.close());
    const upstream = [makeUpstream(mesh, 'api', [api.inboundPort], { protocol: 'http' })];
    const web = await startSidecar(mesh, 'web', { upstreams: upstream });
    t.teardown(() => web.proxy.close());
    const ops = await startSidecar(mesh, 'ops', { upstreams: upstream });
    t.teardown(() => ops.proxy.close());
    const via = (sc: Sidecar, path: string) =>
      request(`http://127.0.0.1:${sc.proxy.addresses().upstreams.api!.port}${path}`);

    // strict, the default: the plain caller is refused, the mesh works
    const refused = await plainCall(api.inboundPort, '/strict');
    t.notMatch(refused, /^HTTP\/1\.1/, `strict: the plain caller gets no HTTP answer (${refused})`);
    t.equal(app.hits, 0, 'and nothing reached the app');
    t.equal((await via(web, '/mesh')).status, 200, 'web reaches api over mTLS');

    await setMode(api, 'permissive');
    const plain = await plainCall(api.inboundPort, '/onboarding');
    t.match(plain, /^HTTP\/1\.1 200 /, 'permissive: the plain caller reaches the app');
    t.match(plain, /"url":"\/onboarding"/);
    t.match(plain, /"xfcc":null/, 'with no mesh identity');
    t.equal(await plainCount(api), 1, 'counted as a plain connection');

    const fromWeb = await via(web, '/mesh');
    t.equal(fromWeb.status, 200, 'web still reaches api over mTLS');
    t.match(
      (JSON.parse(fromWeb.body) as { xfcc: string | null }).xfcc,
      /URI=spiffe:\/\/[^;]+\/svc\/web$/,
      "over mTLS the app still learns web's identity",
    );
    const before = await denials(api);
    const fromOps = await via(ops, '/mesh');
    t.equal(
      fromOps.status,
      403,
      "ops, which an intention denies, is still refused by api's sidecar",
    );
    t.equal(fromOps.headers['x-remora-error'], 'REMORA_E_PROXY_INTENTION_DENIED');
    t.ok((await denials(api)) > before, 'the denial is counted by api');
    t.equal(await plainCount(api), 1, 'mesh calls are not plain ones');

    // back to strict: the plain caller is refused again, the mesh keeps working
    await setMode(api, 'strict');
    const hits = app.hits;
    t.notMatch(await plainCall(api.inboundPort, '/again'), /^HTTP\/1\.1/, 'strict again: refused');
    t.equal(app.hits, hits);
    t.equal((await via(web, '/mesh')).status, 200);
  },
);
