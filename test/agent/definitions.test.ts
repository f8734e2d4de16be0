import t from 'tap';
import fc from 'fast-check';
import {
  checkUpstreamLayer,
  decodeDefinitionFile,
  layeredResilience,
  mergeDefinitions,
} from '../../agent/definitions.ts';
import { DEFAULT_RESILIENCE } from '../../lib/proxy-api/index.ts';

const snake = {
  service: {
    name: 'web',
    id: 'web-1',
    port: 8080,
    tags: ['v1'],
    meta: { team: 'a' },
    connect: {
      sidecar_service: {
        port: 21000,
        proxy: {
          config: { protocol: 'http' },
          upstreams: [
            {
              destination_name: 'api',
              local_bind_port: 9191,
              config: { protocol: 'http', load_balancer: 'least_request', connect_timeout_ms: 250 },
            },
          ],
        },
      },
    },
  },
};

const pascal = {
  Service: {
    Name: 'web',
    ID: 'web-1',
    Port: 8080,
    Tags: ['v1'],
    Meta: { team: 'a' },
    Connect: {
      SidecarService: {
        Port: 21000,
        Proxy: {
          Config: { protocol: 'http' },
          Upstreams: [
            {
              DestinationName: 'api',
              LocalBindPort: 9191,
              Config: { protocol: 'http', load_balancer: 'least_request', connect_timeout_ms: 250 },
            },
          ],
        },
      },
    },
  },
};

t.test('snake_case and PascalCase definitions decode to the same service', async (t) => {
  const a = decodeDefinitionFile(JSON.stringify(snake), 'a.json');
  const b = decodeDefinitionFile(JSON.stringify(pascal), 'a.json');
  t.same(a.problems, []);
  t.same(b.problems, []);
  t.same(a.services, b.services);
  const s = a.services[0]!;
  t.equal(s.id, 'web-1');
  t.equal(s.sidecar?.port, 21000);
  t.equal(s.sidecar?.protocol, 'http');
  t.equal(s.sidecar?.localServicePort, 8080);
  t.equal(s.sidecar?.localServiceAddress, '127.0.0.1');
  const u = s.sidecar!.upstreams[0]!;
  t.equal(u.destinationName, 'api');
  t.equal(u.localBindAddress, '127.0.0.1');
  t.equal(u.loadBalancer, 'least_request');
  t.equal(u.resilience.connectTimeoutMs, 250);
  t.equal(u.resilience.requestTimeoutMs, DEFAULT_RESILIENCE.requestTimeoutMs);
});

t.test('the ID defaults to the name and the protocol to tcp, as in Consul', async (t) => {
  const r = decodeDefinitionFile(
    JSON.stringify({ service: { name: 'echo', port: 7000, connect: { sidecar_service: {} } } }),
    'e.json',
  );
  t.same(r.problems, []);
  t.equal(r.services[0]!.id, 'echo');
  t.equal(r.services[0]!.sidecar!.protocol, 'tcp');
  t.equal(r.services[0]!.sidecar!.port, null);
});

t.test(
  'a bad service is reported with file, field and reason while its neighbours load',
  async (t) => {
    const r = decodeDefinitionFile(
      JSON.stringify({
        services: [
          { name: 'a', port: 1 },
          {
            name: 'b',
            port: 2,
            connect: {
              sidecar_service: {
                proxy: { upstreams: [{ destination_name: 'x', local_bind_port: 70000 }] },
              },
            },
          },
          { name: 'c', port: 3 },
        ],
      }),
      '/etc/d/x.json',
    );
    t.same(
      r.services.map((s) => s.id),
      ['a', 'c'],
    );
    t.equal(r.problems.length, 1);
    const p = r.problems[0]!;
    t.equal(p.code, 'REMORA_E_AGENT_DEFINITION_INVALID');
    t.equal(p.details.file, '/etc/d/x.json');
    t.equal(
      p.details.field,
      'services[1].connect.sidecar_service.proxy.upstreams[0].local_bind_port',
    );
    t.match(p.message, /70000/);
  },
);

t.test('invalid JSON is reported as unreadable with the parser reason', async (t) => {
  const r = decodeDefinitionFile('{"service": ', 'bad.json');
  t.same(r.services, []);
  t.equal(r.problems[0]!.code, 'REMORA_E_AGENT_DEFINITION_UNREADABLE');
  t.match(r.problems[0]!.message, /bad\.json/);
});

t.test('a key given in both spellings is refused rather than guessed', async (t) => {
  const r = decodeDefinitionFile(JSON.stringify({ service: { name: 'a', Name: 'b' } }), 'f.json');
  t.equal(r.services.length, 0);
  t.match(r.problems[0]!.details.field, /Name/);
});

t.test("the sidecar's settings for its app, and a bad one refused naming its field", async (t) => {
  const def = (config: Record<string, unknown>) =>
    decodeDefinitionFile(
      JSON.stringify({
        service: { name: 'a', port: 1, connect: { sidecar_service: { proxy: { config } } } },
      }),
      'f.json',
    );
  const ok = def({
    local_connect_timeout_ms: 250,
    local_request_timeout_ms: 0,
    max_inbound_connections: 100,
  });
  t.same(ok.problems, []);
  t.same(ok.services[0]!.sidecar!.inbound, {
    localConnectTimeoutMs: 250,
    localRequestTimeoutMs: 0,
    maxInboundConnections: 100,
  });
  t.same(def({}).services[0]!.sidecar!.inbound, {}, 'none given: the service-defaults or defaults');
  const bad = def({ local_connect_timeout_ms: 0 });
  t.same(bad.services, []);
  t.equal(
    bad.problems[0]!.details.field,
    'service.connect.sidecar_service.proxy.config.local_connect_timeout_ms',
  );
  t.match(bad.problems[0]!.message, /must be an integer from 1 to 3600000, got number 0/);
});

t.test(
  'exposed paths: decoded in both spellings, each bad one refused naming its field',
  async (t) => {
    const def = (expose: unknown, sidecar: Record<string, unknown> = {}) =>
      decodeDefinitionFile(
        JSON.stringify({
          service: {
            name: 'a',
            port: 8080,
            connect: {
              sidecar_service: {
                ...sidecar,
                proxy: {
                  expose,
                  upstreams: [{ destination_name: 'b', local_bind_port: 9191 }],
                },
              },
            },
          },
        }),
        'f.json',
      );
    const ok = def({
      paths: [
        { path: '/metrics', local_path_port: 9102, listener_port: 21500 },
        { Path: '/health', LocalPathPort: 8080, ListenerPort: 21501, Protocol: 'http2' },
      ],
    });
    t.same(ok.problems, []);
    t.same(ok.services[0]!.sidecar!.expose, [
      { path: '/metrics', localPathPort: 9102, listenerPort: 21500, protocol: 'http' },
      { path: '/health', localPathPort: 8080, listenerPort: 21501, protocol: 'http2' },
    ]);
    t.same(def(undefined).services[0]!.sidecar!.expose, [], 'none');
    const p = 'service.connect.sidecar_service.proxy.expose';
    const refused: [unknown, Record<string, unknown>, string, RegExp][] = [
      [
        { paths: [{ local_path_port: 1, listener_port: 2 }] },
        {},
        `${p}.paths[0].path`,
        /is required/,
      ],
      [
        { paths: [{ path: 'metrics', local_path_port: 1, listener_port: 2 }] },
        {},
        `${p}.paths[0].path`,
        /must start with \/, got "metrics"/,
      ],
      [
        { paths: [{ path: '/m?x', local_path_port: 1, listener_port: 2 }] },
        {},
        `${p}.paths[0].path`,
        /must be a path alone/,
      ],
      [
        { paths: [{ path: '/m', listener_port: 2 }] },
        {},
        `${p}.paths[0].local_path_port`,
        /required/,
      ],
      [
        {
          paths: [
            { path: '/a', local_path_port: 1, listener_port: 2 },
            { path: '/b', local_path_port: 1, listener_port: 2 },
          ],
        },
        {},
        `${p}.paths[1].listener_port`,
        /2 is already used by service.connect.sidecar_service.proxy.expose.paths\[0\]/,
      ],
      [
        { paths: [{ path: '/a', local_path_port: 1, listener_port: 21000 }] },
        { port: 21000 },
        `${p}.paths[0].listener_port`,
        /21000 is already used by the sidecar port/,
      ],
      [
        { paths: [{ path: '/a', local_path_port: 1, listener_port: 9191 }] },
        {},
        `${p}.paths[0].listener_port`,
        /9191 is already used by the upstream b/,
      ],
      [
        { paths: [{ path: '/a', local_path_port: 1, listener_port: 2, protocol: 'grpc' }] },
        {},
        `${p}.paths[0].protocol`,
        /must be one of/,
      ],
      [{ checks: 'yes' }, {}, `${p}.checks`, /must be true or false/],
    ];
    for (const [expose, sidecar, field, reason] of refused) {
      const r = def(expose, sidecar);
      t.same(r.services, [], JSON.stringify(expose));
      t.equal(r.problems[0]!.details.field, field);
      t.match(r.problems[0]!.message, reason);
    }
    // checks = true: the service's HTTP and gRPC checks become exposed paths; the rest stays
    const withChecks = decodeDefinitionFile(
      JSON.stringify({
        service: {
          name: 'a',
          port: 8080,
          checks: [
            { name: 'live', http: 'http://127.0.0.1:8080/health?deep=1', interval: '10s' },
            { name: 'tls', http: 'https://127.0.0.1:8443/health', interval: '10s' },
            { name: 'rpc', GRPC: '127.0.0.1:9090/api.v1', Interval: '10s' },
            { name: 'port', tcp: '127.0.0.1:8080', interval: '10s' },
          ],
          connect: {
            sidecar_service: {
              proxy: {
                expose: {
                  checks: true,
                  paths: [{ path: '/m', local_path_port: 1, listener_port: 2 }],
                },
              },
            },
          },
        },
      }),
      'f.json',
    );
    t.equal(withChecks.services.length, 1, 'the service runs');
    const sc = withChecks.services[0]!.sidecar!;
    t.equal(sc.expose.length, 1, 'explicit paths as they are');
    t.same(sc.exposeChecks, [
      { checks: [0], path: '/health', localPathPort: 8080, protocol: 'http' },
      { checks: [2], path: '/grpc.health.v1.Health/Check', localPathPort: 9090, protocol: 'http2' },
    ]);
    t.match(withChecks.problems, [
      {
        code: 'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
        message: `service definition f.json: field ${p}.checks is not applied to check 1 ("tls"): its URL is https, and an exposed listener speaks plain HTTP; the check keeps probing the app directly`,
      },
    ]);
    t.same(def({ checks: false }).services[0]!.sidecar!.exposeChecks, [], 'off: none');
  },
);

t.test('a sidecar without a port to forward to is refused', async (t) => {
  const r = decodeDefinitionFile(
    JSON.stringify({ service: { name: 'a', connect: { sidecar_service: {} } } }),
    'f.json',
  );
  t.equal(r.problems[0]!.details.field, 'service.port');
});

t.test('duplicate instance IDs across files keep the first and report the second', async (t) => {
  const one = decodeDefinitionFile(JSON.stringify({ service: { name: 'a', port: 1 } }), '1.json');
  const two = decodeDefinitionFile(JSON.stringify({ service: { name: 'a', port: 2 } }), '2.json');
  const m = mergeDefinitions([one, two]);
  t.equal(m.services.length, 1);
  t.equal(m.services[0]!.port, 1);
  t.equal(m.problems[0]!.code, 'REMORA_E_AGENT_DEFINITION_DUPLICATE');
  t.equal(m.problems[0]!.details.file, '2.json');
});

t.test(
  'a port two definitions listen on at the proxy address (sidecar, exposed path) keeps the first',
  async (t) => {
    const file = (name: string, sidecar: object) =>
      decodeDefinitionFile(
        JSON.stringify({ service: { name, port: 8080, connect: { sidecar_service: sidecar } } }),
        `${name}.json`,
      );
    const expose = (port: number) => ({
      proxy: {
        expose: { paths: [{ path: '/health', local_path_port: 8080, listener_port: port }] },
      },
    });
    const m = mergeDefinitions([
      file('a', { port: 21000, ...expose(21500) }),
      file('b', expose(21500)),
      file('c', { port: 21500 }),
      file('d', {
        port: 21001,
        proxy: { upstreams: [{ destination_name: 'x', local_bind_port: 21000 }] },
      }),
      file('e', { ...expose(21600) }),
      file('f', { proxy: { upstreams: [{ destination_name: 'y', local_bind_port: 9191 }] } }),
      file('g', { port: 9191 }),
    ]);
    t.same(
      m.services.map((s) => s.id),
      ['a', 'd', 'e', 'f', 'g'],
      'an upstream listener on loopback is not the proxy address',
    );
    t.same(
      m.problems.map((p) => [p.code, p.details.file, p.details.field, p.details.value]),
      [
        ['REMORA_E_AGENT_DEFINITION_DUPLICATE', 'b.json', 'port', 21500],
        ['REMORA_E_AGENT_DEFINITION_DUPLICATE', 'c.json', 'port', 21500],
      ],
    );
    t.match(
      m.problems[0]!.message,
      'port 21500, its exposed path /health of b, is already the exposed path /health of a; this one is skipped',
    );
  },
);

// --- properties -----------------------------------------------------------------------------

const nameArb = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/);
const portArb = fc.integer({ min: 1, max: 65535 });
const upstreamArb = fc.record({
  destination_name: nameArb,
  local_bind_port: portArb,
  config: fc.record({ protocol: fc.constantFrom('tcp', 'http', 'http2', 'grpc') }),
});
const serviceArb = fc.record({
  name: nameArb,
  port: portArb,
  tags: fc.array(fc.string(), { maxLength: 3 }),
  connect: fc.record({
    sidecar_service: fc.record({
      port: portArb,
      proxy: fc.record({
        config: fc.record({ protocol: fc.constantFrom('tcp', 'http') }),
        upstreams: fc.uniqueArray(upstreamArb, {
          maxLength: 4,
          selector: (u) => u.local_bind_port,
        }),
      }),
    }),
  }),
});

function toPascal(v: unknown, opaque = false): unknown {
  if (Array.isArray(v)) return v.map((x) => toPascal(x, opaque));
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(
    Object.entries(v).map(([k, x]) => {
      if (opaque) return [k, x];
      const pk =
        k === 'id' ? 'ID' : k.replace(/(^|_)([a-z])/g, (_m, _u, c: string) => c.toUpperCase());
      // proxy.config and meta are opaque maps in Consul: their keys stay as written
      return [pk, toPascal(x, k === 'config' || k === 'meta')];
    }),
  );
}

t.test('property: any valid definition decodes the same in snake_case and PascalCase', async () => {
  fc.assert(
    fc.property(serviceArb, (svc) => {
      const a = decodeDefinitionFile(JSON.stringify({ service: svc }), 'p.json');
      const b = decodeDefinitionFile(JSON.stringify(toPascal({ service: svc })), 'p.json');
      return (
        a.problems.length === 0 &&
        b.problems.length === 0 &&
        JSON.stringify(a.services) === JSON.stringify(b.services) &&
        a.services[0]!.sidecar!.upstreams.length ===
          svc.connect.sidecar_service.proxy.upstreams.length
      );
    }),
    { numRuns: 200 },
  );
});

t.test('property: the decoder never throws and every problem names file and field', async () => {
  fc.assert(
    fc.property(fc.jsonValue(), (doc) => {
      const r = decodeDefinitionFile(JSON.stringify(doc), 'q.json');
      return r.problems.every(
        (p) => p.details.file === 'q.json' && typeof p.details.field === 'string',
      );
    }),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(
      serviceArb,
      fc.constantFrom('port', 'name', 'tags', 'connect'),
      fc.oneof(fc.string(), fc.integer({ min: 70000 }), fc.constant(-1), fc.boolean()),
      (svc, key, bad) => {
        const broken = { ...svc, [key]: bad };
        const r = decodeDefinitionFile(
          JSON.stringify({ services: [broken, { name: 'ok', port: 1 }] }),
          'm.json',
        );
        // the healthy neighbour always loads; a bad value either decodes or names its field
        return (
          r.services.some((s) => s.id === 'ok') &&
          r.problems.every((p) => String(p.details.field).startsWith('services[0]'))
        );
      },
    ),
    { numRuns: 300 },
  );
});

t.test(
  "upstream settings layer Consul's UpstreamConfig under the definition's config",
  async (t) => {
    const defaults = {
      ConnectTimeoutMs: 2500,
      Limits: { MaxConnections: 100, MaxPendingRequests: 50 },
      PassiveHealthCheck: { MaxFailures: 3, BaseEjectionTime: '1m30s', Interval: '10s' },
    };
    const override = { Limits: { MaxConnections: 10 } };
    const own = { limits: { max_pending_requests: 7 }, protocol: 'http' };
    const r = layeredResilience([defaults, override, own]);
    t.equal(r.connectTimeoutMs, 2500, 'from Defaults');
    t.equal(r.circuitBreaker.maxConnections, 10, 'the Override beats Defaults');
    t.equal(r.circuitBreaker.maxPendingRequests, 7, "the definition's own config beats both");
    t.equal(r.circuitBreaker.maxRequests, DEFAULT_RESILIENCE.circuitBreaker.maxRequests);
    t.equal(r.outlier.consecutiveFailures, 3);
    t.equal(r.outlier.baseEjectionMs, 90_000, "Consul's duration becomes milliseconds");
    t.equal(r.requestTimeoutMs, DEFAULT_RESILIENCE.requestTimeoutMs, "Remora's default");

    t.equal(checkUpstreamLayer(defaults, 'UpstreamConfig.Defaults'), null);
    t.equal(
      checkUpstreamLayer({ Limits: { MaxConnections: -1 } }, 'UpstreamConfig.Defaults'),
      'UpstreamConfig.Defaults.Limits.MaxConnections must be an integer from 1 to 1000000, got number -1',
    );
    t.equal(
      checkUpstreamLayer({ PassiveHealthCheck: { BaseEjectionTime: 'soon' } }, 'X'),
      'X.PassiveHealthCheck.BaseEjectionTime must be a duration such as "30s", got string "soon"',
      'a duration that is not one is refused',
    );
    t.equal(checkUpstreamLayer([1], 'X'), 'X must be an object');
  },
);

t.test("a sidecar's proxy.mutual_tls_mode is read as Consul's registration field", (t) => {
  const def = (proxy: Record<string, unknown>) =>
    decodeDefinitionFile(
      JSON.stringify({
        service: { name: 'api', port: 8080, connect: { sidecar_service: { proxy } } },
      }),
      'api.json',
    );
  t.equal(def({ mutual_tls_mode: 'permissive' }).services[0]?.sidecar?.mutualTlsMode, 'permissive');
  t.equal(def({ MutualTLSMode: 'strict' }).services[0]?.sidecar?.mutualTlsMode, 'strict');
  t.equal(def({ mutual_tls_mode: '' }).services[0]?.sidecar?.mutualTlsMode, null, '"" is unset');
  t.equal(def({}).services[0]?.sidecar?.mutualTlsMode, null);
  const bad = def({ mutual_tls_mode: 'lenient' });
  t.equal(bad.services.length, 0, 'a bad value skips the service, as other bad fields do');
  t.match(
    bad.problems[0]?.message,
    /mutual_tls_mode must be one of strict, permissive, got "lenient"/,
  );
  t.end();
});
