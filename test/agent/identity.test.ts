import t from 'tap';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createIdentityManager } from '../../agent/identity.ts';
import { dataPaths } from '../../agent/files.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { inspectCert } from '../../lib/pki/index.ts';
import { createFakeCa, createFakeClock, settle } from './fakes.ts';
import { waitFor } from '../../lib/util/index.ts';

async function setup(
  t: { teardown(fn: () => unknown): void },
  opts: {
    failFirst?: number;
    registered?: (id: string) => boolean;
    dnsNames?: (id: string) => string[] | null;
  } = {},
) {
  const dir = await mkdtemp(join(tmpdir(), 'remora-id-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const clock = createFakeClock();
  const ca = createFakeCa(clock.now());
  let failures = opts.failFirst ?? 0;
  const calls: { at: number; csr: string }[] = [];
  const changes: string[] = [];
  let trustDomain: string | null = ca.bundle.trustDomain;
  let signGate: Promise<void> | null = null;
  const make = () =>
    createIdentityManager({
      paths: dataPaths(dir),
      datacenter: 'dc1',
      async sign(req) {
        calls.push({ at: clock.now(), csr: req.csr });
        await signGate;
        if (failures > 0) {
          failures -= 1;
          throw new Error('no responders');
        }
        return ca.sign(req.csr, clock.now(), 10 * 3600_000);
      },
      trustDomain: () => trustDomain,
      clock,
      random: () => 0.5,
      logger: createSilentLogger(),
      onChange: (id) => changes.push(id),
      ...(opts.registered ? { registered: opts.registered } : {}),
      ...(opts.dnsNames ? { dnsNames: opts.dnsNames } : {}),
    });
  return {
    dir,
    clock,
    ca,
    calls,
    changes,
    make,
    setTrustDomain: (v: string | null) => (trustDomain = v),
    /** Holds sign answers until the returned function is called. */
    holdSign(): () => void {
      let release!: () => void;
      signGate = new Promise<void>((r) => (release = r));
      return () => {
        signGate = null;
        release();
      };
    },
  };
}

t.test('a new instance gets a key written 0600 and a certificate for its SPIFFE ID', async (t) => {
  const s = await setup(t);
  const im = s.make();
  await im.add({ id: 'api-1', service: 'api' });
  const cert = im.get('api-1');
  t.ok(cert);
  t.equal(cert!.spiffeId, `spiffe://${s.ca.bundle.trustDomain}/ns/default/dc/dc1/svc/api`);
  const mode = (await stat(join(s.dir, 'instances/api-1/key.pem'))).mode & 0o777;
  t.equal(mode, 0o600);
  t.same(inspectCert(await readFile(join(s.dir, 'instances/api-1/cert.pem'), 'utf8')).uris, [
    cert!.spiffeId,
  ]);
  t.same(s.changes, ['api-1']);
  im.stop();
});

t.test('renewal is scheduled at 75 % of the lifetime when random is 0.5', async (t) => {
  const s = await setup(t);
  const im = s.make();
  await im.add({ id: 'api-1', service: 'api' });
  const c = im.get('api-1')!;
  const expected = c.notBefore + Math.floor((c.notAfter - c.notBefore) * 0.75);
  t.equal(im.status('api-1')!.renewAt, new Date(expected).toISOString());
  s.clock.advance(expected - s.clock.now() - 1);
  await settle();
  t.equal(s.calls.length, 1, 'not renewed before its time');
  s.clock.advance(1);
  await waitFor('the renewal', () => s.calls.length === 2);
  t.equal(s.calls.length, 2, 'renewed at its time');
  im.stop();
});

t.test('failed requests retry with backoff and keep the current certificate', async (t) => {
  const s = await setup(t, { failFirst: 3 });
  const im = s.make();
  await im.add({ id: 'web-1', service: 'web' });
  t.equal(im.get('web-1'), null);
  t.equal(im.status('web-1')!.lastError?.code, 'REMORA_E_AGENT_SIGN_FAILED');
  for (let i = 0; i < 3; i++) {
    const n = s.calls.length;
    s.clock.advance(60_000);
    await waitFor('a retry', () => s.calls.length > n);
  }
  await waitFor('the certificate', () => im.get('web-1'));
  t.ok(im.get('web-1'), 'certificate obtained once control answers');
  t.equal(im.status('web-1')!.lastError, null);
  t.ok(s.calls.length >= 4);
  im.stop();
});

t.test('a restarted agent reuses the certificate and key on disk', async (t) => {
  const s = await setup(t);
  const first = s.make();
  await first.add({ id: 'api-1', service: 'api' });
  const before = first.get('api-1')!;
  first.stop();
  const second = s.make();
  await second.add({ id: 'api-1', service: 'api' });
  t.equal(s.calls.length, 1, 'no new request');
  t.equal(second.get('api-1')!.certPem, before.certPem);
  t.equal(second.get('api-1')!.keyPem, before.keyPem);
  second.stop();
});

t.test('a root rotation renews every certificate at once', async (t) => {
  const s = await setup(t);
  const im = s.make();
  await im.add({ id: 'a', service: 'a' });
  await im.add({ id: 'b', service: 'b' });
  t.equal(s.calls.length, 2);
  im.renewAll('root rotation');
  await waitFor('two renewals', () => s.calls.length === 4);
  t.equal(s.calls.length, 4);
  im.stop();
});

t.test(
  'an instance waits for the trust bundle before asking, and asks when it is known',
  async (t) => {
    const s = await setup(t);
    s.setTrustDomain(null);
    const im = s.make();
    await im.add({ id: 'a', service: 'a' });
    t.equal(s.calls.length, 0);
    t.equal(im.status('a')!.lastError?.code, 'REMORA_E_AGENT_CONTROL_UNAVAILABLE');
    s.setTrustDomain(s.ca.bundle.trustDomain);
    im.trustBundleKnown();
    await waitFor('the certificate', () => im.get('a'));
    t.equal(s.calls.length, 1);
    t.ok(im.get('a'));
    im.stop();
  },
);

t.test(
  'a new instance asks for its certificate only once Consul lists it, with its key ready',
  async (t) => {
    let registered = false;
    const s = await setup(t, { registered: () => registered });
    const im = s.make();
    await im.add({ id: 'api-1', service: 'api' });
    t.equal(s.calls.length, 0, 'control is not asked for an instance it cannot find');
    t.equal(im.status('api-1')!.lastError, null, 'waiting for the registration is not an error');
    const mode = (await stat(join(s.dir, 'instances/api-1/key.pem'))).mode & 0o777;
    t.equal(mode, 0o600, 'the key is generated meanwhile');
    s.clock.advance(3600_000);
    im.trustBundleKnown();
    await settle();
    t.equal(s.calls.length, 0, 'neither timers nor the trust bundle ask before the registration');
    registered = true;
    im.requestIfMissing('api-1');
    await waitFor('the certificate', () => im.get('api-1'));
    t.equal(s.calls.length, 1);
    t.same(s.changes, ['api-1']);
    im.stop();
  },
);

t.test(
  'a registration during a failing request asks again at once instead of after the backoff',
  async (t) => {
    const s = await setup(t, { failFirst: 1, registered: () => true });
    const release = s.holdSign();
    const im = s.make();
    const added = im.add({ id: 'api-1', service: 'api' });
    await waitFor('the first request', () => s.calls.length === 1);
    im.requestIfMissing('api-1');
    release();
    await added;
    // the fake clock does not move: only the registration's request can bring the certificate
    await waitFor('the certificate', () => im.get('api-1'));
    t.equal(s.calls.length, 2);
    im.stop();
  },
);

t.test('renewals do not wait for a registration', async (t) => {
  let registered = true;
  const s = await setup(t, { registered: () => registered });
  const im = s.make();
  await im.add({ id: 'api-1', service: 'api' });
  registered = false;
  im.renewAll('root rotation');
  await waitFor('the renewal', () => s.calls.length === 2);
  t.equal(s.calls.length, 2);
  im.stop();
});

t.test('a registration that lands while the files are read asks once, not twice', async (t) => {
  const s = await setup(t, { registered: () => true });
  const im = s.make();
  const added = im.add({ id: 'api-1', service: 'api' });
  im.requestIfMissing('api-1');
  await added;
  await waitFor('the certificate', () => im.get('api-1'));
  await settle();
  t.equal(s.calls.length, 1, 'one certificate issued');
  im.stop();
});

t.test(
  "a gateway's certificate carries its DNS names, and is replaced when they change, not before they are known",
  async (t) => {
    let names: string[] | null = null;
    const s = await setup(t, { dnsNames: () => names });
    const im = s.make();
    await im.add({ id: 'ingress', service: 'ingress' });
    t.same(im.get('ingress')!.dnsNames, [], 'names unknown yet: the identity alone');
    names = ['*.ingress.consul', 'api.example.com'];
    im.namesChanged('ingress');
    await waitFor('the certificate with its names', () => im.get('ingress')!.dnsNames.length === 2);
    const pem = await readFile(join(s.dir, 'instances/ingress/cert.pem'), 'utf8');
    t.same(inspectCert(pem).dnsNames, names, 'written with its names');
    const calls = s.calls.length;
    im.namesChanged('ingress');
    await settle();
    t.equal(s.calls.length, calls, 'the same names: no new certificate');
    s.clock.advance(9 * 3600_000);
    await waitFor('the renewal', () => s.calls.length > calls);
    await settle();
    t.same(im.get('ingress')!.dnsNames, names, 'a renewal keeps them');
    im.stop();

    names = null;
    const again = s.make();
    await again.add({ id: 'ingress', service: 'ingress' });
    t.same(
      again.get('ingress')!.dnsNames,
      ['*.ingress.consul', 'api.example.com'],
      'after a restart, the names on disk stay while the entry is unknown',
    );
    const before = s.calls.length;
    again.namesChanged('ingress');
    await settle();
    t.equal(s.calls.length, before, 'and nothing is asked for');
    names = ['*.ingress.consul'];
    again.namesChanged('ingress');
    await waitFor(
      'the certificate without the host',
      () => again.get('ingress')!.dnsNames.length === 1,
    );
    t.pass('a host dropped from the entry leaves the certificate');
    again.stop();
  },
);
