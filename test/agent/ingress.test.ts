// The agent's reading of an ingress-gateway entry: what applies, what is left out and said, and
// the listeners it plans (wildcards expanded, default hosts, protocol checks).
import t from 'tap';
import { decodeIngressEntry, planIngress } from '../../agent/ingress.ts';
import { decodeDefinitionFile } from '../../agent/definitions.ts';
import type { Protocol } from '../../lib/proxy-api/index.ts';

t.test('an entry in either spelling gives its listeners, services, hosts and limits', async (t) => {
  const pascal = decodeIngressEntry({
    Kind: 'ingress-gateway',
    Name: 'ingress',
    Defaults: { MaxConnections: 10, MaxConcurrentRequests: 5 },
    Listeners: [
      {
        Port: 8080,
        Protocol: 'http',
        Services: [
          {
            Name: 'api',
            Hosts: ['API.example.com'],
            MaxConcurrentRequests: 7,
            RequestHeaders: { Add: { 'X-Gateway': 'ingress' } },
            ResponseHeaders: { Remove: ['x-debug'] },
          },
        ],
      },
      { Port: 9000, Protocol: 'tcp', Services: [{ Name: 'db' }] },
    ],
  });
  t.same(pascal.problems, []);
  t.same(pascal.entry, {
    name: 'ingress',
    defaults: { maxConnections: 10, maxConcurrentRequests: 5 },
    listeners: [
      {
        port: 8080,
        protocol: 'http',
        services: [
          {
            name: 'api',
            hosts: ['api.example.com'],
            limits: { maxConcurrentRequests: 7 },
            requestHeaders: { add: { 'x-gateway': 'ingress' } },
            responseHeaders: { remove: ['x-debug'] },
          },
        ],
        tls: null,
      },
      { port: 9000, protocol: 'tcp', services: [{ name: 'db', hosts: [], limits: {} }], tls: null },
    ],
  });
  const snake = decodeIngressEntry({
    Kind: 'ingress-gateway',
    Name: 'ingress',
    listeners: [{ port: 9000, services: [{ name: 'db' }] }],
  });
  t.same(snake.entry.listeners, [
    { port: 9000, protocol: 'tcp', services: [{ name: 'db', hosts: [], limits: {} }], tls: null },
  ]);
});

t.test('what cannot apply is left out and said; the rest stays', async (t) => {
  const { entry, problems } = decodeIngressEntry({
    Kind: 'ingress-gateway',
    Name: 'ingress',
    Listeners: [
      { Port: 8080, Protocol: 'http', Services: [{ Name: 'api' }] },
      { Port: 8080, Protocol: 'http', Services: [{ Name: 'web' }] },
      { Port: 0, Protocol: 'http', Services: [{ Name: 'web' }] },
      { Port: 8081, Protocol: 'udp', Services: [{ Name: 'web' }] },
      { Port: 8082, Protocol: 'tcp', Services: [{ Name: 'a' }, { Name: 'b' }] },
      { Port: 8083, Protocol: 'tcp', Services: [{ Name: '*' }] },
      { Port: 8084, Protocol: 'tcp', Services: [{ Name: 'a', Hosts: ['a.example.com'] }] },
      {
        Port: 8085,
        Protocol: 'http',
        Services: [
          { Name: 'ok' },
          { Name: '*', Hosts: ['x.example.com'] },
          { Name: 'bad', Hosts: ['a.*.example.com'] },
          { Name: 'Not A Name' },
        ],
      },
    ],
  });
  t.same(
    entry.listeners.map((l) => [l.port, l.services.map((s) => s.name)]),
    [
      [8080, ['api']],
      [8085, ['ok']],
    ],
    'the listeners and services that apply',
  );
  const expected = [
    /Listeners\[1\]\.Port 8080 is already a listener's/,
    /Listeners\[2\]\.Port must be a port/,
    /"udp" is not one of tcp, http, http2, grpc/,
    /tcp and has 2 services; a tcp listener has exactly one/,
    /tcp and names the wildcard service "\*"/,
    /Hosts cannot be set on a tcp listener/,
    /Hosts cannot be set for the wildcard service/,
    /"a\.\*\.example\.com" may hold a wildcard only/,
    /Name must be a service name or "\*"/,
  ];
  for (const re of expected)
    t.ok(
      problems.some((p) => re.test(p)),
      String(re),
    );
  t.equal(problems.length, expected.length + 1, 'and port 8084 left with no service');
  t.same(decodeIngressEntry({ Kind: 'ingress-gateway', Name: 'x', Listeners: 3 }).problems, [
    'ingress-gateway x: Listeners must be a list; the gateway has no listener',
  ]);
});

t.test(
  "a listener's TLS: the gateway's, the listener's own keys over it; what cannot be served leaves the listener out with the field named",
  async (t) => {
    const http = (port: number, tls?: Record<string, unknown>, extra: object = {}) => ({
      Port: port,
      Protocol: 'http',
      Services: [{ Name: `s${port}`, ...extra }],
      ...(tls ? { TLS: tls } : {}),
    });
    const d = decodeIngressEntry({
      Kind: 'ingress-gateway',
      Name: 'ingress',
      TLS: {
        Enabled: true,
        TLSMinVersion: 'TLSv1_2',
        CipherSuites: ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
      },
      Listeners: [
        http(8001),
        http(8002, { TLSMinVersion: 'TLSv1_3', CipherSuites: [] }),
        http(8003, { Enabled: false, tls_max_version: 'TLSv1_2' }),
        http(8004, { TLSMaxVersion: 'TLSv1_9' }),
        http(8005, { CipherSuites: ['TLS_NOPE'] }),
        http(8006, { CipherSuites: ['TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'] }),
        http(8007, { TLSMinVersion: 'TLSv1_0' }),
        http(8008, { SDS: { ClusterName: 'sds', CertResource: 'cert' } }),
        http(8009, undefined, {
          TLS: { SDS: { CertResource: 'api-cert' } },
          Hosts: ['a.example.com'],
        }),
        {
          Port: 9000,
          Protocol: 'tcp',
          Services: [{ Name: 'db' }],
          TLS: { TLSMaxVersion: 'TLSv1_2' },
        },
      ],
    });
    const suites = ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'];
    t.same(
      d.entry.listeners.map((l) => [l.port, l.tls]),
      [
        [8001, { minVersion: 'TLSv1_2', cipherSuites: suites }],
        [8003, { minVersion: 'TLSv1_2', maxVersion: 'TLSv1_2', cipherSuites: suites }],
        [8007, { minVersion: 'TLSv1_2', cipherSuites: suites }],
        [8008, { minVersion: 'TLSv1_2', cipherSuites: suites }],
        [8009, { minVersion: 'TLSv1_2', cipherSuites: suites }],
        [9000, { minVersion: 'TLSv1_2', maxVersion: 'TLSv1_2', cipherSuites: suites }],
      ],
      'TLS listeners; a listener cannot turn the gateway’s TLS off (as in Consul); tcp listeners terminate TLS too',
    );
    t.same(d.problems, []);
    const byField = Object.fromEntries(d.coded.map((p) => [p.field, p]));
    t.match(byField['ingress-gateway ingress Listeners[3].TLS.TLSMaxVersion'], {
      code: 'REMORA_E_AGENT_INGRESS_TLS_INVALID',
      message: /"TLSv1_9" is not a TLS version; use one of TLS_AUTO.*port 8004 is left out/,
    });
    t.match(byField['ingress-gateway ingress Listeners[4].TLS.CipherSuites'], {
      code: 'REMORA_E_AGENT_INGRESS_TLS_INVALID',
      message: /"TLS_NOPE" is not a suite the gateway can use/,
    });
    t.match(byField['ingress-gateway ingress Listeners[5].TLS.CipherSuites'], {
      code: 'REMORA_E_AGENT_INGRESS_TLS_INVALID',
      message: /only ECDSA suites.*RSA key/,
    });
    t.match(byField['ingress-gateway ingress Listeners[6].TLS.TLSMinVersion'], {
      code: 'REMORA_E_AGENT_INGRESS_NOT_APPLIED',
      message: /TLSv1_0 is below TLS 1.2.*port 8007 takes TLSv1_2/,
    });
    t.match(byField['ingress-gateway ingress Listeners[7].TLS.SDS'], {
      code: 'REMORA_E_AGENT_INGRESS_SDS_UNSUPPORTED',
      message: /external SDS server, which Remora does not support/,
    });
    t.match(byField['ingress-gateway ingress Listeners[8].Services[0].TLS.SDS'], {
      code: 'REMORA_E_AGENT_INGRESS_SDS_UNSUPPORTED',
    });
    t.match(byField['ingress-gateway ingress TLS.CipherSuites'], {
      code: 'REMORA_E_AGENT_INGRESS_TLS_INVALID',
      message: /cannot be set with TLSMinVersion TLSv1_3.*port 8002 is left out/,
    });
    t.equal(d.coded.length, 7);
    const gatewayBad = decodeIngressEntry({
      Kind: 'ingress-gateway',
      Name: 'gw',
      TLS: { Enabled: true, TLSMinVersion: 'TLSv1_3', TLSMaxVersion: 'TLSv1_2' },
      Listeners: [http(8001), http(8002, { TLSMinVersion: 'TLSv1_2' })],
    });
    t.same(
      gatewayBad.entry.listeners.map((l) => l.port),
      [8002],
      "the gateway's bad value leaves out the listeners that take it",
    );
    t.equal(gatewayBad.coded[0]?.field, 'ingress-gateway gw TLS.TLSMaxVersion');
  },
);

t.test('the plan fills in default hosts, expands * and checks protocols', async (t) => {
  const protocols: Record<string, Protocol> = {
    api: 'http',
    web: 'http',
    admin: 'http',
    db: 'tcp',
    greeter: 'grpc',
  };
  const { entry } = decodeIngressEntry({
    Kind: 'ingress-gateway',
    Name: 'ingress',
    Defaults: { MaxConnections: 3 },
    Listeners: [
      {
        Port: 8080,
        Protocol: 'http',
        Services: [{ Name: 'api', Hosts: ['api.example.com'] }, { Name: '*' }, { Name: 'db' }],
      },
      { Port: 9000, Protocol: 'tcp', Services: [{ Name: 'db' }] },
      { Port: 9001, Protocol: 'tcp', Services: [{ Name: 'api' }] },
    ],
  });
  const plan = planIngress(entry, {
    gateway: 'ingress',
    protocolOf: (s) => protocols[s] ?? 'tcp',
    catalog: ['api', 'web', 'db', 'greeter', 'consul', 'ingress', 'web-sidecar-proxy', 'admin'],
  });
  t.same(
    plan.listeners.map((l) => [l.port, l.services.map((s) => [s.name, s.hosts])]),
    [
      [
        8080,
        [
          ['api', ['api.example.com']],
          ['web', ['web.ingress.*']],
          ['admin', ['admin.ingress.*']],
        ],
      ],
      [9000, [['db', []]]],
    ],
    'named hosts kept, * reaches the http services only, default hosts filled in',
  );
  t.same(plan.listeners[0]!.services[0]!.limits, { maxConnections: 3 }, 'Defaults apply');
  t.equal(plan.problems.length, 2);
  t.match(plan.problems[0], /service db is tcp .* the listener http; db is left out/);
  t.match(plan.problems[1], /service api is http .* the listener tcp/);
  const none = planIngress(entry, { gateway: 'ingress', protocolOf: () => 'http', catalog: null });
  t.same(
    none.listeners[0]!.services.map((s) => s.name),
    ['api', 'db'],
    'a * expands to nothing while the catalog is unknown',
  );
});

t.test('a definition of kind ingress-gateway runs a proxy without app or sidecar', async (t) => {
  const ok = decodeDefinitionFile(
    JSON.stringify({
      service: { kind: 'ingress-gateway', name: 'ingress', port: 8888, address: '10.0.0.5' },
    }),
    'gw.json',
  );
  t.same(ok.problems, []);
  const def = ok.services[0]!;
  t.equal(def.kind, 'ingress-gateway');
  t.equal(def.address, '10.0.0.5');
  t.same(def.sidecar?.upstreams, []);
  t.equal(def.sidecar?.transparent, false);
  const pascal = decodeDefinitionFile(
    JSON.stringify({ Service: { Kind: 'ingress-gateway', Name: 'ingress' } }),
    'gw.json',
  );
  t.equal(pascal.services[0]?.kind, 'ingress-gateway', 'PascalCase, port optional');
  t.equal(pascal.services[0]?.port, 0);
  const withSidecar = decodeDefinitionFile(
    JSON.stringify({
      service: {
        kind: 'ingress-gateway',
        name: 'ingress',
        connect: { sidecar_service: {} },
      },
    }),
    'gw.json',
  );
  t.match(
    withSidecar.problems[0]?.message,
    /field service.connect cannot be set on an ingress gateway/,
  );
  const mesh = decodeDefinitionFile(
    JSON.stringify({ service: { kind: 'mesh-gateway', name: 'out' } }),
    'gw.json',
  );
  t.match(mesh.problems[0]?.message, /"mesh-gateway" is not supported/);
  t.equal(mesh.problems[0]?.code, 'REMORA_E_AGENT_DEFINITION_INVALID');
});
