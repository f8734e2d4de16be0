// Real nats-server, the embedded Consul catalog, two `remora control` processes and the real CLI.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { startNatsServer, freePort, type NatsServerHandle } from '../../helpers/nats.ts';
import { REMORA_BIN, runRemora } from '../../helpers/cli.ts';
import { startDevConsul, type DevConsul } from '../../../lib/devconsul/index.ts';
import { createConsulClient, type ConsulClient } from '../../../lib/consul/index.ts';
import { evaluateIntentions } from '../../../lib/intentions/index.ts';
import {
  connectNats,
  createToken,
  deleteIntention,
  requestIntentions,
  upsertIntention,
  decodeSignResponseV1,
  requestRoots,
  requestSign,
  subjects,
  type NatsConnection,
  type SignResponseV1,
} from '../../../lib/nats/index.ts';
import { createSilentLogger } from '../../../lib/log/index.ts';
import {
  createCsr,
  createCsrWithSans,
  generateKeyPair,
  type KeyPair,
} from '../../../lib/pki/index.ts';
import { formatSpiffeId, spiffeIdFromSubjectAltName } from '../../../lib/identity/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';
import { waitFor } from '../../../lib/util/index.ts';

// real processes on a shared 2-core machine: allow for slow starts under load
t.setTimeout(300_000);

const OP = 'it-operator-token';
const logger = createSilentLogger();

let nats: NatsServerHandle;
let devconsul: DevConsul;
let consul: ConsulClient;
let nc: NatsConnection;

interface ControlProc {
  child: ChildProcess;
  log: string;
  metricsPort: number;
}
const procs: ControlProc[] = [];

async function startControlProcess(): Promise<ControlProc> {
  const metricsPort = await freePort();
  const child = spawn(process.execPath, [REMORA_BIN, 'control'], {
    env: {
      PATH: process.env.PATH ?? '',
      REMORA_CONTROL_NATS_SERVERS: nats.url,
      REMORA_CONTROL_CONSUL_ADDRESS: devconsul.url,
      REMORA_CONTROL_OPERATOR_TOKEN: OP,
      REMORA_CONTROL_TRACING_ENDPOINT: '',
      REMORA_CONTROL_METRICS_PORT: String(metricsPort),
      REMORA_CONTROL_REFRESH_INTERVAL_MS: '1000',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const p: ControlProc = { child, log: '', metricsPort };
  child.stderr.on('data', (d: Buffer) => (p.log += d.toString()));
  procs.push(p);
  return p;
}

function cliEnv(): Record<string, string> {
  // generous request deadline: the shared test machine can be very busy
  return {
    REMORA_CLI_NATS_SERVERS: nats.url,
    REMORA_CLI_OPERATOR_TOKEN: OP,
    REMORA_CLI_NATS_REQUEST_TIMEOUT_MS: '30000',
  };
}

function logLines(p: ControlProc): Array<Record<string, unknown>> {
  return p.log
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return res.text();
}

t.before(async () => {
  nats = await startNatsServer();
  devconsul = await startDevConsul({ port: 0 });
  consul = createConsulClient({ address: devconsul.url, logger });
  nc = await connectNats({ servers: nats.url, name: 'it', logger });
});

t.teardown(async () => {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill('SIGTERM');
      await once(p.child, 'exit');
    }
  }
  await nc.close();
  consul.close();
  await devconsul.close();
  await nats.stop();
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return hasCode(err) ? err.code : String(err);
  }
}

/** A client that retries a sign request on timeout / no responders, as the agent does. */
async function signWithRetry(req: Parameters<typeof requestSign>[2]): Promise<SignResponseV1> {
  let last: unknown;
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      return await requestSign(nc, 'dc1', req, { timeoutMs: 1500 });
    } catch (err) {
      last = err;
      if (!hasCode(err, 'REMORA_E_NATS_TIMEOUT') && !hasCode(err, 'REMORA_E_NATS_NO_RESPONDERS'))
        throw err;
    }
  }
  throw last;
}

async function mtlsHandshake(
  server: { key: string; cert: string },
  client: { key: string; cert: string },
  bundle: string[],
) {
  const srv = tls.createServer(
    { key: server.key, cert: server.cert, ca: bundle, requestCert: true, rejectUnauthorized: true },
    (s) => {
      s.end(spiffeIdFromSubjectAltName(s.getPeerCertificate().subjectaltname) ?? 'none');
    },
  );
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  try {
    const sock = tls.connect({
      host: '127.0.0.1',
      port: (srv.address() as AddressInfo).port,
      key: client.key,
      cert: client.cert,
      ca: bundle,
      checkServerIdentity: () => undefined,
    });
    let data = '';
    sock.on('data', (d: Buffer) => (data += d.toString()));
    await once(sock, 'secureConnect');
    const serverId = spiffeIdFromSubjectAltName(sock.getPeerCertificate().subjectaltname);
    await once(sock, 'end');
    sock.destroy();
    return { serverId, clientIdSeenByServer: data };
  } finally {
    srv.close();
  }
}

t.test('the control plane end to end', async (t) => {
  t.setTimeout(240_000);
  const [a, b] = await Promise.all([startControlProcess(), startControlProcess()]);
  await waitFor(
    'both replicas serving',
    () => [a, b].every((p) => p.log.includes('control plane serving')),
    90_000,
  );

  await t.test('two replicas starting together create exactly one CA', async (t) => {
    const serving = [a, b].map((p) => logLines(p).find((l) => l.msg === 'control plane serving')!);
    t.equal(serving[0]!.trustDomain, serving[1]!.trustDomain);
    const created = [a, b].filter((p) =>
      logLines(p).some((l) => l.msg === 'created a new CA in Consul KV'),
    );
    t.equal(created.length, 1, 'exactly one replica created the CA');
    const kv = await consul.kv.get('remora/ca');
    t.equal(JSON.parse(kv!.value).trustDomain, serving[0]!.trustDomain);
  });

  const tokenRun = await runRemora(['token', 'create', 'node-1', 'web', 'api'], {
    env: cliEnv(),
    timeoutMs: 60_000,
  });
  t.equal(tokenRun.code, 0, tokenRun.stderr);
  const token = tokenRun.stdout.trim();
  await consul.agent.registerService({
    id: 'web-1',
    name: 'web',
    port: 8080,
    meta: { 'remora-node': 'node-1' },
  });
  await consul.agent.registerService({
    id: 'api-1',
    name: 'api',
    port: 8081,
    meta: { 'remora-node': 'node-1' },
  });
  await consul.agent.registerService({
    id: 'db-1',
    name: 'db',
    port: 5432,
    meta: { 'remora-node': 'node-2' },
  });
  const roots = await requestRoots(nc, 'dc1');
  const id = (svc: string) =>
    formatSpiffeId({ trustDomain: roots.trustDomain, datacenter: 'dc1', service: svc });
  // one key pair per service, reused: key generation is the costly part and not under test
  const keyFor = new Map<string, KeyPair>();
  const issue = async (svc: string) => {
    if (!keyFor.has(svc)) keyFor.set(svc, generateKeyPair());
    const keys = keyFor.get(svc)!;
    const leaf = await requestSign(nc, 'dc1', {
      node: 'node-1',
      token,
      service: svc,
      serviceId: `${svc}-1`,
      csr: createCsr({ ...keys, spiffeId: id(svc) }),
    });
    return { key: keys.keyPem, cert: leaf.cert, leaf };
  };
  const web = await issue('web');
  const api = await issue('api');

  await t.test(
    'a legitimate CSR gets a certificate that Node TLS accepts for mTLS with the right SPIFFE ID',
    async (t) => {
      t.equal(web.leaf.spiffeId, id('web'));
      const r = await mtlsHandshake(
        api,
        web,
        roots.roots.map((x) => x.pem),
      );
      t.equal(r.serverId, id('api'));
      t.equal(r.clientIdSeenByServer, id('web'));
    },
  );

  await t.test('each bad input is refused with its code while control keeps serving', async (t) => {
    const keys = keyFor.get('web')!;
    const good = {
      node: 'node-1',
      token,
      service: 'web',
      serviceId: 'web-1',
      csr: createCsr({ ...keys, spiffeId: id('web') }),
    };
    const raw = (body: string) =>
      nc
        .request(subjects('dc1').caSign, new TextEncoder().encode(body), { timeout: 5000 })
        .then((m) => decodeSignResponseV1(m.data));
    const weak = generateKeyPairSync('rsa', {
      modulusLength: 1024,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const [p0, , p2] = token.split('.');
    const forged = `${p0}.${Buffer.from(JSON.stringify({ n: 'node-1', s: ['*'], e: 0, i: 0 })).toString('base64url')}.${p2}`;
    const dbToken = (await createToken(nc, 'dc1', OP, { node: 'node-1', services: ['db'] })).token;
    const shortToken = (
      await createToken(nc, 'dc1', OP, { node: 'node-1', services: ['web'], ttlSeconds: 1 })
    ).token;
    const cases: Array<[string, () => Promise<unknown>, string]> = [
      ['malformed JSON', () => raw('{"v":1,'), 'REMORA_E_NATS_MESSAGE_INVALID'],
      [
        'wrong v',
        () => raw(JSON.stringify({ ...good, v: 7 })),
        'REMORA_E_NATS_VERSION_UNSUPPORTED',
      ],
      [
        'missing fields',
        () => raw(JSON.stringify({ v: 1, node: 'node-1' })),
        'REMORA_E_NATS_MESSAGE_INVALID',
      ],
      [
        'extra URI SAN',
        () =>
          requestSign(nc, 'dc1', {
            ...good,
            csr: createCsrWithSans({ ...keys, uris: [id('web'), id('api')] }),
          }),
        'REMORA_E_CONTROL_CSR_SAN_MISMATCH',
      ],
      [
        'a DNS SAN for a service that is not an ingress gateway',
        () =>
          requestSign(nc, 'dc1', {
            ...good,
            csr: createCsrWithSans({ ...keys, uris: [id('web')], dnsNames: ['web.example'] }),
          }),
        'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      ],
      [
        'wrong SAN',
        () => requestSign(nc, 'dc1', { ...good, csr: createCsr({ ...keys, spiffeId: id('api') }) }),
        'REMORA_E_CONTROL_CSR_SAN_MISMATCH',
      ],
      [
        'weak key',
        () =>
          requestSign(nc, 'dc1', {
            ...good,
            csr: createCsr({
              keyPem: weak.privateKey,
              publicKeyPem: weak.publicKey,
              spiffeId: id('web'),
            }),
          }),
        'REMORA_E_CONTROL_CSR_WEAK_KEY',
      ],
      [
        'forged token',
        () => requestSign(nc, 'dc1', { ...good, token: forged }),
        'REMORA_E_CONTROL_TOKEN_INVALID',
      ],
      [
        'service not on node',
        () =>
          requestSign(nc, 'dc1', {
            ...good,
            token: dbToken,
            service: 'db',
            csr: createCsr({ ...keys, spiffeId: id('db') }),
          }),
        'REMORA_E_CONTROL_SERVICE_NOT_ON_NODE',
      ],
      [
        'replayed request for another service',
        () => requestSign(nc, 'dc1', { ...good, service: 'api', serviceId: 'api-1' }),
        'REMORA_E_CONTROL_CSR_SAN_MISMATCH',
      ],
    ];
    for (const [name, p, code] of cases) t.equal(await codeOf(p()), code, name);
    await waitFor(
      'the short token to expire',
      async () =>
        (await codeOf(requestSign(nc, 'dc1', { ...good, token: shortToken }))) ===
        'REMORA_E_CONTROL_TOKEN_EXPIRED',
      15_000,
      200,
    );
    t.pass('expired token refused with REMORA_E_CONTROL_TOKEN_EXPIRED');
    t.equal((await requestSign(nc, 'dc1', good)).spiffeId, id('web'), 'still serving');
    const texts = await Promise.all([a, b].map((p) => scrape(p.metricsPort)));
    const total = (code: string) =>
      texts.reduce(
        (n, text) =>
          n +
          Number(
            new RegExp(
              `remora_control_refusals_total\\{subject="ca.sign",code="${code}"\\} (\\d+)`,
            ).exec(text)?.[1] ?? 0,
          ),
        0,
      );
    t.equal(
      total('REMORA_E_CONTROL_CSR_SAN_MISMATCH'),
      3,
      'refusals counted by code across replicas',
    );
    t.ok(total('REMORA_E_CONTROL_TOKEN_EXPIRED') >= 1);
    const refusalLogs = [a, b]
      .flatMap((p) => logLines(p))
      .filter((l) => l.code === 'REMORA_E_CONTROL_CSR_WEAK_KEY');
    t.equal(refusalLogs.length, 1, 'a log line with the code');
  });

  await t.test(
    "intention precedence matches Consul's table; the CLI names the deciding rule",
    async (t) => {
      const run = (args: string[]) => runRemora(args, { env: cliEnv(), timeoutMs: 60_000 });
      await upsertIntention(nc, 'dc1', OP, { source: '*', destination: '*', action: 'deny' });
      await upsertIntention(nc, 'dc1', OP, { source: 'web', destination: '*', action: 'allow' });
      await upsertIntention(nc, 'dc1', OP, { source: '*', destination: 'api', action: 'deny' });
      const created = await upsertIntention(nc, 'dc1', OP, {
        source: 'web',
        destination: 'api',
        action: 'allow',
      });
      t.equal(created.intention.precedence, 9);
      const snap = await requestIntentions(nc, 'dc1');
      t.same(
        snap.intentions.map((i) => [i.precedence, i.source, i.destination, i.action]),
        [
          [9, 'web', 'api', 'allow'],
          [8, '*', 'api', 'deny'],
          [6, 'web', '*', 'allow'],
          [5, '*', '*', 'deny'],
        ],
        'stored in precedence order',
      );
      const expect: Array<[string, string, boolean, string]> = [
        ['web', 'api', true, 'intention "web" → api allow (precedence 9)'],
        ['billing', 'api', false, 'intention "*" → api deny (precedence 8)'],
        ['web', 'db', true, 'intention "web" → * allow (precedence 6)'],
        ['billing', 'db', false, 'intention "*" → * deny (precedence 5)'],
      ];
      for (const [source, destination, allowed, reason] of expect) {
        const d = evaluateIntentions(snap, { source, destination });
        t.same(
          { allowed: d.allowed, reason: d.reason },
          { allowed, reason },
          `${source} → ${destination}`,
        );
      }
      const denied = await run(['intention', 'check', 'billing', 'api']);
      t.equal(denied.code, 2, 'check exits 2 when denied');
      t.match(denied.stdout, 'Denied: intention "*" → api deny (precedence 8)');
      const explained = await run(['explain', 'billing', 'api']);
      t.equal(explained.code, 2, 'explain exits 2 when the call would be refused');
      t.match(explained.stdout, 'billing → api: DENIED');
      t.match(explained.stdout, 'decided by: intention "*" → api deny (precedence 8)');
      t.match(explained.stdout, /\* → api: deny \(precedence 8\)\n\s+\* → \*: deny/);
      t.match(explained.stdout, 'to allow: remora intention create billing api');
      const allowed = await run(['explain', 'web', 'api', '--method', 'POST', '--path', '/x']);
      t.equal(allowed.code, 0, allowed.stderr);
      t.match(allowed.stdout, 'web → api: allowed');
      t.match(allowed.stdout, 'decided by: intention "web" → api allow (precedence 9)');
      await deleteIntention(nc, 'dc1', OP, { source: '*', destination: 'api' });
      const after = await requestIntentions(nc, 'dc1');
      t.equal(
        evaluateIntentions(after, { source: 'billing', destination: 'api' }).reason,
        'intention "*" → * deny (precedence 5)',
        'falls to * → * after the delete',
      );
    },
  );

  await t.test(
    'rotation keeps both roots trusted through the overlap, and agents hear about it',
    async (t) => {
      const heard: string[] = [];
      const sub = nc.subscribe(subjects('dc1').caRootsChanged, {
        callback: (_e, m) => heard.push(JSON.parse(new TextDecoder().decode(m.data)).activeRootId),
      });
      t.teardown(() => sub.unsubscribe());
      const rot = await runRemora(['ca', 'rotate'], { env: cliEnv(), timeoutMs: 60_000 });
      t.equal(rot.code, 0, rot.stderr);
      const after = await requestRoots(nc, 'dc1');
      t.not(after.activeRootId, roots.activeRootId);
      t.equal(after.roots.length, 2);
      await waitFor('roots.changed published', () => heard.includes(after.activeRootId));
      // every replica signs with the new root (both reload on roots.changed)
      await waitFor('both replicas use the new root', async () => {
        const leaves = await Promise.all([1, 2, 3, 4].map(() => issue('api')));
        return leaves.every(
          (l) => l.leaf.chain[0] === after.roots.find((r) => r.id === after.activeRootId)!.pem,
        );
      });
      const newApi = await issue('api');
      const bundle = after.roots.map((r) => r.pem);
      const r = await mtlsHandshake(newApi, web, bundle);
      t.equal(r.clientIdSeenByServer, id('web'), 'old-root client accepted by new-root server');
      const r2 = await mtlsHandshake(web, newApi, bundle);
      t.equal(r2.clientIdSeenByServer, id('api'), 'new-root client accepted by old-root server');
      t.ok(
        after.roots.some((r) => r.id === roots.activeRootId),
        'the old root is still in the bundle',
      );
    },
  );

  await t.test('killing one replica loses no request that a client retries', async (t) => {
    const keys = keyFor.get('web')!;
    const req = {
      node: 'node-1',
      token,
      service: 'web',
      serviceId: 'web-1',
      csr: createCsr({ ...keys, spiffeId: id('web') }),
    };
    const inflight = Array.from({ length: 20 }, () => signWithRetry(req));
    a.child.kill('SIGKILL');
    const more = Array.from({ length: 20 }, () => signWithRetry(req));
    const results = await Promise.all([...inflight, ...more]);
    t.equal(results.length, 40);
    t.ok(
      results.every((r) => r.spiffeId === id('web')),
      'all 40 requests got a certificate',
    );
  });
});
