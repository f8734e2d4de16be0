// The terminating-gateway entry in the embedded catalog: stored in Consul's spelling, refused
// where Consul refuses it, and `/v1/health/connect/<service>` answering with the gateways that
// link the service, as Consul's catalog answers.
import t from 'tap';
import { decodeConfigEntry } from '../../../lib/devconsul/config-entries.ts';
import { checkTerminatingGateway } from '../../../lib/devconsul/terminating-gateway.ts';
import { startTestConsul } from '../../helpers/devconsul.ts';

const decode = (entry: Record<string, unknown>) => {
  const e = decodeConfigEntry(
    JSON.stringify({ Kind: 'terminating-gateway', Name: 'tgw', ...entry }),
  );
  checkTerminatingGateway(e);
  return e;
};

async function call(url: string, method: string, path: string, body?: unknown) {
  const r = await fetch(url + path, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: r.status, text: await r.text(), index: r.headers.get('x-consul-index') };
}

t.test('linked services are stored in Consul’s spelling', async (t) => {
  const e = decode({
    services: [
      { name: 'db', ca_file: '/etc/ca.pem', cert_file: '/c.pem', key_file: '/k.pem', sni: 'db.x' },
      { Name: '*' },
    ],
  });
  t.same(e.Services, [
    { Name: 'db', CAFile: '/etc/ca.pem', CertFile: '/c.pem', KeyFile: '/k.pem', SNI: 'db.x' },
    { Name: '*' },
  ]);
  t.same(decode({}).Services, [], 'no services: an empty list');
});

t.test('what Consul refuses in a terminating-gateway entry is refused', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ Name: 'a' }, /Services must be a list/],
    [[{ Name: '' }], /Service name cannot be blank/],
    [[{ Name: 'a' }, { Name: 'a' }], /Service "a" was specified more than once/],
    [[{ Name: 'a', CertFile: '/c' }], /must have a CertFile, CAFile, and KeyFile/],
    [[{ Name: 'a', CAFile: '/ca', KeyFile: '/k' }], /must have a CertFile, CAFile, and KeyFile/],
    [[{ Name: 'a', CAFile: 3 }], /CAFile must be a string/],
  ];
  for (const [services, message] of cases)
    t.throws(
      () => decode({ Services: services }),
      { status: 400, message },
      JSON.stringify(services),
    );
  t.doesNotThrow(
    () => decode({ Services: [{ Name: 'a', CAFile: '/ca' }] }),
    'a CA file alone is one-way TLS',
  );
});

t.test('health/connect of a linked service lists the terminating gateway, live', async (t) => {
  const dc = await startTestConsul(t);
  const put = (path: string, body: unknown) => call(dc.url, 'PUT', path, body);
  const connect = async (name: string) => {
    const r = await call(dc.url, 'GET', `/v1/health/connect/${name}?passing`);
    return {
      index: Number(r.index),
      ids: (JSON.parse(r.text) as { Service: { ID: string; Kind: string; Port: number } }[]).map(
        (e) => `${e.Service.ID}:${e.Service.Kind}:${e.Service.Port}`,
      ),
    };
  };
  // a legacy database registered by hand, no sidecar
  t.equal(
    (await put('/v1/agent/service/register', { Name: 'legacy', ID: 'legacy-1', Port: 5432 }))
      .status,
    200,
  );
  t.equal((await put('/v1/agent/service/register', { Name: 'other', Port: 7000 })).status, 200);
  t.equal(
    (
      await put('/v1/agent/service/register', {
        Kind: 'terminating-gateway',
        Name: 'tgw',
        ID: 'tgw-1',
        Port: 8443,
      })
    ).status,
    200,
  );
  t.same((await connect('legacy')).ids, [], 'not linked: nothing takes mesh calls for it');
  const before = await connect('legacy');
  // a blocking query wakes up when the entry links the service
  const woken = call(
    dc.url,
    'GET',
    `/v1/health/connect/legacy?passing&index=${before.index}&wait=5s`,
  );
  t.equal(
    (
      await put('/v1/config', {
        Kind: 'terminating-gateway',
        Name: 'tgw',
        Services: [{ Name: 'legacy' }],
      })
    ).status,
    200,
  );
  const w = await woken;
  t.ok(Number(w.index) > before.index, 'the blocking query returns with a higher index');
  t.same(
    (await connect('legacy')).ids,
    ['tgw-1:terminating-gateway:8443'],
    'the gateway answers for legacy',
  );
  t.same((await connect('other')).ids, [], 'not for a service it does not link');
  t.same((await connect('tgw')).ids, [], 'nor for itself');
  const catalogConnect = JSON.parse(
    (await call(dc.url, 'GET', '/v1/catalog/connect/legacy')).text,
  ) as { ServiceID: string }[];
  t.same(
    catalogConnect.map((e) => e.ServiceID),
    ['tgw-1'],
    'catalog/connect too',
  );

  // a critical gateway is not listed with ?passing
  await put('/v1/agent/service/register', {
    Kind: 'terminating-gateway',
    Name: 'tgw',
    ID: 'tgw-1',
    Port: 8443,
    Check: { CheckID: 'tgw-ready', TTL: '30s', Status: 'critical' },
  });
  t.same((await connect('legacy')).ids, [], 'a gateway failing its check is not listed');
  await put('/v1/agent/check/pass/tgw-ready', {});
  t.same((await connect('legacy')).ids, ['tgw-1:terminating-gateway:8443']);

  // the wildcard links every typical service of the catalog
  await put('/v1/config', { Kind: 'terminating-gateway', Name: 'tgw', Services: [{ Name: '*' }] });
  t.same((await connect('other')).ids, ['tgw-1:terminating-gateway:8443'], '"*" links other');
  t.same((await connect('tgw')).ids, [], 'but not the gateway itself');
  t.same((await connect('nothing')).ids, [], 'nor a service the catalog does not list');
  t.equal((await call(dc.url, 'DELETE', '/v1/config/terminating-gateway/tgw')).status, 200);
  t.same((await connect('legacy')).ids, [], 'deleting the entry unlinks');
});
