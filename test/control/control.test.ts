import t from 'tap';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { createControl, type Control, type ControlConfig } from '../../control/index.ts';
import { createFakeConsul, type FakeConsul } from './fake-consul.ts';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats.ts';
import {
  connectNats,
  createToken,
  deleteIntention,
  requestIntentions,
  requestRoots,
  requestSign,
  rotateCa,
  setIntentionsPolicy,
  subjects,
  subscribeIntentionsChanged,
  subscribeRootsChanged,
  upsertIntention,
  decodeSignResponseV1,
  type NatsConnection,
} from '../../lib/nats/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createCsr, createCsrWithSans, generateKeyPair, verifyLeaf } from '../../lib/pki/index.ts';
import { formatSpiffeId } from '../../lib/identity/index.ts';
import { hasCode } from '../../lib/errors/index.ts';
import { waitFor, type Clock } from '../../lib/util/index.ts';

const OP = 'operator-secret';
const logger = createSilentLogger();

function fakeClock(start = Date.now()): Clock & { advance(ms: number): void } {
  let now = start;
  return {
    now: () => now,
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (h) => clearTimeout(h),
    advance: (ms) => {
      now += ms;
    },
  };
}

const config: ControlConfig = {
  datacenter: 'dc1',
  kvPrefix: 'remora/',
  leafTtlHours: 72,
  rootTtlDays: 3650,
  operatorToken: OP,
  defaultPolicy: 'deny',
  auditMode: false,
};

let nats: NatsServerHandle;
let nc: NatsConnection;
t.before(async () => {
  nats = await startNatsServer();
  nc = await connectNats({ servers: nats.url, name: 'test', logger });
});
t.teardown(async () => {
  await nc.close();
  await nats.stop();
});

async function startControls(
  n: number,
  consul: FakeConsul,
  clock = fakeClock(),
  extra: Partial<ControlConfig> = {},
) {
  const controls: Control[] = [];
  const conns: NatsConnection[] = [];
  for (let i = 0; i < n; i += 1) {
    const c = await connectNats({ servers: nats.url, name: `control-${i}`, logger });
    conns.push(c);
    controls.push(
      createControl({ config: { ...config, ...extra }, nats: c, consul, clock, logger }),
    );
  }
  await Promise.all(controls.map((c) => c.start()));
  return {
    controls,
    clock,
    async stop() {
      await Promise.all(controls.map((c) => c.stop()));
      await Promise.all(conns.map((c) => c.close()));
    },
  };
}

function registerInstance(consul: FakeConsul, service: string, node: string) {
  consul.services.push({
    Node: node,
    ServiceID: `${service}-1`,
    ServiceName: service,
    ServiceMeta: { 'remora-node': node },
  });
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return hasCode(err) ? err.code : String(err);
  }
}

t.test(
  'two replicas starting together on one Consul agree on one CA and one token secret',
  async (t) => {
    const consul = createFakeConsul();
    const run = await startControls(2, consul);
    t.teardown(() => run.stop());
    t.same(run.controls[0]!.roots(), run.controls[1]!.roots());
    const roots = await requestRoots(nc, 'dc1');
    t.equal(roots.roots.length, 1);
    t.match(roots.trustDomain, /^[0-9a-f-]{36}\.remora$/);
  },
);

t.test(
  'signing: a legitimate CSR gets a leaf with its SPIFFE ID; every bad input is refused with its code',
  async (t) => {
    const consul = createFakeConsul();
    const run = await startControls(1, consul);
    t.teardown(() => run.stop());
    registerInstance(consul, 'web', 'node-1');
    registerInstance(consul, 'api', 'node-2');
    const { token } = await createToken(nc, 'dc1', OP, {
      node: 'node-1',
      services: ['web', 'batch-*'],
    });
    const roots = await requestRoots(nc, 'dc1');
    const id = (svc: string) =>
      formatSpiffeId({ trustDomain: roots.trustDomain, datacenter: 'dc1', service: svc });
    const keys = generateKeyPair();
    const csr = createCsr({ ...keys, spiffeId: id('web') });
    const good = { node: 'node-1', token, service: 'web', serviceId: 'web-1', csr };

    const leaf = await requestSign(nc, 'dc1', good);
    t.equal(leaf.spiffeId, id('web'));
    t.ok(
      verifyLeaf(
        leaf.cert,
        roots.roots.map((r) => r.pem),
        Date.now(),
      ),
    );
    t.equal(new X509Certificate(leaf.cert).subjectAltName, `URI:${id('web')}`);
    t.same(leaf.chain, [roots.roots[0]!.pem]);

    const raw = (body: string) =>
      nc
        .request(subjects('dc1').caSign, new TextEncoder().encode(body))
        .then((m) => decodeSignResponseV1(m.data));
    t.equal(await codeOf(raw('{not json')), 'REMORA_E_NATS_MESSAGE_INVALID', 'malformed JSON');
    t.equal(
      await codeOf(raw(JSON.stringify({ ...good, v: 2 }))),
      'REMORA_E_NATS_VERSION_UNSUPPORTED',
      'wrong v',
    );
    t.equal(
      await codeOf(raw(JSON.stringify({ v: 1, node: 'node-1', token }))),
      'REMORA_E_NATS_MESSAGE_INVALID',
      'missing fields',
    );

    const extraSan = createCsrWithSans({ ...keys, uris: [id('web')], dnsNames: ['evil.example'] });
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, csr: extraSan })),
      'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      'a DNS SAN for a service that is no ingress gateway',
    );
    const twoUris = createCsrWithSans({ ...keys, uris: [id('web'), id('batch-a')] });
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, csr: twoUris })),
      'REMORA_E_CONTROL_CSR_SAN_MISMATCH',
      'a second URI SAN',
    );
    const wrongSan = createCsr({ ...keys, spiffeId: id('api') });
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, csr: wrongSan })),
      'REMORA_E_CONTROL_CSR_SAN_MISMATCH',
      'wrong SAN',
    );
    const otherDomain = createCsr({
      ...keys,
      spiffeId: formatSpiffeId({ trustDomain: 'evil.remora', datacenter: 'dc1', service: 'web' }),
    });
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, csr: otherDomain })),
      'REMORA_E_CONTROL_CSR_SAN_MISMATCH',
      'foreign trust domain',
    );
    const weak = generateKeyPairSync('rsa', {
      modulusLength: 1024,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    });
    const weakCsr = createCsr({
      keyPem: weak.privateKey,
      publicKeyPem: weak.publicKey,
      spiffeId: id('web'),
    });
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, csr: weakCsr })),
      'REMORA_E_CONTROL_CSR_WEAK_KEY',
      'weak key',
    );
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, csr: 'garbage' })),
      'REMORA_E_PKI_CSR_INVALID',
      'unparseable CSR',
    );

    const [p0, p1, p2] = token.split('.');
    const forged = `${p0}.${Buffer.from(JSON.stringify({ n: 'node-1', s: ['*'], e: 0, i: 0 })).toString('base64url')}.${p2}`;
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, token: forged })),
      'REMORA_E_CONTROL_TOKEN_INVALID',
      'forged token',
    );
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, token: `${p0}.${p1}.AAAA` })),
      'REMORA_E_CONTROL_TOKEN_INVALID',
      'bad MAC',
    );
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, node: 'node-2' })),
      'REMORA_E_CONTROL_TOKEN_INVALID',
      'token of another node',
    );

    const short = await createToken(nc, 'dc1', OP, {
      node: 'node-1',
      services: ['web'],
      ttlSeconds: 60,
    });
    run.clock.advance(61_000);
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, token: short.token })),
      'REMORA_E_CONTROL_TOKEN_EXPIRED',
      'expired token',
    );

    const apiCsr = createCsr({ ...keys, spiffeId: id('api') });
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, service: 'api', csr: apiCsr })),
      'REMORA_E_CONTROL_SERVICE_NOT_ALLOWED',
      'service outside globs',
    );
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, service: 'api' })),
      'REMORA_E_CONTROL_SERVICE_NOT_ALLOWED',
      'replay for another service',
    );
    const batchCsr = createCsr({ ...keys, spiffeId: id('batch-x') });
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, service: 'batch-x', csr: batchCsr })),
      'REMORA_E_CONTROL_SERVICE_NOT_ON_NODE',
      'glob allows it but Consul does not list it on the node',
    );
    registerInstance(consul, 'batch-x', 'node-2');
    t.equal(
      await codeOf(requestSign(nc, 'dc1', { ...good, service: 'batch-x', csr: batchCsr })),
      'REMORA_E_CONTROL_SERVICE_NOT_ON_NODE',
      'listed, but on another node',
    );

    consul.down = true;
    t.equal(
      await codeOf(requestSign(nc, 'dc1', good)),
      'REMORA_E_CONTROL_CONSUL_UNAVAILABLE',
      'Consul down',
    );
    consul.down = false;

    const again = await requestSign(nc, 'dc1', good);
    t.equal(again.spiffeId, id('web'), 'control keeps serving after refusals');

    const text = await run.controls[0]!.metrics.registry.metrics();
    t.match(
      text,
      /remora_control_refusals_total\{subject="ca.sign",code="REMORA_E_CONTROL_CSR_SAN_MISMATCH"\} 3/,
    );
    t.match(text, /remora_control_certificates_issued_total\{service="web"\} 2/);
  },
);

t.test('operator requests need the operator token', async (t) => {
  const consul = createFakeConsul();
  const run = await startControls(1, consul);
  t.teardown(() => run.stop());
  t.equal(
    await codeOf(createToken(nc, 'dc1', 'wrong', { node: 'n', services: ['web'] })),
    'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED',
  );
  t.equal(
    await codeOf(
      upsertIntention(nc, 'dc1', '', { source: 'a', destination: 'b', action: 'allow' }),
    ),
    'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED',
  );
  t.equal(
    await codeOf(deleteIntention(nc, 'dc1', 'x', { source: 'a', destination: 'b' })),
    'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED',
  );
  t.equal(await codeOf(rotateCa(nc, 'dc1', 'x')), 'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED');
});

t.test(
  'intentions: upsert and delete bump the revision, publish changed, and survive in KV',
  async (t) => {
    const consul = createFakeConsul();
    const run = await startControls(2, consul);
    t.teardown(() => run.stop());
    const seen: number[] = [];
    const sub = subscribeIntentionsChanged(nc, 'dc1', (s) => seen.push(s.revision));
    t.teardown(() => sub.unsubscribe());
    const first = await requestIntentions(nc, 'dc1');
    t.same(
      {
        revision: first.revision,
        defaultPolicy: first.defaultPolicy,
        auditMode: first.auditMode,
        n: first.intentions.length,
      },
      { revision: 1, defaultPolicy: 'deny', auditMode: false, n: 0 },
    );
    const a = await upsertIntention(nc, 'dc1', OP, {
      source: '*',
      destination: 'api',
      action: 'deny',
    });
    t.equal(a.revision, 2);
    t.equal(a.intention.precedence, 8);
    const b = await upsertIntention(nc, 'dc1', OP, {
      source: 'web',
      destination: 'api',
      permissions: [{ action: 'allow', http: { pathPrefix: '/v1', methods: ['GET'] } }],
    });
    t.equal(b.revision, 3);
    await waitFor('two intentions.changed publications', () => seen.includes(3));
    const snap = await requestIntentions(nc, 'dc1');
    t.same(
      snap.intentions.map((i) => [i.source, i.destination, i.precedence]),
      [
        ['web', 'api', 9],
        ['*', 'api', 8],
      ],
    );
    t.equal(
      (await deleteIntention(nc, 'dc1', OP, { source: '*', destination: 'api' })).revision,
      4,
    );
    t.equal(
      await codeOf(deleteIntention(nc, 'dc1', OP, { source: '*', destination: 'api' })),
      'REMORA_E_CONTROL_INTENTION_NOT_FOUND',
    );
    t.equal(
      await codeOf(upsertIntention(nc, 'dc1', OP, { source: 'web', destination: 'api' })),
      'REMORA_E_INTENTIONS_INVALID',
    );
    const stored = JSON.parse(consul.data.get('remora/intentions')!.value);
    t.equal(stored.revision, 4);
    const policy = await setIntentionsPolicy(nc, 'dc1', OP, {
      defaultPolicy: 'allow',
      auditMode: true,
    });
    t.same(
      {
        revision: policy.revision,
        defaultPolicy: policy.defaultPolicy,
        auditMode: policy.auditMode,
        n: policy.intentions.length,
      },
      { revision: 5, defaultPolicy: 'allow', auditMode: true, n: 1 },
      'default policy and audit mode change with a new revision, intentions kept',
    );
    t.equal(
      await codeOf(setIntentionsPolicy(nc, 'dc1', 'nope', { auditMode: false })),
      'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED',
    );
    await waitFor('the policy publication', () => seen.includes(5));
    consul.down = true;
    const cached = await requestIntentions(nc, 'dc1');
    t.equal(cached.revision, 5, 'Consul down: the last known snapshot is served');
    consul.down = false;
  },
);

t.test(
  'rotation adds a root, keeps the old one trusted through the overlap, then drops it',
  async (t) => {
    const consul = createFakeConsul();
    const run = await startControls(2, consul, fakeClock(), { refreshIntervalMs: 60_000 });
    t.teardown(() => run.stop());
    registerInstance(consul, 'web', 'node-1');
    const { token } = await createToken(nc, 'dc1', OP, { node: 'node-1', services: ['web'] });
    const before = await requestRoots(nc, 'dc1');
    const id = formatSpiffeId({
      trustDomain: before.trustDomain,
      datacenter: 'dc1',
      service: 'web',
    });
    const keys = generateKeyPair();
    const csr = createCsr({ ...keys, spiffeId: id });
    const oldLeaf = await requestSign(nc, 'dc1', {
      node: 'node-1',
      token,
      service: 'web',
      serviceId: 'web-1',
      csr,
    });

    const changed: string[] = [];
    const sub = subscribeRootsChanged(nc, 'dc1', (r) => changed.push(r.activeRootId));
    t.teardown(() => sub.unsubscribe());
    const after = await rotateCa(nc, 'dc1', OP);
    t.not(after.activeRootId, before.activeRootId);
    t.equal(after.roots.length, 2);
    t.equal(after.trustDomain, before.trustDomain);
    await waitFor('roots.changed', () => changed.includes(after.activeRootId));
    // both replicas now sign with the new root
    for (let i = 0; i < 4; i += 1) {
      await waitFor(
        'every replica uses the new root',
        async () => (await requestRoots(nc, 'dc1')).activeRootId === after.activeRootId,
      );
    }
    t.ok(run.controls.every((c) => c.roots().activeRootId === after.activeRootId));
    const newLeaf = await requestSign(nc, 'dc1', {
      node: 'node-1',
      token,
      service: 'web',
      serviceId: 'web-1',
      csr,
    });
    const bundle = after.roots.map((r) => r.pem);
    t.ok(
      verifyLeaf(oldLeaf.cert, bundle, run.clock.now()),
      'old leaf still verifies against the bundle',
    );
    t.ok(verifyLeaf(newLeaf.cert, bundle, run.clock.now()), 'new leaf verifies against the bundle');
    t.notOk(
      verifyLeaf(
        newLeaf.cert,
        before.roots.map((r) => r.pem),
        run.clock.now(),
      ),
      'new leaf is signed by the new root',
    );

    run.clock.advance(72 * 3600_000 + 2 * 60_000 + 1000);
    const later = await requestRoots(nc, 'dc1');
    t.same(
      later.roots.map((r) => r.id),
      [after.activeRootId],
      'old root dropped after its last leaf expired',
    );
  },
);

t.test('a request carrying W3C trace context gets a control span in the same trace', async (t) => {
  const { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } =
    await import('@opentelemetry/sdk-trace');
  const { extractContext } = await import('../../lib/telemetry/index.ts');
  const { headersWithTraceContext } = await import('../../lib/nats/index.ts');
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  const consul = createFakeConsul();
  const c = await connectNats({ servers: nats.url, name: 'traced', logger });
  const control = createControl({
    config,
    nats: c,
    consul,
    clock: fakeClock(),
    logger,
    tracing: { tracer: provider.getTracer('test'), extract: (h) => extractContext(h) },
  });
  await control.start();
  t.teardown(async () => {
    await control.stop();
    await c.close();
  });
  const traceId = '0af7651916cd43dd8448eb211c80319c';
  const parentId = 'b7ad6b7169203331';
  await requestRoots(nc, 'dc1', {
    headers: headersWithTraceContext({ traceparent: `00-${traceId}-${parentId}-01` }),
  });
  await waitFor('the control span', () => exporter.getFinishedSpans().length > 0);
  const span = exporter.getFinishedSpans()[0]!;
  t.equal(span.name, 'remora.control ca.roots');
  t.equal(span.spanContext().traceId, traceId);
  t.equal(span.parentSpanContext?.spanId, parentId);
});

t.test(
  "an ingress gateway's certificate carries the DNS names its entry derives, and no other",
  async (t) => {
    const consul = createFakeConsul();
    const run = await startControls(1, consul, fakeClock(), {
      consulDnsDomains: ['consul', 'alt.example'],
    });
    t.teardown(() => run.stop());
    consul.services.push(
      {
        Node: 'node-1',
        ServiceID: 'ingress',
        ServiceName: 'ingress',
        ServiceKind: 'ingress-gateway',
        ServiceMeta: { 'remora-node': 'node-1' },
      },
      {
        Node: 'node-1',
        ServiceID: 'web-1',
        ServiceName: 'web',
        ServiceKind: '',
        ServiceMeta: { 'remora-node': 'node-1' },
      },
    );
    const entry = (tls: boolean) => ({
      Kind: 'ingress-gateway',
      Name: 'ingress',
      Listeners: [
        {
          Port: 8443,
          Protocol: 'http',
          ...(tls ? { TLS: { Enabled: true } } : {}),
          Services: [{ Name: 'api', Hosts: ['api.example.com'] }, { Name: 'web' }],
        },
      ],
    });
    consul.configEntries.set('ingress-gateway', [entry(true)]);
    const { token } = await createToken(nc, 'dc1', OP, {
      node: 'node-1',
      services: ['ingress', 'web'],
    });
    const roots = await requestRoots(nc, 'dc1');
    const id = (svc: string) =>
      formatSpiffeId({ trustDomain: roots.trustDomain, datacenter: 'dc1', service: svc });
    const keys = generateKeyPair();
    const ask = (service: string, dnsNames: string[]) =>
      requestSign(nc, 'dc1', {
        node: 'node-1',
        token,
        service,
        serviceId: service,
        csr: createCsr({ ...keys, spiffeId: id(service), dnsNames }),
      });
    const names = [
      '*.ingress.consul',
      '*.ingress.dc1.consul',
      '*.ingress.alt.example',
      '*.ingress.dc1.alt.example',
      'api.example.com',
    ];
    const leaf = await ask('ingress', names);
    const x = new X509Certificate(leaf.cert);
    t.equal(
      x.subjectAltName,
      [`URI:${id('ingress')}`, ...names.map((n) => `DNS:${n}`)].join(', '),
      'the SPIFFE ID and the names asked for',
    );
    t.equal(x.checkHost('api.example.com'), 'api.example.com', 'a TLS client accepts its Host');
    t.equal(x.checkHost('web.ingress.dc1.consul'), '*.ingress.dc1.consul', 'and a default name');
    t.equal(x.checkHost('evil.example.com'), undefined, 'not a name it was not given');
    t.ok(verifyLeaf(leaf.cert, [roots.roots[0]!.pem], Date.now()));
    t.ok(await ask('ingress', ['api.example.com']), 'a subset is granted too');

    t.equal(
      await codeOf(ask('ingress', ['api.example.com', 'evil.example.com'])),
      'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      'a name the entry does not derive',
    );
    t.equal(
      await codeOf(ask('ingress', ['*.example.com'])),
      'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      'a wildcard wider than a host',
    );
    t.equal(
      await codeOf(ask('web', ['web.ingress.consul'])),
      'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      'a service that is not an ingress gateway',
    );
    consul.configEntries.set('ingress-gateway', [entry(false)]);
    t.equal(
      await codeOf(ask('ingress', ['api.example.com'])),
      'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      'an entry that enables no TLS',
    );
    t.ok(await ask('ingress', []), 'without DNS names the gateway gets its identity as ever');
    consul.configEntries.set('ingress-gateway', []);
    t.equal(
      await codeOf(ask('ingress', ['api.example.com'])),
      'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      'no entry at all',
    );
  },
);
