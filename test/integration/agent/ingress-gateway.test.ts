// An ingress gateway run by a real agent (docs/gateways.md): real devconsul, nats-server,
// control, agent, proxies and demo apps. A caller outside the mesh reaches api through the
// gateway by Host and echo through a TCP listener; intentions decide with the gateway's identity;
// an unknown Host gets the coded 404; a changed entry applies live; with TLS enabled, a caller
// trusting the mesh root (`remora ca roots --pem`) reaches api over HTTPS by a host of the entry.
import t from 'tap';
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { runRemora } from '../../helpers/cli.ts';
import { freePort } from '../../helpers/nats.ts';
import {
  apiDefinition,
  echoDefinition,
  httpGet,
  putConfig,
  startMesh,
  waitFor,
  cliEnv,
  tcpExchange,
} from './harness.ts';

t.setTimeout(180_000);

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One GET with `send` (node:http's or node:https's request), on a fresh connection. */
function getWith(
  send: (o: RequestOptions, cb: (res: IncomingMessage) => void) => ClientRequest,
  options: RequestOptions,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = send({ path: '/', agent: false, timeout: 5000, ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** One GET to the gateway's port with `host` as its Host header. */
const get = (port: number, host: string, path = '/'): Promise<Answer> =>
  getWith(request, { host: '127.0.0.1', port, path, headers: { host } });

/** One HTTPS GET to the gateway's port for `host` (SNI and Host), trusting only `ca`. */
const httpsGet = (port: number, host: string, ca: string): Promise<Answer> =>
  getWith(httpsRequest, { host: '127.0.0.1', port, servername: host, headers: { host }, ca });

async function apiThroughGateway(port: number, host: string): Promise<string | null> {
  try {
    const r = await get(port, host);
    if (r.status !== 200) return null;
    const a = JSON.parse(r.body) as { instance: string; peer: string | null };
    return `${a.instance} ${a.peer}`;
  } catch {
    return null;
  }
}

t.test('outside callers reach mesh services through an ingress gateway', async (t) => {
  const mesh = await startMesh(t);
  const [gwPort, httpPort, tcpPort, newPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  // as with Consul, a listener's services must speak its protocol
  await putConfig(mesh, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
  await putConfig(mesh, {
    Kind: 'ingress-gateway',
    Name: 'ingress',
    Listeners: [
      {
        Port: httpPort,
        Protocol: 'http',
        Services: [
          {
            Name: 'api',
            Hosts: ['api.example.com'],
            ResponseHeaders: { Add: { 'x-entered-by': 'ingress' } },
          },
        ],
      },
      { Port: tcpPort, Protocol: 'tcp', Services: [{ Name: 'echo' }] },
    ],
  });
  await mesh.writeDefinition('api.json', apiDefinition(mesh.ports));
  await mesh.writeDefinition('echo.json', echoDefinition(mesh.ports));
  await mesh.writeDefinition('ingress.json', {
    service: { kind: 'ingress-gateway', name: 'ingress', port: gwPort },
  });
  const agent = mesh.startAgent();
  const logs = async () => `${agent.output().slice(-4000)}\n${await mesh.proxyLogs()}`;

  const spiffe = await waitFor(
    'api through the gateway by Host',
    () => apiThroughGateway(httpPort, 'api.example.com:' + httpPort),
    60_000,
    200,
  ).catch(async (err: unknown) => {
    t.comment(await logs());
    throw err;
  });
  t.match(
    spiffe,
    /^api-1 spiffe:\/\/.*\/svc\/ingress$/,
    'api-1 answers; the caller is the gateway',
  );
  const one = await get(httpPort, 'api.example.com');
  t.equal(one.headers['x-entered-by'], 'ingress', 'the entry’s response header change applied');
  t.match(
    JSON.parse(one.body),
    { forwardedFor: '127.0.0.1', forwardedProto: 'http' },
    'the app sees the caller in X-Forwarded-For and http in X-Forwarded-Proto',
  );

  const unknown = await get(httpPort, 'nosuch.example.com');
  t.equal(unknown.status, 404, 'an unknown Host is answered 404');
  t.equal(unknown.headers['x-remora-error'], 'REMORA_E_PROXY_INGRESS_UNKNOWN_HOST');
  t.match(unknown.body, /api\.example\.com/, 'naming the hosts the listener takes');

  t.equal(
    await waitFor('echo through the tcp listener', () => tcpExchange(tcpPort, 'hello'), 30_000),
    'hello',
    'the tcp listener reaches echo',
  );

  // Consul holds the gateway as Consul would: kind ingress-gateway, passing once its proxy is ready
  const health = await waitFor(
    'the gateway passing in Consul',
    async () => {
      const r = await httpGet(`${mesh.consul.url}/v1/health/service/ingress?passing`);
      const list = r.json as { Service: { Kind: string; Port: number; Meta: object } }[];
      return Array.isArray(list) && list.length === 1 ? list[0]! : null;
    },
    30_000,
  );
  t.equal(health.Service.Kind, 'ingress-gateway');
  t.equal(health.Service.Port, gwPort);
  t.match(health.Service.Meta, { 'remora-node': 'node-a' });

  const status = await mesh.status();
  const gw = status.instances.find((i) => i.id === 'ingress');
  t.equal(gw?.kind, 'ingress-gateway', 'the agent’s status lists the gateway');
  t.same(
    gw?.listeners?.map((l) => [l.port, l.protocol, l.services.map((s) => s.name)]),
    [
      [httpPort, 'http', ['api']],
      [tcpPort, 'tcp', ['echo']],
    ],
  );
  const cli = await runRemora(['status', '--agent-admin', `http://127.0.0.1:${mesh.adminPort}`], {
    env: cliEnv(mesh),
  });
  t.match(
    cli.stdout,
    new RegExp(
      `ingress gateway ingress:\\n  port ${httpPort} http → api \\(api\\.example\\.com\\)\\n  port ${tcpPort} tcp → echo`,
    ),
    '`remora status` lists the gateway’s listeners',
  );

  // intentions decide with the gateway's identity as the source
  const env = cliEnv(mesh);
  t.equal((await runRemora(['intention', 'create', 'ingress', 'api', '--deny'], { env })).code, 0);
  t.equal((await runRemora(['intention', 'create', 'ingress', 'echo', '--deny'], { env })).code, 0);
  const denied = await waitFor(
    'the denial to apply',
    async () => {
      const r = await get(httpPort, 'api.example.com').catch(() => null);
      return r?.status === 403 ? r : null;
    },
    30_000,
  );
  t.equal(denied.headers['x-remora-error'], 'REMORA_E_PROXY_INTENTION_DENIED', 'api: 403');
  const explain = await runRemora(['explain', 'ingress', 'api'], { env });
  t.match(explain.stdout, /ingress → api: DENIED/, '`remora explain ingress api` says why');
  t.equal(
    await waitFor(
      'the tcp denial',
      async () => ((await tcpExchange(tcpPort, 'hello')) === null ? 'closed' : null),
      30_000,
    ),
    'closed',
    'echo: the connection is closed without an answer',
  );
  await runRemora(['intention', 'delete', 'ingress', 'api'], { env });
  await runRemora(['intention', 'delete', 'ingress', 'echo'], { env });
  await waitFor('allowed again', () => apiThroughGateway(httpPort, 'api.example.com'), 30_000);

  // a changed entry applies live: a new listener reaching every http service by default host
  await putConfig(mesh, {
    Kind: 'ingress-gateway',
    Name: 'ingress',
    Listeners: [
      { Port: httpPort, Protocol: 'http', Services: [{ Name: 'api', Hosts: ['api.example.com'] }] },
      { Port: newPort, Protocol: 'http', Services: [{ Name: '*' }] },
    ],
  });
  const viaWildcard = await waitFor(
    'the new listener',
    () => apiThroughGateway(newPort, 'api.ingress.example.org'),
    30_000,
    200,
  );
  t.match(viaWildcard, /^api-1 /, 'the new listener reaches api by its default host');
  t.equal(
    await waitFor(
      'the tcp listener to close',
      async () => ((await tcpExchange(tcpPort, 'x')) === null ? 'closed' : null),
      30_000,
    ),
    'closed',
    'the listener the entry dropped is closed',
  );
  t.equal(
    await apiThroughGateway(httpPort, 'api.example.com'),
    spiffe,
    'the kept listener serves on',
  );

  // TLS on the gateway's listeners: its certificate from the mesh CA covers the entry's hosts;
  // an SDS block is reported, not served; a listener whose TLS cannot be served is left out
  const [badPort] = [await freePort()];
  await putConfig(mesh, {
    Kind: 'ingress-gateway',
    Name: 'ingress',
    TLS: { Enabled: true, SDS: { ClusterName: 'sds-cluster', CertResource: 'gateway-cert' } },
    Listeners: [
      { Port: httpPort, Protocol: 'http', Services: [{ Name: 'api', Hosts: ['api.example.com'] }] },
      {
        Port: badPort,
        Protocol: 'http',
        TLS: { TLSMaxVersion: 'TLSv1_1' },
        Services: [{ Name: 'api', Hosts: ['api.example.com'] }],
      },
    ],
  });
  const roots = await runRemora(['ca', 'roots', '--pem'], { env });
  t.match(roots.stdout, /^-----BEGIN CERTIFICATE-----/, '`remora ca roots --pem` gives the root');
  const overTls = await waitFor(
    'api over HTTPS through the gateway',
    () => httpsGet(httpPort, 'api.example.com', roots.stdout).catch(() => null),
    60_000,
    200,
  ).catch(async (err: unknown) => {
    t.comment(await logs());
    throw err;
  });
  t.equal(overTls.status, 200, 'a caller trusting the mesh root gets in by a host of the entry');
  t.match(
    JSON.parse(overTls.body),
    { instance: 'api-1', peer: /\/svc\/ingress$/, forwardedProto: 'https' },
    'api answers the gateway; the app sees X-Forwarded-Proto https',
  );
  t.equal(
    await get(httpPort, 'api.example.com').then(
      (r) => r.status,
      () => 'refused',
    ),
    'refused',
    'plain HTTP is no longer served on the TLS port',
  );
  const problems = await waitFor(
    'the TLS problems in the status',
    async () => {
      const p = (await mesh.status()).problems;
      const invalid = p.find((x) => x.code === 'REMORA_E_AGENT_INGRESS_TLS_INVALID');
      const sds = p.find((x) => x.code === 'REMORA_E_AGENT_INGRESS_SDS_UNSUPPORTED');
      return invalid && sds ? { invalid, sds } : null;
    },
    30_000,
  );
  t.match(
    problems.invalid.message,
    /Listeners\[1\]\.TLS\.TLSMaxVersion TLSv1_1 is below TLS 1\.2.*port \d+ is left out/,
    'the listener whose TLS cannot be served is named, with its field',
  );
  t.match(problems.sds.message, /TLS\.SDS asks for certificates from an external SDS server/);
  const tlsStatus = await runRemora(
    ['status', '--agent-admin', `http://127.0.0.1:${mesh.adminPort}`],
    { env },
  );
  t.match(
    tlsStatus.stdout,
    new RegExp(`port ${httpPort} http over TLS → api \\(api\\.example\\.com\\)`),
    '`remora status` says the listener serves TLS',
  );
  t.equal(
    await tcpExchange(badPort, 'GET / HTTP/1.1\r\n\r\n'),
    null,
    'that listener is not served, not even in plain',
  );
  await agent.stop();
});
