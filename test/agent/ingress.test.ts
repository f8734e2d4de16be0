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
      },
      { port: 9000, protocol: 'tcp', services: [{ name: 'db', hosts: [], limits: {} }] },
    ],
  });
  const snake = decodeIngressEntry({
    Kind: 'ingress-gateway',
    Name: 'ingress',
    listeners: [{ port: 9000, services: [{ name: 'db' }] }],
  });
  t.same(snake.entry.listeners, [
    { port: 9000, protocol: 'tcp', services: [{ name: 'db', hosts: [], limits: {} }] },
  ]);
});

t.test('what cannot apply is left out and said; the rest stays', async (t) => {
  const { entry, problems } = decodeIngressEntry({
    Kind: 'ingress-gateway',
    Name: 'ingress',
    TLS: { Enabled: true },
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
    /TLS on the gateway's listeners is not built/,
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
