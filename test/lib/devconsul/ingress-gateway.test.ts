// The ingress-gateway entry in the embedded catalog: stored in Consul's spelling, refused where
// Consul refuses it (listener shape, hosts, and a service whose protocol is not its listener's).
import t from 'tap';
import { decodeConfigEntry } from '../../../lib/devconsul/config-entries.ts';
import { checkIngressGateway } from '../../../lib/devconsul/ingress-gateway.ts';
import { startTestConsul } from '../../helpers/devconsul.ts';

const decode = (entry: Record<string, unknown>) => {
  const e = decodeConfigEntry(
    JSON.stringify({ Kind: 'ingress-gateway', Name: 'ingress', ...entry }),
  );
  checkIngressGateway(e);
  return e;
};

async function call(url: string, method: string, path: string, body?: unknown) {
  const r = await fetch(url + path, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: r.status, text: await r.text() };
}

t.test(
  'listeners and services are stored in Consul’s spelling, protocols lower case',
  async (t) => {
    const e = decode({
      listeners: [
        { port: 8080, protocol: 'HTTP', services: [{ name: 'api', hosts: ['api.example.com'] }] },
        { Port: 9000, Services: [{ Name: 'db' }] },
      ],
    });
    t.same(e.Listeners, [
      { Port: 8080, Protocol: 'http', Services: [{ Name: 'api', Hosts: ['api.example.com'] }] },
      { Port: 9000, Protocol: 'tcp', Services: [{ Name: 'db' }] },
    ]);
    t.same(decode({}).Listeners, [], 'no listeners: an empty list');
  },
);

t.test('what Consul refuses in an ingress-gateway entry is refused', async (t) => {
  const http = (services: unknown[]) => ({
    Listeners: [{ Port: 8080, Protocol: 'http', Services: services }],
  });
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      {
        Listeners: [
          { Port: 1, Services: [{ Name: 'a' }] },
          { Port: 1, Services: [{ Name: 'b' }] },
        ],
      },
      /port 1 declared on two listeners/,
    ],
    [
      { Listeners: [{ Port: 1, Protocol: 'udp', Services: [{ Name: 'a' }] }] },
      /unsupported protocol/,
    ],
    [{ Listeners: [{ Port: 1, Services: [] }] }, /No service declared for listener with port 1/],
    [
      { Listeners: [{ Port: 1, Services: [{ Name: 'a' }, { Name: 'b' }] }] },
      /Multiple services per listener are only supported for L7 protocols/,
    ],
    [
      { Listeners: [{ Port: 1, Services: [{ Name: '*' }] }] },
      /Wildcard service name is only valid for L7 protocols/,
    ],
    [
      { Listeners: [{ Port: 1, Services: [{ Name: 'a', Hosts: ['a.example.com'] }] }] },
      /Associating hosts to a service is not supported for the tcp protocol/,
    ],
    [http([{ Name: '*', Hosts: ['x.example.com'] }]), /Associating hosts to a wildcard service/],
    [
      http([{ Name: 'a', Hosts: ['a.*.com'] }]),
      /wildcard specifier is only allowed as the leftmost/,
    ],
    [http([{ Name: 'a', Hosts: ['bad_host!'] }]), /must be a valid DNS hostname/],
    [
      http([
        { Name: 'a', Hosts: ['x.example.com'] },
        { Name: 'b', Hosts: ['x.example.com'] },
      ]),
      /Hosts must be unique within a specific listener/,
    ],
    [http([{ Name: '' }]), /Service name cannot be blank/],
  ];
  for (const [entry, re] of cases) t.throws(() => decode(entry), re, JSON.stringify(entry));
  t.doesNotThrow(
    () => decode(http([{ Name: 'a', Hosts: ['*.example.com', 'a.example.com'] }, { Name: '*' }])),
    'a leftmost wildcard and a * service beside named ones',
  );
});

t.test("the entry's TLS is checked and refused where Consul refuses it", async (t) => {
  const http = (services: unknown[] = [{ Name: 'a' }], tls?: unknown) => ({
    Port: 8443,
    Protocol: 'http',
    Services: services,
    ...(tls === undefined ? {} : { TLS: tls }),
  });
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { TLS: { Enabled: true, TLSMinVersion: 'TLSv9' }, Listeners: [http()] },
      /no matching TLS version found for TLSv9, please specify one of \[TLS_AUTO, TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3\]/,
    ],
    [
      { Listeners: [http(undefined, { TLSMinVersion: 'TLSv1_3', TLSMaxVersion: 'TLSv1_2' })] },
      /configuring max version TLSv1_2 less than the configured min version TLSv1_3 is invalid/,
    ],
    [
      { Listeners: [http(undefined, { CipherSuites: ['TLS_NOPE', 'TLS_RSA_WITH_RC4_128_SHA'] })] },
      /no matching Envoy TLS cipher suite found for TLS_NOPE,TLS_RSA_WITH_RC4_128_SHA/,
    ],
    [
      {
        TLS: {
          TLSMinVersion: 'TLSv1_3',
          CipherSuites: ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
        },
        Listeners: [http()],
      },
      /configuring CipherSuites is only applicable to connections negotiated with TLS 1.2 or earlier, TLSMinVersion is set to TLSv1_3/,
    ],
    [
      { TLS: { Enabled: true }, Listeners: [http([{ Name: 'a', Hosts: ['*'] }])] },
      /Host '\*' is not allowed when TLS is enabled, all hosts must be valid DNS records to add as a DNSSAN/,
    ],
    [
      { TLS: { SDS: { CertResource: 'cert' } }, Listeners: [http()] },
      /TLS\.SDS\.ClusterName is required if CertResource is set$/,
    ],
    [
      { TLS: { SDS: { ClusterName: 'sds' } }, Listeners: [http()] },
      /TLS\.SDS\.CertResource is required if ClusterName is set for gateway \(listener on port 8443\)/,
    ],
    [
      {
        TLS: { SDS: { ClusterName: 'sds', CertResource: 'c' } },
        Listeners: [http([{ Name: 'a', TLS: { SDS: { CertResource: 'a-cert' } } }])],
      },
      /A service specifying TLS\.SDS\.CertResource must have at least one item in Hosts \(service "a" on listener on port 8443\)/,
    ],
    [{ Listeners: [http(undefined, { Enabled: 'yes' })] }, /Enabled must be a bool/],
    [
      { Listeners: [http(undefined, { Sni: 'x' })] },
      /invalid config key "Listeners\[0\]\.TLS\.Sni"/,
    ],
  ];
  for (const [entry, re] of cases) t.throws(() => decode(entry), re, JSON.stringify(entry));

  const ok = decode({
    tls: {
      enabled: true,
      tls_min_version: 'TLSv1_0',
      cipher_suites: ['TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256'],
    },
    Listeners: [
      http([{ Name: 'a', Hosts: ['a.example.com'] }], { TLSMaxVersion: 'TLSv1_2' }),
      { Port: 9443, Protocol: 'tcp', Services: [{ Name: 'db' }], TLS: { Enabled: true } },
    ],
  });
  t.same(
    ok.TLS,
    {
      Enabled: true,
      TLSMinVersion: 'TLSv1_0',
      CipherSuites: ['TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256'],
    },
    'stored in Consul’s spelling',
  );
  t.same(
    (ok.Listeners as { TLS?: unknown }[]).map((l) => l.TLS),
    [{ TLSMaxVersion: 'TLSv1_2' }, { Enabled: true }],
  );
  t.doesNotThrow(
    () => decode({ Listeners: [http([{ Name: 'a', Hosts: ['*'] }], { Enabled: true })] }),
    "a * host with a listener's TLS only (Consul checks the gateway's Enabled)",
  );
  t.doesNotThrow(
    () =>
      decode({
        TLS: { SDS: { ClusterName: 'sds' } },
        Listeners: [
          http([{ Name: 'a', Hosts: ['a.example.com'], TLS: { SDS: { CertResource: 'a' } } }], {
            SDS: { CertResource: 'listener-cert' },
          }),
        ],
      }),
    'SDS complete across the gateway, the listener and a service',
  );
});

t.test('a write whose service speaks another protocol than its listener is refused', async (t) => {
  const dc = await startTestConsul(t);
  const entry = {
    Kind: 'ingress-gateway',
    Name: 'ingress',
    Listeners: [{ Port: 8080, Protocol: 'http', Services: [{ Name: 'api' }, { Name: '*' }] }],
  };
  const refused = await call(dc.url, 'PUT', '/v1/config', entry);
  t.equal(refused.status, 400, 'api is tcp until its service-defaults says otherwise');
  t.match(
    refused.text,
    'service "api" has protocol "tcp", which does not match defined listener protocol "http"',
  );
  await call(dc.url, 'PUT', '/v1/config', {
    Kind: 'service-defaults',
    Name: 'api',
    Protocol: 'http',
  });
  t.equal((await call(dc.url, 'PUT', '/v1/config', entry)).status, 200);
  const read = JSON.parse((await call(dc.url, 'GET', '/v1/config/ingress-gateway/ingress')).text);
  t.same(read.Listeners, entry.Listeners, 'read back as written');
  t.equal(read.Kind, 'ingress-gateway');
});
