// The mesh entry's TLS (docs/agent.md, "Mesh TLS"): written to the catalog, it reaches every
// running sidecar, which then refuses what its minimum excludes; directions that cannot meet are
// reported and the defaults stay. Real agent, devconsul, NATS, control, proxies.
import t from 'tap';
import tls from 'node:tls';
import {
  apiDefinition,
  putConfig,
  startMesh,
  waitFor,
  webDefinition,
  webReachesApi,
} from './harness.ts';

t.setTimeout(120_000);

/**
 * Whether `port` speaks TLS 1.2: a TLS 1.2-only handshake without a client certificate is refused
 * with a protocol-version alert when it does not (and reset by the sidecar after the handshake,
 * for want of a certificate, when it does).
 */
function speaksTls12(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tls.connect({
      port,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      maxVersion: 'TLSv1.2',
    });
    s.once('secureConnect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(!/PROTOCOL_VERSION/.test(e.code ?? '')));
  });
}

t.test("the mesh entry's TLS minimum and HTTP settings reach every running proxy", async (t) => {
  const mesh = await startMesh(t);
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition('api-1.json', apiDefinition(mesh.ports, 1));
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());
  await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
  t.equal(await speaksTls12(mesh.ports.api1Sidecar), true, 'TLS 1.2 is spoken by default');

  await putConfig(mesh, {
    Kind: 'mesh',
    Name: 'mesh',
    TLS: { Incoming: { TLSMinVersion: 'TLSv1_3' } },
  });
  await waitFor(
    "api's sidecar to refuse TLS 1.2",
    async () => !(await speaksTls12(mesh.ports.api1Sidecar)),
    30_000,
    200,
  );
  t.ok(await webReachesApi(mesh), 'the sidecars go on over TLS 1.3');

  // directions that cannot meet: reported, and the mesh keeps working on the defaults
  await putConfig(mesh, {
    Kind: 'mesh',
    Name: 'mesh',
    TLS: { Incoming: { TLSMinVersion: 'TLSv1_3' }, Outgoing: { TLSMaxVersion: 'TLSv1_2' } },
  });
  const problem = await waitFor(
    'the problem in status',
    async () => (await mesh.status()).problems.find((p) => /share no TLS version/.test(p.message)),
    30_000,
    100,
  );
  t.equal(problem.code, 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID');
  await waitFor('TLS 1.2 again', () => speaksTls12(mesh.ports.api1Sidecar), 30_000, 200);
  t.ok(await webReachesApi(mesh), 'calls go on');
  t.match((await webReachesApi(mesh))?.api?.peer, /\/svc\/web$/, "api's app is told who called");

  await putConfig(mesh, {
    Kind: 'mesh',
    Name: 'mesh',
    HTTP: { SanitizeXForwardedClientCert: true },
  });
  await waitFor(
    "api's app to get no x-forwarded-client-cert",
    async () => (await webReachesApi(mesh))?.api?.peer === null,
    30_000,
    200,
  );
  t.pass('with HTTP.SanitizeXForwardedClientCert, no longer');
});
