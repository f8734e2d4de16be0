// JWT authentication end to end: a jwt-provider entry in Consul whose keys the agent fetches from
// a remote JWKS URI, an intention requiring its tokens made with the CLI, and real nats-server,
// devconsul, control, agent and proxies between web and api.
import t from 'tap';
import { createServer } from 'node:http';
import { request } from 'node:http';
import { runRemora } from '../../helpers/cli.ts';
import { makeKey, signToken } from '../../helpers/jwt.ts';
import {
  OPERATOR_TOKEN,
  apiDefinition,
  putConfig,
  startMesh,
  waitFor,
  webDefinition,
  type Mesh,
} from './harness.ts';

t.setTimeout(180_000);

const key = makeKey('ES256', 'k1');
const other = makeKey('ES256', 'k1');

/** A call as web's app makes it: to web's upstream listener for api. */
function callApi(
  mesh: Mesh,
  token?: string,
): Promise<{ status: number; error: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `http://127.0.0.1:${mesh.ports.apiLocal}/`,
      { agent: false, headers: token ? { authorization: `Bearer ${token}` } : {}, timeout: 5000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            error: String(res.headers['x-remora-error'] ?? ''),
            body,
          }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

t.test('an intention requiring a JWT from a remote key set, end to end', async (t) => {
  // the issuer's key set, served on loopback
  let jwksFetches = 0;
  const jwks = createServer((_req, res) => {
    jwksFetches++;
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ keys: [key.jwk] }));
  });
  await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => jwks.close(() => r())));
  const jwksUri = `http://127.0.0.1:${(jwks.address() as { port: number }).port}/.well-known/jwks.json`;

  const mesh = await startMesh(t);
  const env = { REMORA_CLI_NATS_SERVERS: mesh.nats.url, REMORA_CLI_OPERATOR_TOKEN: OPERATOR_TOKEN };
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition('api.json', apiDefinition(mesh.ports));
  await putConfig(mesh, {
    Kind: 'jwt-provider',
    Name: 'login',
    Issuer: 'https://login.example',
    JSONWebKeySet: { Remote: { URI: jwksUri, CacheDuration: '5m', FetchAsynchronously: true } },
  });
  const policy = await runRemora(['intention', 'policy', '--default', 'deny'], { env });
  t.equal(policy.code, 0, policy.stderr);
  const created = await runRemora(
    ['intention', 'create', 'web', 'api', '--jwt', '{"providers":[{"name":"login"}]}'],
    { env },
  );
  t.equal(created.code, 0, created.stderr);
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());

  const token = signToken(key, {
    iss: 'https://login.example',
    sub: 'web-batch',
    exp: Math.floor(Date.now() / 1000) + 600,
  });
  const allowed = await waitFor(
    'a call with a valid token to pass',
    async () => {
      const r = await callApi(mesh, token).catch(() => null);
      return r?.status === 200 ? r : null;
    },
    120_000,
    200,
  ).catch(async (err: unknown) => {
    t.comment(await mesh.proxyLogs());
    throw err;
  });
  t.match(allowed.body, /api-1/, 'the api app answered');
  t.ok(jwksFetches >= 1, 'the agent fetched the key set');

  const none = await callApi(mesh);
  t.equal(none.status, 401, 'no token: 401');
  t.equal(none.error, 'REMORA_E_PROXY_JWT_MISSING');
  t.match(none.body, /needs a valid JWT from provider login/);

  const forged = await callApi(mesh, signToken(other, { iss: 'https://login.example' }));
  t.equal(forged.status, 401, 'a token the issuer did not sign: 401');
  t.equal(forged.error, 'REMORA_E_PROXY_JWT_INVALID');

  // a bad entry is reported by the agent, naming the field, and left out
  await putConfig(mesh, {
    Kind: 'jwt-provider',
    Name: 'broken',
    JSONWebKeySet: {
      Local: { JWKS: Buffer.from('{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}').toString('base64') },
    },
  });
  const problem = await waitFor(
    'the agent to report the bad entry',
    async () =>
      (await mesh.status()).problems.find((p) => /jwt-provider broken/.test(p.message)) ?? null,
    30_000,
    200,
  );
  t.equal(problem.code, 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID');
  t.match(problem.message, /JSONWebKeySet\.Local\.JWKS .*key #1 has kty "oct"/);
  t.equal((await callApi(mesh, token)).status, 200, 'the good provider keeps working');
});
