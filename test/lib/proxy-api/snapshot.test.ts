import t from 'tap';
/* eslint-disable @typescript-eslint/no-explicit-any -- mutation table over an untyped clone */
import { decodeProxySnapshot } from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeSnapshot, makeUpstream } from '../../helpers/mesh-certs.ts';

const mesh = createMeshCerts();
const leaf = mesh.leaf('web');
const other = mesh.leaf('api');
const good = makeSnapshot(mesh, leaf, {
  upstreams: [makeUpstream(mesh, 'api', [20001, 20002], { localBindPort: 9191 })],
  intentions: {
    intentions: [
      {
        source: 'web',
        destination: 'api',
        permissions: [{ action: 'allow', http: { pathPrefix: '/v1', methods: ['GET'] } }],
      },
    ],
  },
});

t.test('a valid snapshot decodes to an equal value', async (t) => {
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(good))), good);
});

t.test('a snapshot with access logs decodes to an equal value', async (t) => {
  for (const accessLogs of [
    { type: 'stderr' },
    { type: 'file', path: '/var/log/remora/a.log' },
    { type: 'stdout', textFormat: '%START_TIME% %RESPONSE_CODE%' },
    { type: 'file', path: '/var/log/a.log', jsonFormat: '{"code":"%RESPONSE_CODE%"}' },
  ]) {
    const s = { ...good, accessLogs };
    t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
  }
});

t.test('a snapshot with consistent hashing decodes to an equal value', async (t) => {
  const s = structuredClone(good);
  s.upstreams[0]!.loadBalancer = 'maglev';
  s.upstreams[0]!.hashPolicies = [
    { field: 'cookie', fieldValue: 'session', terminal: true },
    { field: 'cookie', fieldValue: 'sid', cookie: { ttlSeconds: 3600, path: '/app' } },
    { field: 'cookie', fieldValue: 'tab', cookie: { ttlSeconds: 0 } },
    { sourceIp: true },
  ];
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
});

t.test('a snapshot with rate limits decodes to an equal value', async (t) => {
  const s = structuredClone(good);
  s.inbound.rateLimit = {
    instance: { requestsPerSecond: 0.5, burst: 10 },
    routes: [
      { pathExact: '/login', requestsPerSecond: 1, burst: 1 },
      { pathPrefix: '/api/', requestsPerSecond: 100, burst: 200 },
      { pathRegex: '/items/[0-9]+', requestsPerSecond: 5, burst: 5 },
    ],
  };
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
});

t.test('a snapshot with mesh TLS parameters decodes to an equal value', async (t) => {
  const s = {
    ...good,
    meshTls: {
      incoming: { minVersion: 'TLSv1_3', maxVersion: 'TLS_AUTO' },
      outgoing: {
        maxVersion: 'TLSv1_2',
        cipherSuites: [
          'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
          'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305',
        ],
      },
    },
  };
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
});

/** A gateway's snapshot: `api` reached through one ingress listener (TLS when `tls` is given). */
function gateway(tls?: Record<string, unknown>): any {
  const s: any = structuredClone(good);
  s.upstreams[0].listener = false;
  s.upstreams[0].protocol = 'http';
  s.ingress = {
    listeners: [
      {
        bindAddress: '127.0.0.1',
        bindPort: 8443,
        protocol: 'http',
        services: [{ upstream: 'api', hosts: ['api.example.com'] }],
        ...(tls ? { tls } : {}),
      },
    ],
  };
  return s;
}

t.test(
  "a gateway's TLS listener decodes to an equal value; bad TLS is refused by field",
  async (t) => {
    for (const tls of [
      {},
      { minVersion: 'TLSv1_3' },
      { maxVersion: 'TLSv1_2', cipherSuites: ['TLS_RSA_WITH_AES_128_GCM_SHA256'] },
    ]) {
      const s = gateway(tls);
      t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s, JSON.stringify(tls));
    }
    for (const [tls, field] of [
      [{ minVersion: 'TLSv1_0' }, 'minVersion'],
      [{ maxVersion: 'TLS_AUTO' }, 'maxVersion'],
      [{ cipherSuites: ['TLS_RSA_WITH_RC4_128_SHA'] }, 'cipherSuites'],
      [
        { minVersion: 'TLSv1_3', cipherSuites: ['TLS_RSA_WITH_AES_128_GCM_SHA256'] },
        'cipherSuites',
      ],
      [{ sni: 'x' }, 'sni'],
    ] as const)
      t.throws(
        () => decodeProxySnapshot(JSON.parse(JSON.stringify(gateway(tls)))),
        {
          code: 'REMORA_E_PROXY_SNAPSHOT_INVALID',
          message: new RegExp(`ingress\\.listeners\\[0\\]\\.tls\\.${field}`),
        },
        JSON.stringify(tls),
      );
  },
);

t.test('a snapshot with exposed paths decodes to an equal value', async (t) => {
  const s = {
    ...good,
    expose: [
      { path: '/metrics', localPathPort: 9102, listenerPort: 21500, protocol: 'http' as const },
      { path: '/health', localPathPort: 8080, listenerPort: 21501, protocol: 'http2' as const },
      {
        path: '/ready',
        localPathPort: 8080,
        listenerPort: 21502,
        protocol: 'http' as const,
        allowSources: ['10.0.0.5', 'fd00::5'],
      },
    ],
  };
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
});

t.test("a snapshot with the inbound's limits decodes to an equal value", async (t) => {
  const s = {
    ...good,
    inbound: {
      ...good.inbound,
      localConnectTimeoutMs: 250,
      localRequestTimeoutMs: 0,
      maxInboundConnections: 512,
    },
  };
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
});

/** A split of web's api upstream: 90 % to api, 10 % to api-v2. */
function withSplit(s: any): void {
  const v2 = makeUpstream(mesh, 'api-v2', [20003]);
  s.upstreams[0].splits = [
    { service: 'api', weight: 90 },
    { service: 'api-v2', weight: 10 },
  ];
  s.upstreams[0].targets = [
    {
      destinationName: v2.destinationName,
      destinationSpiffeId: v2.destinationSpiffeId,
      loadBalancer: v2.loadBalancer,
      resilience: v2.resilience,
      endpoints: v2.endpoints,
    },
  ];
}

t.test('a tcp upstream with failover targets decodes to an equal value', async (t) => {
  const s = mutate((s) => {
    withSplit(s);
    delete s.upstreams[0].splits;
    s.upstreams[0].protocol = 'tcp';
    s.upstreams[0].failover = ['api-v2'];
    s.upstreams[0].targets[0].failover = ['api'];
  });
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
});

t.test("an endpoint with a gateway subset's SNI decodes to an equal value", async (t) => {
  const s = mutate((s) => {
    s.upstreams[0].endpoints[0].sni = 'v2.api.default.dc1.internal.example.consul';
  });
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
});

/** The split of `withSplit`, and one route on web's api upstream. */
function withRoute(route: Record<string, unknown>): (s: any) => void {
  return (s) => {
    withSplit(s);
    s.upstreams[0].routes = [route];
  };
}

t.test('a snapshot with routes and a traffic split decodes to an equal value', async (t) => {
  const split = mutate((s) => {
    withSplit(s);
    s.upstreams[0].routes = [
      {
        match: { pathPrefix: '/v2/', header: [{ name: 'x-canary', present: true }] },
        query: [{ name: 'version', regex: '2|3' }],
        splits: [{ service: 'api-v2', weight: 100 }],
        requestHeaders: { set: { 'x-canary': '1' }, add: { 'x-b': '2' }, remove: ['x-c'] },
        responseHeaders: { remove: ['server'] },
        prefixRewrite: '/',
        maxRetries: 2,
        retryOn: [409, 429],
      },
    ];
    s.upstreams[0].splits[1].requestHeaders = { set: { 'x-version': 'v2' } };
    s.upstreams[0].splits[1].responseHeaders = { add: { 'x-served-by': 'api-v2' } };
  }) as any;
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(split))), split);
});

function mutate(fn: (s: any) => void): unknown {
  const s = structuredClone(good) as any;
  fn(s);
  return s;
}

const cases: Array<[string, (s: any) => void, string]> = [
  ['an unknown top-level field', (s) => (s.extra = 1), 'snapshot.extra'],
  ['a negative version', (s) => (s.version = -1), 'snapshot.version'],
  ['an out-of-range port', (s) => (s.inbound.bindPort = 70000), 'inbound.bindPort'],
  ['an unknown protocol', (s) => (s.inbound.protocol = 'udp'), 'inbound.protocol'],
  [
    'a destination that is not a SPIFFE ID',
    (s) => (s.upstreams[0].destinationSpiffeId = 'api'),
    'upstreams[0].destinationSpiffeId',
  ],
  [
    'an unknown balancer',
    (s) => (s.upstreams[0].loadBalancer = 'random'),
    'upstreams[0].loadBalancer',
  ],
  [
    'a zero endpoint weight',
    (s) => (s.upstreams[0].endpoints[0].weight = 0),
    'upstreams[0].endpoints[0].weight',
  ],
  ['a key that does not match the certificate', (s) => (s.tls.keyPem = other.keyPem), 'tls.keyPem'],
  [
    'a certificate for another identity',
    (s) => ((s.tls.certPem = other.certPem), (s.tls.keyPem = other.keyPem)),
    'tls.certPem',
  ],
  ['no roots', (s) => (s.tls.rootsPem = []), 'tls.rootsPem'],
  ['a leaf used as a root', (s) => (s.tls.rootsPem = [other.certPem]), 'tls.rootsPem[0]'],
  ['garbage as a certificate', (s) => (s.tls.certPem = 'nope'), 'tls.certPem'],
  [
    'an intention with both action and permissions',
    (s) => (s.intentions.intentions[0].action = 'allow'),
    'intentions.intentions[0]',
  ],
  [
    'an invalid path regex',
    (s) => (s.intentions.intentions[0].permissions[0].http.pathRegex = '('),
    'intentions.intentions[0].permissions[0].http.pathRegex',
  ],
  [
    'a lower-case method',
    (s) => (s.intentions.intentions[0].permissions[0].http.methods = ['get']),
    'intentions.intentions[0].permissions[0].http.methods[0]',
  ],
  ['a sample ratio above 1', (s) => (s.tracing.sampleRatio = 2), 'tracing.sampleRatio'],
  [
    'two upstreams on one local port',
    (s) => s.upstreams.push(structuredClone(s.upstreams[0])),
    'upstreams[1].localBindPort',
  ],
  [
    'split weights that do not add up to 100',
    (s) => (withSplit(s), (s.upstreams[0].splits[1].weight = 5)),
    'upstreams[0].splits',
  ],
  [
    'a split to a service that is not a target',
    (s) => (withSplit(s), (s.upstreams[0].splits[1].service = 'billing')),
    'upstreams[0].splits[1].service',
  ],
  [
    'a split target named twice',
    (s) => (withSplit(s), s.upstreams[0].targets.push(s.upstreams[0].targets[0])),
    'upstreams[0].targets[1].destinationName',
  ],
  [
    'a split on a tcp upstream',
    (s) => (withSplit(s), (s.upstreams[0].protocol = 'tcp')),
    'upstreams[0].splits',
  ],
  [
    'a route to a service that is not a target',
    withRoute({ match: { pathPrefix: '/x' }, splits: [{ service: 'billing', weight: 100 }] }),
    'upstreams[0].routes[0].splits[0].service',
  ],
  [
    'a prefix rewrite without a path match',
    withRoute({
      match: { methods: ['GET'] },
      splits: [{ service: 'api-v2', weight: 100 }],
      prefixRewrite: '/',
    }),
    'upstreams[0].routes[0].prefixRewrite',
  ],
  [
    'a route with a bad regex',
    withRoute({ match: { pathRegex: '(' }, splits: [{ service: 'api', weight: 100 }] }),
    'upstreams[0].routes[0].match.pathRegex',
  ],
  [
    'a query test with two kinds',
    withRoute({
      match: { pathPrefix: '/' },
      query: [{ name: 'v', exact: '2', present: true }],
      splits: [{ service: 'api', weight: 100 }],
    }),
    'upstreams[0].routes[0].query[0]',
  ],
  [
    'a route that changes content-length',
    withRoute({
      match: { pathPrefix: '/' },
      splits: [{ service: 'api', weight: 100 }],
      requestHeaders: { set: { 'content-length': '0' } },
    }),
    'upstreams[0].routes[0].requestHeaders.set.content-length',
  ],
  [
    'a header value with a line break',
    withRoute({
      match: { pathPrefix: '/' },
      splits: [{ service: 'api', weight: 100 }],
      responseHeaders: { add: { 'x-a': 'b\r\nset-cookie: x=1' } },
    }),
    'upstreams[0].routes[0].responseHeaders.add.x-a',
  ],
  [
    'a route retrying on something that is not a status',
    withRoute({
      match: { pathPrefix: '/' },
      splits: [{ service: 'api', weight: 100 }],
      retryOn: [429, 1000],
    }),
    'upstreams[0].routes[0].retryOn[1]',
  ],
  [
    "a split's header change to a hop-by-hop field",
    (s) => (withSplit(s), (s.upstreams[0].splits[1].requestHeaders = { remove: ['connection'] })),
    'upstreams[0].splits[1].requestHeaders.remove[0]',
  ],
  [
    'a split target without endpoints',
    (s) => (withSplit(s), delete s.upstreams[0].targets[0].endpoints),
    'upstreams[0].targets[0].endpoints',
  ],
  [
    'a route retrying on gRPC status OK',
    withRoute({
      match: { pathPrefix: '/' },
      splits: [{ service: 'api', weight: 100 }],
      retryOnGrpc: [14, 0],
    }),
    'upstreams[0].routes[0].retryOnGrpc[1]',
  ],
  [
    'a failover to a target it does not carry',
    (s) => (withSplit(s), (s.upstreams[0].failover = ['api-dr'])),
    'upstreams[0].failover[0]',
  ],
  [
    'a failover to itself',
    (s) => (withSplit(s), (s.upstreams[0].targets[0].failover = ['api-v2'])),
    'upstreams[0].targets[0].failover[0]',
  ],
  [
    'a failover naming a target twice',
    (s) => (withSplit(s), (s.upstreams[0].failover = ['api-v2', 'api-v2'])),
    'upstreams[0].failover[1]',
  ],
  [
    'a failover that is not a list of names',
    (s) => (withSplit(s), (s.upstreams[0].failover = [1])),
    'upstreams[0].failover[0]',
  ],
  [
    'access logs to a file without a path',
    (s) => (s.accessLogs = { type: 'file' }),
    'accessLogs.path',
  ],
  [
    'access logs to a relative path',
    (s) => (s.accessLogs = { type: 'file', path: 'logs/access.log' }),
    'accessLogs.path',
  ],
  [
    'access logs to stdout with a path',
    (s) => (s.accessLogs = { type: 'stdout', path: '/var/log/a.log' }),
    'accessLogs.path',
  ],
  ['access logs of an unknown type', (s) => (s.accessLogs = { type: 'syslog' }), 'accessLogs.type'],
  [
    'hash policies on a balancer that does not hash',
    (s) => (s.upstreams[0].hashPolicies = [{ sourceIp: true }]),
    'upstreams[0].hashPolicies',
  ],
  [
    'a hash policy on a field without its name',
    (s) => {
      s.upstreams[0].loadBalancer = 'ring_hash';
      s.upstreams[0].hashPolicies = [{ field: 'header' }];
    },
    'upstreams[0].hashPolicies[0].fieldValue',
  ],
  [
    'a hash policy on both a field and the source address',
    (s) => {
      s.upstreams[0].loadBalancer = 'ring_hash';
      s.upstreams[0].hashPolicies = [{ field: 'header', fieldValue: 'x', sourceIp: true }];
    },
    'upstreams[0].hashPolicies[0]',
  ],
  [
    'a hash policy on an unknown field',
    (s) => {
      s.upstreams[0].loadBalancer = 'ring_hash';
      s.upstreams[0].hashPolicies = [{ field: 'body', fieldValue: 'x' }];
    },
    'upstreams[0].hashPolicies[0].field',
  ],
  [
    'a made-up cookie for a header policy',
    (s) => {
      s.upstreams[0].loadBalancer = 'ring_hash';
      s.upstreams[0].hashPolicies = [
        { field: 'header', fieldValue: 'x', cookie: { ttlSeconds: 1 } },
      ];
    },
    'upstreams[0].hashPolicies[0].cookie',
  ],
  [
    'a made-up cookie whose Path would add an attribute',
    (s) => {
      s.upstreams[0].loadBalancer = 'ring_hash';
      s.upstreams[0].hashPolicies = [
        { field: 'cookie', fieldValue: 'sid', cookie: { ttlSeconds: 1, path: '/; Secure' } },
      ];
    },
    'upstreams[0].hashPolicies[0].cookie',
  ],
  [
    'a made-up cookie whose name is no token',
    (s) => {
      s.upstreams[0].loadBalancer = 'ring_hash';
      s.upstreams[0].hashPolicies = [
        { field: 'cookie', fieldValue: 'sid\r\nx-evil: 1', cookie: { ttlSeconds: 1 } },
      ];
    },
    'upstreams[0].hashPolicies[0].cookie',
  ],
  [
    'a made-up cookie with a negative lifetime',
    (s) => {
      s.upstreams[0].loadBalancer = 'ring_hash';
      s.upstreams[0].hashPolicies = [
        { field: 'cookie', fieldValue: 'sid', cookie: { ttlSeconds: -1 } },
      ];
    },
    'upstreams[0].hashPolicies[0].cookie.ttlSeconds',
  ],
  [
    'a rate limit of no requests',
    (s) => (s.inbound.rateLimit = { instance: { requestsPerSecond: 0, burst: 1 } }),
    'inbound.rateLimit.instance.requestsPerSecond',
  ],
  [
    'a rate limit without a burst',
    (s) => (s.inbound.rateLimit = { instance: { requestsPerSecond: 1 } }),
    'inbound.rateLimit.instance.burst',
  ],
  [
    'a rate-limit route with two paths',
    (s) =>
      (s.inbound.rateLimit = {
        routes: [{ pathExact: '/a', pathPrefix: '/a', requestsPerSecond: 1, burst: 1 }],
      }),
    'inbound.rateLimit.routes[0]',
  ],
  [
    'a rate-limit route with no leading slash',
    (s) =>
      (s.inbound.rateLimit = { routes: [{ pathPrefix: 'a', requestsPerSecond: 1, burst: 1 }] }),
    'inbound.rateLimit.routes[0].pathPrefix',
  ],
  [
    'a rate-limit route with a bad regex',
    (s) => (s.inbound.rateLimit = { routes: [{ pathRegex: '(', requestsPerSecond: 1, burst: 1 }] }),
    'inbound.rateLimit.routes[0].pathRegex',
  ],
  [
    'mesh TLS below TLS 1.2',
    (s) => (s.meshTls = { incoming: { minVersion: 'TLSv1_1' } }),
    'meshTls.incoming.minVersion',
  ],
  [
    'mesh TLS with a maximum below its minimum',
    (s) => (s.meshTls = { outgoing: { minVersion: 'TLSv1_3', maxVersion: 'TLSv1_2' } }),
    'meshTls.outgoing.maxVersion',
  ],
  [
    'mesh TLS with a suite Remora does not know',
    (s) => (s.meshTls = { incoming: { cipherSuites: ['TLS_RSA_WITH_RC4_128_SHA'] } }),
    'meshTls.incoming.cipherSuites',
  ],
  [
    'mesh TLS suites with TLS 1.3 as the minimum',
    (s) =>
      (s.meshTls = {
        incoming: {
          minVersion: 'TLSv1_3',
          cipherSuites: ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
        },
      }),
    'meshTls.incoming.cipherSuites',
  ],
  [
    'mesh TLS suites none of which fits an RSA certificate',
    (s) =>
      (s.meshTls = { incoming: { cipherSuites: ['TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'] } }),
    'meshTls.incoming.cipherSuites',
  ],
  [
    'an exposed path that is not absolute',
    (s) => (s.expose = [{ path: 'metrics', localPathPort: 1, listenerPort: 2, protocol: 'http' }]),
    'expose[0].path',
  ],
  [
    'an exposed path allowed to a host name',
    (s) =>
      (s.expose = [
        {
          path: '/ready',
          localPathPort: 1,
          listenerPort: 2,
          protocol: 'http',
          allowSources: ['consul.local'],
        },
      ]),
    'expose[0].allowSources[0]',
  ],
  [
    'an exposed path with a query string',
    (s) => (s.expose = [{ path: '/m?x=1', localPathPort: 1, listenerPort: 2, protocol: 'http' }]),
    'expose[0].path',
  ],
  [
    'two exposed paths on one port',
    (s) =>
      (s.expose = [
        { path: '/a', localPathPort: 1, listenerPort: 2, protocol: 'http' },
        { path: '/b', localPathPort: 1, listenerPort: 2, protocol: 'http' },
      ]),
    'expose[1].listenerPort',
  ],
  [
    'an exposed path on the sidecar port',
    (s) => {
      s.inbound.bindPort = 21000;
      s.expose = [{ path: '/a', localPathPort: 1, listenerPort: 21000, protocol: 'http' }];
    },
    'expose[0].listenerPort',
  ],
  [
    'an exposed path on port 0',
    (s) => (s.expose = [{ path: '/a', localPathPort: 1, listenerPort: 0, protocol: 'http' }]),
    'expose[0].listenerPort',
  ],
  [
    'an exposed path in a protocol it cannot be',
    (s) => (s.expose = [{ path: '/a', localPathPort: 1, listenerPort: 2, protocol: 'grpc' }]),
    'expose[0].protocol',
  ],
  [
    'access logs in a format with an unknown operator',
    (s) => (s.accessLogs = { type: 'stdout', textFormat: '%UPSTREAM_COLOUR%' }),
    'accessLogs.textFormat',
  ],
  [
    'access logs in a JSON format that is no JSON',
    (s) => (s.accessLogs = { type: 'stdout', jsonFormat: '{' }),
    'accessLogs.jsonFormat',
  ],
  [
    'access logs in two formats',
    (s) => (s.accessLogs = { type: 'stdout', jsonFormat: '{}', textFormat: '%DURATION%' }),
    'accessLogs.jsonFormat',
  ],
  [
    'access logs in a format that is not a string',
    (s) => (s.accessLogs = { type: 'stdout', textFormat: 5 }),
    'accessLogs.textFormat',
  ],
  [
    'a local connect timeout of 0',
    (s) => (s.inbound.localConnectTimeoutMs = 0),
    'inbound.localConnectTimeoutMs',
  ],
  [
    'a local request timeout that is not a whole number',
    (s) => (s.inbound.localRequestTimeoutMs = 1.5),
    'inbound.localRequestTimeoutMs',
  ],
  [
    'a negative connection limit',
    (s) => (s.inbound.maxInboundConnections = -1),
    'inbound.maxInboundConnections',
  ],
  [
    'an endpoint SNI that is empty',
    (s) => (s.upstreams[0].endpoints[0].sni = ''),
    'upstreams[0].endpoints[0].sni',
  ],
  [
    'an inbound key it does not know',
    (s) => (s.inbound.maxConnections = 10),
    'inbound.maxConnections',
  ],
  [
    'an instance SPIFFE ID for another service',
    (s) => (s.instance.service = 'api'),
    'instance.spiffeId',
  ],
];

for (const [what, fn, field] of cases) {
  t.test(`a snapshot with ${what} is refused naming ${field}`, async (t) => {
    try {
      decodeProxySnapshot(mutate(fn));
      t.fail('accepted');
    } catch (err: any) {
      t.equal(err.code, 'REMORA_E_PROXY_SNAPSHOT_INVALID');
      t.equal(err.details.field, field);
      t.notMatch(err.message, /PRIVATE KEY/);
    }
  });
}

t.test('JWT providers and intention JWT requirements decode; bad ones are named', async (t) => {
  const { makeKey } = await import('../../helpers/jwt.ts');
  const key = makeKey('ES256');
  const s = structuredClone(good);
  s.intentions.intentions[0]!.jwt = {
    providers: [{ name: 'okta', verifyClaims: [{ path: ['role'], value: 'admin' }] }],
  };
  s.intentions.intentions[0]!.permissions![0]!.jwt = { providers: [{ name: 'okta' }] };
  s.jwtProviders = [
    {
      name: 'okta',
      issuer: 'https://issuer.example',
      audiences: ['api'],
      keys: [key.jwk],
      locations: [
        { header: { name: 'Authorization', valuePrefix: 'Bearer ', forward: true } },
        { queryParam: { name: 'token' } },
        { cookie: { name: 'jwt' } },
      ],
      forwarding: { headerName: 'x-jwt-payload', padForwardPayloadHeader: true },
      clockSkewSeconds: 30,
      cacheSize: 100,
    },
    {
      name: 'empty',
      keys: [],
      keysProblem: 'not fetched yet',
      locations: [{ cookie: { name: 'a' } }],
      clockSkewSeconds: 0,
      cacheSize: 0,
    },
  ];
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(s))), s);
  const bad: Array<[(x: any) => void, string]> = [
    [(x) => (x.jwtProviders[0].keys = [{ kty: 'oct', k: 'c2VjcmV0' }]), 'jwtProviders[0].keys[0]'],
    [(x) => (x.jwtProviders[0].locations = []), 'jwtProviders[0].locations'],
    [
      (x) => (x.jwtProviders[0].locations = [{ header: { name: 'a b' } }]),
      'jwtProviders[0].locations[0].header.name',
    ],
    [(x) => (x.jwtProviders[1].name = 'okta'), 'jwtProviders[1].name'],
    [(x) => (x.intentions.intentions[0].jwt = { providers: [] }), 'intentions.intentions[0].jwt'],
  ];
  for (const [mutate, field] of bad) {
    const x: any = JSON.parse(JSON.stringify(s));
    mutate(x);
    t.throws(
      () => decodeProxySnapshot(x),
      {
        code: 'REMORA_E_PROXY_SNAPSHOT_INVALID',
        message: new RegExp(field.replace(/[[\].]/g, '\\$&')),
      },
      field,
    );
  }
});
