// A terminating gateway run by a real agent (docs/gateways.md, "Terminating gateways"): real
// devconsul, nats-server, control, agent and proxies. Services outside the mesh — a plain HTTP
// app, a TCP echo and a mutual-TLS HTTPS server, registered in Consul by hand without sidecars —
// are reached by a mesh caller only through the gateway: its upstreams resolve to the gateway
// (Consul's health/connect answers), the gateway presents each service's identity, decides
// intentions with the service as destination and originates plain TCP or TLS.
import t from 'tap';
import net from 'node:net';
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { writeFile, readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runRemora } from '../../helpers/cli.ts';
import { freePort } from '../../helpers/nats.ts';
import { createMeshCerts } from '../../helpers/mesh-certs.ts';
import {
  httpGet,
  putConfig,
  startMesh,
  waitFor,
  type Mesh,
  cliEnv,
  tcpExchange,
} from './harness.ts';

t.setTimeout(180_000);

async function register(mesh: Mesh, body: object): Promise<void> {
  const r = await fetch(`${mesh.consul.url}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify(body),
  });
  if (r.status !== 200) throw new Error(`register refused: ${r.status} ${await r.text()}`);
}

/** A POST's status, null when it got no answer. */
function post(port: number, path: string): Promise<number | null> {
  return new Promise((resolve) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: 'POST', agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? null));
      },
    );
    req.on('error', () => resolve(null));
    req.end('x');
  });
}

t.test('mesh callers reach services outside the mesh through a terminating gateway', async (t) => {
  const mesh = await startMesh(t);
  const dir = await mkdtemp(join(tmpdir(), 'remora-tgw-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const certs = createMeshCerts();
  const server = certs.leaf('secure-db');
  const client = certs.leaf('gateway-client');
  await writeFile(join(dir, 'ca.pem'), certs.ca.certPem);
  await writeFile(join(dir, 'client.pem'), client.certPem);
  await writeFile(join(dir, 'client-key.pem'), client.keyPem);

  // the apps outside the mesh: plain HTTP, TCP echo, HTTPS that wants a client certificate
  const seen: { path: string; tls: boolean }[] = [];
  const plainApp = http.createServer((req, res) => {
    seen.push({ path: req.url ?? '', tls: false });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ app: 'legacy', path: req.url }));
  });
  const echoApp = net.createServer((s) => s.pipe(s));
  const slowTimers = new Set<NodeJS.Timeout>();
  const h2App = http2.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.headers['content-type'] === 'application/grpc') {
      // a gRPC method: one length-prefixed message back, the status in trailers
      req.resume();
      res.setHeader('content-type', 'application/grpc');
      res.addTrailers({ 'grpc-status': '0', 'x-method': req.url ?? '' });
      return res.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
    }
    const answer = () =>
      res.end(JSON.stringify({ app: 'feed', version: req.httpVersion, path: req.url }));
    if (req.url !== '/slow') return answer();
    const timer = setTimeout(() => (slowTimers.delete(timer), answer()), 2_000);
    slowTimers.add(timer);
  });
  const tlsApp = https.createServer(
    {
      cert: server.certPem,
      key: server.keyPem,
      ca: certs.ca.certPem,
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => {
      seen.push({ path: req.url ?? '', tls: true });
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.end(JSON.stringify({ app: 'secure', client: peer.subjectaltname ?? null }));
    },
  );
  const listen = (s: net.Server) =>
    new Promise<number>((resolve) =>
      s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)),
    );
  const [plainPort, echoPort, tlsPort, h2Port] = [
    await listen(plainApp),
    await listen(echoApp),
    await listen(tlsApp),
    await listen(h2App),
  ];
  t.teardown(() => {
    plainApp.closeAllConnections();
    tlsApp.closeAllConnections();
    for (const timer of slowTimers) clearTimeout(timer);
    for (const s of [plainApp, echoApp, tlsApp, h2App]) s.close();
  });
  // registered by hand, as a legacy database would be: no sidecar, no remora-node
  await register(mesh, { Name: 'legacy', ID: 'legacy-1', Address: '127.0.0.1', Port: plainPort });
  await register(mesh, { Name: 'ledger', ID: 'ledger-1', Address: '127.0.0.1', Port: echoPort });
  await register(mesh, { Name: 'secure', ID: 'secure-1', Address: '127.0.0.1', Port: tlsPort });
  await putConfig(mesh, { Kind: 'service-defaults', Name: 'legacy', Protocol: 'http' });
  await putConfig(mesh, { Kind: 'service-defaults', Name: 'secure', Protocol: 'http' });
  await register(mesh, { Name: 'feed', ID: 'feed-1', Address: '127.0.0.1', Port: h2Port });
  await putConfig(mesh, { Kind: 'service-defaults', Name: 'feed', Protocol: 'http2' });
  await register(mesh, { Name: 'rpc', ID: 'rpc-1', Address: '127.0.0.1', Port: h2Port });
  await putConfig(mesh, { Kind: 'service-defaults', Name: 'rpc', Protocol: 'grpc' });
  const missing = join(dir, 'no-such-ca.pem');
  const entry = (services: object[]) =>
    putConfig(mesh, { Kind: 'terminating-gateway', Name: 'tgw', Services: services });
  const linked = [
    { Name: 'legacy' },
    {
      Name: 'secure',
      CAFile: join(dir, 'ca.pem'),
      CertFile: join(dir, 'client.pem'),
      KeyFile: join(dir, 'client-key.pem'),
    },
    { Name: 'broken', CAFile: missing },
    { Name: 'feed' },
    { Name: 'rpc' },
  ];
  await entry([...linked, { Name: 'ledger' }]);

  const [gwPort, callerApp, callerSidecar, legacyLocal, ledgerLocal, secureLocal, feedLocal] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const rpcLocal = await freePort();
  await mesh.writeDefinition('tgw.json', {
    service: { kind: 'terminating-gateway', name: 'tgw', port: gwPort },
  });
  // the caller's app is this test: it calls through its sidecar's upstream listeners
  await mesh.writeDefinition('caller.json', {
    service: {
      name: 'caller',
      port: callerApp,
      connect: {
        sidecar_service: {
          port: callerSidecar,
          proxy: {
            upstreams: [
              { destination_name: 'legacy', local_bind_port: legacyLocal },
              { destination_name: 'ledger', local_bind_port: ledgerLocal },
              { destination_name: 'secure', local_bind_port: secureLocal },
              { destination_name: 'feed', local_bind_port: feedLocal },
              { destination_name: 'rpc', local_bind_port: rpcLocal },
            ],
          },
        },
      },
    },
  });
  // the readiness TTL outlasts the restart below (an agent boots slowly on a loaded box)
  const agentEnv = { REMORA_AGENT_CHECK_TTL_MS: '120000' };
  const agent = mesh.startAgent(agentEnv, ['--keep-proxies']);
  const logs = async () => `${agent.output().slice(-4000)}\n${await mesh.proxyLogs()}`;
  const get = (port: number, path = '/') =>
    httpGet(`http://127.0.0.1:${port}${path}`).catch(() => null);
  /** Calls until an answer has `status` (30 s at most), and gives that answer. */
  const answered = <R extends { status: number }>(
    what: string,
    call: () => Promise<R | null>,
    status = 200,
  ) =>
    waitFor(
      what,
      async () => {
        const r = await call();
        return r?.status === status ? r : null;
      },
      30_000,
    );

  const first = await waitFor(
    'legacy through the gateway',
    async () => {
      const r = await get(legacyLocal, '/orders?id=7');
      return r?.status === 200 ? r : null;
    },
    60_000,
    200,
  ).catch(async (err: unknown) => {
    t.comment(await logs());
    throw err;
  });
  t.same(first.json, { app: 'legacy', path: '/orders?id=7' }, 'the plain app answers');
  t.same(seen.at(-1), { path: '/orders?id=7', tls: false }, 'reached over plain TCP');

  // Consul lists the gateway for the linked service, as it would
  const connect = (await httpGet(`${mesh.consul.url}/v1/health/connect/legacy?passing`)).json as {
    Service: { ID: string; Kind: string; Port: number };
  }[];
  t.same(
    connect.map((e) => [e.Service.ID, e.Service.Kind, e.Service.Port]),
    [['tgw', 'terminating-gateway', gwPort]],
    'health/connect/legacy answers with the gateway',
  );

  t.equal(
    await waitFor('ledger through the gateway', () => tcpExchange(ledgerLocal, 'ping'), 30_000),
    'ping',
    'TCP reaches the echo outside the mesh',
  );

  const secure = await answered('secure through the gateway', () => get(secureLocal, '/balance'));
  t.match(
    secure.json,
    { app: 'secure', client: /spiffe:\/\/.*\/svc\/gateway-client/ },
    'TLS originated with the entry’s CA, and its client certificate presented',
  );
  // the client certificate rotated on disk (key first, then certificate, as a renewal script
  // would): the gateway presents the new one on its next connections, with no restart
  const rotated = certs.leaf('gateway-client-2');
  await writeFile(join(dir, 'client-key.pem'), rotated.keyPem);
  await writeFile(join(dir, 'client.pem'), rotated.certPem);
  await waitFor(
    'the rotated client certificate presented',
    async () => {
      const r = await get(secureLocal, '/balance');
      const client = (r?.json as { client?: string } | undefined)?.client ?? '';
      return /\/svc\/gateway-client-2/.test(client) ? r : null;
    },
    30_000,
  ).catch(async (err: unknown) => {
    t.comment(await logs());
    throw err;
  });
  t.pass('a client certificate rotated on disk is presented without a restart');

  // HTTP/2 (h2c from the caller's app, h2c to the service outside the mesh)
  const h2get = (port: number, path: string) =>
    new Promise<{ status: number; body: string } | null>((resolve) => {
      const c = http2.connect(`http://127.0.0.1:${port}`);
      c.on('error', () => resolve(null));
      const req = c.request({ ':path': path });
      let body = '';
      let status = 0;
      req.on('response', (h) => (status = Number(h[':status'])));
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => (c.close(), resolve({ status, body })));
      req.on('error', () => (c.close(), resolve(null)));
      req.end();
    });
  const feed = await answered('feed through the gateway over HTTP/2', () =>
    h2get(feedLocal, '/items'),
  );
  t.same(
    JSON.parse(feed.body),
    { app: 'feed', version: '2.0', path: '/items' },
    'HTTP/2 reaches it',
  );
  // gRPC (grpc service, h2c to the server outside the mesh): the message and the trailers
  const rpc = await waitFor(
    'a gRPC call through the gateway',
    () =>
      new Promise<{ status: string; body: number; trailers: http2.IncomingHttpHeaders } | null>(
        (resolve) => {
          const c = http2.connect(`http://127.0.0.1:${rpcLocal}`);
          c.on('error', () => resolve(null));
          const req = c.request({
            ':method': 'POST',
            ':path': '/pkg.Things/Get',
            'content-type': 'application/grpc',
            te: 'trailers',
          });
          let body = 0;
          let trailers: http2.IncomingHttpHeaders = {};
          req.on('data', (d: Buffer) => (body += d.length));
          req.on('trailers', (h) => (trailers = h));
          req.on('end', () => {
            c.close();
            resolve(
              trailers['grpc-status'] === '0'
                ? { status: String(trailers['grpc-status']), body, trailers }
                : null,
            );
          });
          req.on('error', () => (c.close(), resolve(null)));
          req.end(Buffer.from([0, 0, 0, 0, 0]));
        },
      ),
    30_000,
  ).catch(async (err: unknown) => {
    t.comment(await logs());
    throw err;
  });
  t.same(
    { body: rpc.body, method: rpc.trailers['x-method'] },
    { body: 7, method: '/pkg.Things/Get' },
    'gRPC reaches it: the message and the trailers come back',
  );

  // feed's resolver bounds its streams at the gateway: one whose answer takes 2 s gets a 504
  await putConfig(mesh, { Kind: 'service-resolver', Name: 'feed', RequestTimeout: '300ms' });
  const slow = await answered(
    "feed's RequestTimeout applied at the gateway",
    () => h2get(feedLocal, '/slow'),
    504,
  );
  t.match(slow.body, /REMORA_E_PROXY_REQUEST_TIMEOUT/, 'a stream past it: 504, coded');
  t.equal((await h2get(feedLocal, '/items'))?.status, 200, 'the others are answered');

  // the gateway presents the linked service's identity: the caller's sidecar accepted it for
  // legacy, and the service with an unreadable CA file is left out, named, the rest serving
  const status = await mesh.status();
  const gw = status.instances.find((i) => i.id === 'tgw');
  t.equal(gw?.kind, 'terminating-gateway', 'the agent’s status lists the gateway');
  t.same(
    gw?.linked?.map((l) => [l.name, l.origination, l.certificate, l.error?.code ?? null]),
    [
      ['broken', 'tls', true, 'REMORA_E_AGENT_TERMINATING_TLS_FILE'],
      ['feed', 'plain', true, null],
      ['ledger', 'plain', true, null],
      ['legacy', 'plain', true, null],
      ['rpc', 'plain', true, null],
      ['secure', 'mtls', true, null],
    ],
  );
  const fileProblem = status.problems.find((p) => p.code === 'REMORA_E_AGENT_TERMINATING_TLS_FILE');
  t.match(fileProblem?.message, `CAFile ${missing} of broken cannot be read`, 'naming the file');
  const cli = await runRemora(['status', '--agent-admin', `http://127.0.0.1:${mesh.adminPort}`], {
    env: cliEnv(mesh),
  });
  t.match(
    cli.stdout,
    [
      'terminating gateway tgw:',
      '  broken tcp, TLS to 0 instances — not served: REMORA_E_AGENT_TERMINATING_TLS_FILE',
      '  feed http2, plain TCP to 1 instance',
      '  ledger tcp, plain TCP to 1 instance',
      '  legacy http, plain TCP to 1 instance',
      '  rpc grpc, plain TCP to 1 instance',
      '  secure http, mutual TLS to 1 instance',
    ].join('\n'),
    '`remora status` lists the linked services',
  );

  // intentions decide with the linked service as the destination
  const env = cliEnv(mesh);
  t.equal(
    (await runRemora(['intention', 'create', 'caller', 'legacy', '--deny'], { env })).code,
    0,
  );
  const denied = await waitFor(
    'the denial to apply',
    async () => {
      const r = await get(legacyLocal);
      return r?.status === 403 ? r : null;
    },
    30_000,
  );
  t.match(
    denied.body,
    /intention denies caller → legacy/,
    'a denied call gets 403 with its reason',
  );
  const calls = seen.length;
  t.equal((await get(secureLocal))?.status, 200, 'the other services keep serving');
  t.equal(seen.length, calls + 1, 'the denied call never reached legacy');

  // L7: the gateway checks each request against legacy's permissions (legacy is http)
  const permissions = JSON.stringify([
    { action: 'allow', http: { pathPrefix: '/public' } },
    { action: 'deny', http: { pathPrefix: '/' } },
  ]);
  t.equal(
    (
      await runRemora(['intention', 'create', 'caller', 'legacy', '--permissions', permissions], {
        env,
      })
    ).code,
    0,
  );
  const open = await answered('the L7 intention to apply', () => get(legacyLocal, '/public/menu'));
  t.same(
    open.json,
    { app: 'legacy', path: '/public/menu' },
    'a request its permissions allow passes',
  );
  const closed = await get(legacyLocal, '/admin');
  t.equal(closed?.status, 403, 'one they deny is refused by the gateway');
  t.match(closed?.body, /intention denies caller → legacy/);
  t.notOk(
    seen.some((x) => x.path === '/admin'),
    'and never reaches legacy',
  );

  // legacy's resolver applies at the gateway, live: a subset, served by its own SNI (as a
  // Consul caller sends it) and forwarded to its instances only
  const v2seen: string[] = [];
  const v2App = http.createServer((req, res) => {
    v2seen.push(req.url ?? '');
    res.end(JSON.stringify({ app: 'legacy-v2', path: req.url }));
  });
  const v2Port = await listen(v2App);
  t.teardown(() => (v2App.closeAllConnections(), v2App.close()));
  await register(mesh, {
    Name: 'legacy',
    ID: 'legacy-2',
    Address: '127.0.0.1',
    Port: v2Port,
    Meta: { version: 'v2' },
  });
  await putConfig(mesh, {
    Kind: 'service-resolver',
    Name: 'legacy',
    ConnectTimeout: '2s',
    Subsets: { v2: { Filter: 'Service.Meta.version == v2' } },
  });
  const callerDir = join(mesh.dataDir, 'instances', 'caller');
  const [callerCert, callerKey] = [
    await readFile(join(callerDir, 'cert.pem'), 'utf8'),
    await readFile(join(callerDir, 'key.pem'), 'utf8'),
  ];
  const trustDomain = /spiffe:\/\/([^/]+)\//.exec(
    new X509Certificate(callerCert).subjectAltName ?? '',
  )![1]!;
  const viaSni = (sni: string, path: string) =>
    new Promise<string | null>((resolve) => {
      const req = https.get(
        {
          host: '127.0.0.1',
          port: gwPort,
          path,
          servername: sni,
          cert: callerCert,
          key: callerKey,
          rejectUnauthorized: false,
          agent: false,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve(res.statusCode === 200 ? body : null));
        },
      );
      req.on('error', () => resolve(null));
    });
  const subsetSni = `v2.legacy.default.dc1.internal.${trustDomain}`;
  await waitFor(
    'the v2 subset served by its SNI',
    () => viaSni(subsetSni, '/public/v2'),
    30_000,
  ).catch(async (err: unknown) => {
    t.comment(await logs());
    throw err;
  });
  const plainBefore = seen.length;
  for (let i = 0; i < 4; i += 1)
    t.match(await viaSni(subsetSni, `/public/v2-${i}`), /legacy-v2/, 'the subset answers');
  t.equal(seen.length, plainBefore, 'the instance outside the subset got none of its calls');

  // a Remora caller reaches the subset too: a route to it makes the caller's sidecar ask the
  // gateway for the subset by its SNI (the gateway applies the filter, not the caller)
  await putConfig(mesh, {
    Kind: 'service-router',
    Name: 'legacy',
    Routes: [
      { Match: { HTTP: { PathPrefix: '/public/v2only' } }, Destination: { ServiceSubset: 'v2' } },
    ],
  });
  const routed = await waitFor(
    'a route to the subset through the caller',
    async () => {
      const r = await get(legacyLocal, '/public/v2only/x');
      return r?.status === 200 && (r.json as { app?: string }).app === 'legacy-v2' ? r : null;
    },
    30_000,
  ).catch(async (err: unknown) => {
    t.comment(await logs());
    t.comment(JSON.stringify((await httpGet(`http://127.0.0.1:${mesh.adminPort}/status`)).json));
    throw err;
  });
  t.match(routed.json, { app: 'legacy-v2' }, 'the route reaches the subset through the gateway');
  const plainBeforeRoute = seen.length;
  for (let i = 0; i < 4; i += 1) {
    const r = await get(legacyLocal, `/public/v2only/${i}`);
    t.match(r?.json, { app: 'legacy-v2' }, 'every routed call lands in the subset');
  }
  t.equal(seen.length, plainBeforeRoute, 'none reached the instance outside the subset');

  // one instance killed, the other healthy: calls still succeed (retried on the other one,
  // then the dead one ejected), POSTs included
  await waitFor(
    'both instances serving legacy',
    async () =>
      v2seen.some((p) => p.startsWith('/public/both'))
        ? true
        : (await get(legacyLocal, '/public/both'), null),
    30_000,
  );
  v2App.closeAllConnections();
  await new Promise((r) => v2App.close(r));
  const afterKill: (number | null)[] = [];
  for (let i = 0; i < 10; i += 1)
    afterKill.push(await post(legacyLocal, `/public/after-kill-${i}`));
  t.same(afterKill, Array(10).fill(200), 'every call after the kill succeeds');

  // a changed entry applies live: ledger unlinked, its connections refused
  await entry(linked);
  t.equal(
    await waitFor(
      'ledger to be unlinked',
      async () => ((await tcpExchange(ledgerLocal, 'x')) === null ? 'closed' : null),
      30_000,
    ),
    'closed',
    'an unlinked service is no longer reached',
  );
  t.equal((await get(secureLocal))?.status, 200, 'the gateway serves on');

  // an agent restart: the next agent adopts the gateway's proxy, which serves throughout
  const pids = await mesh.proxyPids();
  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  const load = (async () => {
    const until = Date.now() + 150_000;
    while (!stop && Date.now() < until) {
      const r = await get(secureLocal, '/during-restart');
      if (r?.status === 200) ok += 1;
      else failures.push(r ? `HTTP ${r.status}: ${r.body.slice(0, 200)}` : 'no answer');
    }
  })();
  await waitFor('calls before the restart', () => ok >= 10, 30_000);
  t.equal(await agent.stop('SIGTERM'), 0, 'the agent exits, leaving its proxies');
  const second = mesh.startAgent(agentEnv, ['--keep-proxies']);
  t.teardown(() => second.stop());
  await waitFor(
    'the new agent to adopt the gateway',
    async () => {
      const s = await mesh.status().catch(() => null);
      const gw = s?.instances.find((i) => i.id === 'tgw');
      return gw?.proxy?.adopted && gw.proxy.ready && gw.registered ? gw : null;
    },
    60_000,
    100,
  );
  const after = ok;
  await waitFor('calls after the adoption', () => ok >= after + 10, 30_000);
  stop = true;
  await load;
  t.same(failures, [], 'no call failed across the restart');
  t.same(await mesh.proxyPids(), pids, 'the same proxies serve');
  await second.stop();
});
