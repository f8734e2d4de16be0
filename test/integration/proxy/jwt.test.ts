// Intentions requiring a JWT, enforced by the destination's sidecar between two real sidecars
// over mTLS: the caller's app sends a token, web's sidecar carries it, api's sidecar verifies it.
import t from 'tap';
import http2 from 'node:http2';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { decodeProxySnapshot, type ProxySnapshot } from '../../../lib/proxy-api/index.ts';
import type { Intention } from '../../../lib/intentions/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import { makeKey, signToken } from '../../helpers/jwt.ts';
import { request, startEchoApp, startSidecar, startTwoSidecars, type Sidecar } from './mesh.ts';

const issuerKey = makeKey('RS256', 'issuer-1');
const strangerKey = makeKey('RS256', 'issuer-1');
const ISSUER = 'https://login.example';

const claims = (more: Record<string, unknown> = {}) => ({
  iss: ISSUER,
  aud: 'api',
  sub: 'alice',
  exp: Math.floor(Date.now() / 1000) + 600,
  ...more,
});

/** web → api: /admin needs role admin, anything else any valid token; the default denies. */
const intentions: Intention[] = [
  {
    source: 'web',
    destination: 'api',
    permissions: [
      {
        action: 'allow',
        http: { pathPrefix: '/admin' },
        jwt: { providers: [{ name: 'login', verifyClaims: [{ path: ['role'], value: 'admin' }] }] },
      },
      { action: 'deny', http: { pathPrefix: '/admin' } },
      { action: 'allow', http: { pathPrefix: '/' }, jwt: { providers: [{ name: 'login' }] } },
    ],
  },
];

/** The snapshot as the agent sends it (through the decoder the proxy's socket uses). */
async function withProvider(sc: Sidecar): Promise<void> {
  const next: ProxySnapshot = {
    ...sc.snapshot,
    version: sc.snapshot.version + 1,
    jwtProviders: [
      {
        name: 'login',
        issuer: ISSUER,
        audiences: ['api'],
        keys: [issuerKey.jwk],
        locations: [{ header: { name: 'Authorization', valuePrefix: 'Bearer ' } }],
        forwarding: { headerName: 'x-jwt-payload' },
        clockSkewSeconds: 30,
        cacheSize: 100,
      },
    ],
  };
  await sc.apply(decodeProxySnapshot(JSON.parse(JSON.stringify(next))));
}

t.test('HTTP/1.1: tokens decide, claims pick the permission, failures are 401', async (t) => {
  const seen: Array<Record<string, string | undefined>> = [];
  const app = await startEchoApp('api', (req, res) => {
    seen.push({
      authorization: req.headers.authorization,
      payload: req.headers['x-jwt-payload'] as string | undefined,
    });
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello ${req.url}`);
  });
  const m = await startTwoSidecars({ app, intentions: { defaultPolicy: 'deny', intentions } });
  t.teardown(() => m.close());
  await withProvider(m.api);
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  const ok = await request(m.url('/things'), { headers: bearer(signToken(issuerKey, claims())) });
  t.equal(ok.status, 200, 'a valid token is allowed');
  t.equal(ok.body, 'hello /things');
  t.equal(seen[0]?.authorization, undefined, 'the token is not forwarded to the app');
  t.same(
    JSON.parse(Buffer.from(seen[0]!.payload!, 'base64url').toString()).sub,
    'alice',
    'the verified payload is, in the header the provider names',
  );

  const none = await request(m.url('/things'));
  t.equal(none.status, 401, 'no token: 401');
  t.equal(none.headers['x-remora-error'], 'REMORA_E_PROXY_JWT_MISSING');
  t.equal(none.headers['www-authenticate'], 'Bearer realm="api"');
  t.match(none.body, /web → api needs a valid JWT from provider login/);
  t.match(none.body, /no token in header Authorization: Bearer <token>/);

  const forged = signToken(strangerKey, claims());
  const bad = await request(m.url('/things'), { headers: bearer(forged) });
  t.equal(bad.status, 401, 'a token signed by another key: 401');
  t.equal(bad.headers['x-remora-error'], 'REMORA_E_PROXY_JWT_INVALID');
  t.equal(bad.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"');
  t.match(bad.body, /signature does not verify with the keys of provider login/);
  t.notOk(bad.body.includes(forged.split('.')[1]!), 'the answer does not echo the token');

  const expired = await request(m.url('/things'), {
    headers: bearer(signToken(issuerKey, claims({ exp: Math.floor(Date.now() / 1000) - 120 }))),
  });
  t.equal(expired.status, 401);
  t.match(expired.body, /the token expired at .*get a new token/);
  const wrongAud = await request(m.url('/things'), {
    headers: bearer(signToken(issuerKey, claims({ aud: 'billing' }))),
  });
  t.equal(wrongAud.status, 401);
  t.match(wrongAud.body, /audience \(aud\) names none of "api"/);

  const reader = await request(m.url('/admin/users'), {
    headers: bearer(signToken(issuerKey, claims({ role: 'reader' }))),
  });
  t.equal(reader.status, 403, 'a valid token without the admin claim meets the deny');
  t.equal(reader.headers['x-remora-error'], 'REMORA_E_PROXY_INTENTION_DENIED');
  t.match(reader.body, /permission #2 deny/);
  const admin = await request(m.url('/admin/users'), {
    headers: bearer(signToken(issuerKey, claims({ role: 'admin' }))),
  });
  t.equal(admin.status, 200, 'the admin claim allows /admin');
  t.equal(admin.body, 'hello /admin/users');

  t.equal(app.hits, 2, 'only the allowed calls reached the app');
  const metrics = await m.api.proxy.metrics.registry.metrics();
  t.match(metrics, 'remora_proxy_jwt_failures_total{provider="login",reason="missing"} 1');
  t.match(metrics, 'remora_proxy_jwt_failures_total{provider="login",reason="bad_signature"} 1');
  t.match(metrics, 'remora_proxy_jwt_failures_total{provider="login",reason="expired"} 1');
  t.match(metrics, 'remora_proxy_jwt_failures_total{provider="login",reason="audience"} 1');
  t.match(metrics, 'remora_proxy_jwt_failures_total{provider="login",reason="claims"} 1');
  t.match(metrics, /remora_proxy_intention_denials_total\{layer="l7",enforced="true"\} 5/);
});

t.test('a provider the proxy does not know denies with a reason to act on', async (t) => {
  const m = await startTwoSidecars({
    intentions: {
      defaultPolicy: 'deny',
      intentions: [
        {
          source: 'web',
          destination: 'api',
          action: 'allow',
          jwt: { providers: [{ name: 'okta' }] },
        },
      ],
    },
  });
  t.teardown(() => m.close());
  const r = await request(m.url('/'), {
    headers: { authorization: `Bearer ${signToken(issuerKey, claims())}` },
  });
  t.equal(r.status, 401);
  t.equal(r.headers['x-remora-error'], 'REMORA_E_PROXY_JWT_INVALID');
  t.match(r.body, /no jwt-provider config entry named okta is known to this proxy/);
  t.equal(m.app.hits, 0);
});

t.test('HTTP/2 and gRPC: the same intentions hold per stream', async (t) => {
  const h2app = http2.createServer();
  h2app.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200, 'x-saw-auth': String(headers.authorization ?? 'none') });
    stream.end(`h2 ${String(headers[':path'])}`);
  });
  h2app.listen(0, '127.0.0.1');
  await once(h2app, 'listening');
  const appPort = (h2app.address() as AddressInfo).port;
  const mesh = createMeshCerts();
  const api = await startSidecar(mesh, 'api', {
    appPort,
    protocol: 'http2',
    intentions: { defaultPolicy: 'deny', intentions },
  });
  await withProvider(api);
  const web = await startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', [api.inboundPort], { protocol: 'http2' })],
  });
  const client = http2.connect(`http://127.0.0.1:${web.proxy.addresses().upstreams.api!.port}`);
  t.teardown(async () => {
    client.close();
    await web.proxy.close();
    await api.proxy.close();
    h2app.close();
  });
  const call = (path: string, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }>(
      (resolve, reject) => {
        const req = client.request({ ':method': 'GET', ':path': path, ...headers });
        let body = '';
        let got: http2.IncomingHttpHeaders = {};
        req.on('response', (h) => (got = h));
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => resolve({ status: Number(got[':status']), headers: got, body }));
        req.on('error', reject);
        req.end();
      },
    );
  const ok = await call('/x', { authorization: `Bearer ${signToken(issuerKey, claims())}` });
  t.equal(ok.status, 200);
  t.equal(ok.body, 'h2 /x');
  t.equal(ok.headers['x-saw-auth'], 'none', 'the token stays with the sidecar');
  const none = await call('/x');
  t.equal(none.status, 401);
  t.equal(none.headers['x-remora-error'], 'REMORA_E_PROXY_JWT_MISSING');
  t.equal(none.headers['www-authenticate'], 'Bearer realm="api"');
  const reader = await call('/admin', {
    authorization: `Bearer ${signToken(issuerKey, claims({ role: 'reader' }))}`,
  });
  t.equal(reader.status, 403);
  const grpc = await call('/pkg.Svc/Call', { 'content-type': 'application/grpc' });
  t.equal(grpc.status, 200, 'gRPC answers carry the status in grpc-status');
  t.equal(grpc.headers['grpc-status'], '16', 'UNAUTHENTICATED');
  t.equal(grpc.headers['x-remora-error'], 'REMORA_E_PROXY_JWT_MISSING');
});
