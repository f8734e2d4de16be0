import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createCentralConfig,
  flattenSplits,
  failoverTargets,
  followRedirects,
  parseTargetName,
  resolveMutualTlsMode,
  resolverSettings,
  resolveShares,
  resolveTarget,
  targetName,
  type ResolverSettings,
  type SplitShare,
  MESH,
  PROXY_DEFAULTS,
  SERVICE_DEFAULTS,
  SERVICE_RESOLVER,
  SERVICE_ROUTER,
  SERVICE_SPLITTER,
} from '../../agent/central-config.ts';
import { dataPaths, ensureDir, writesSettled } from '../../agent/files.ts';
import { createLogger, createSilentLogger } from '../../lib/log/index.ts';
import { Writable } from 'node:stream';
import { waitFor } from '../../lib/util/index.ts';
import { createFakeConfigEntries } from './fakes.ts';
import { ACCESS_FORMAT_OPERATORS } from '../../lib/access-log/format.ts';
import { CIPHER_SUITES } from '../../lib/proxy-api/index.ts';

/** What JSON.parse says about a text that is not JSON. */
function jsonError(text: string): string {
  try {
    JSON.parse(text);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${text} is JSON`);
}

async function dataDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'remora-central-'));
  // background cache writes land before the directory goes
  t.teardown(async () => {
    await writesSettled();
    await rm(dir, { recursive: true, force: true });
  });
  await ensureDir(dir);
  return dir;
}

function central(
  dir: string,
  fake: ReturnType<typeof createFakeConfigEntries>,
  logger = createSilentLogger(),
) {
  let changes = 0;
  const c = createCentralConfig({
    consul: { watchConfigEntries: fake.watchConfigEntries } as never,
    paths: dataPaths(dir),
    logger,
    onChange: () => void (changes += 1),
  });
  return { c, changes: () => changes };
}

t.test('service-defaults wins over proxy-defaults, which covers the rest', async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [SERVICE_DEFAULTS]: [
      { Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'http' },
      { Kind: SERVICE_DEFAULTS, Name: 'ledger', Protocol: 'GRPC' },
      { Kind: SERVICE_DEFAULTS, Name: 'plain' },
    ],
    [PROXY_DEFAULTS]: [{ Kind: PROXY_DEFAULTS, Name: 'global', Config: { protocol: 'http2' } }],
  });
  const { c, changes } = central(dir, fake);
  t.equal(c.settled(), false, 'nothing known before Consul answers (no cache)');
  t.equal(c.protocol('api'), null);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('both answers', () => c.synced());
  t.equal(c.settled(), true);
  t.equal(c.protocol('api'), 'http');
  t.equal(c.protocol('ledger'), 'grpc', 'lowercased, as Consul normalizes it');
  t.equal(c.protocol('plain'), 'http2', 'an entry without Protocol leaves it to proxy-defaults');
  t.equal(c.protocol('web'), 'http2', 'no entry: proxy-defaults');
  t.equal(changes(), 1, 'one change once both kinds are known');

  fake.set(PROXY_DEFAULTS, []);
  t.equal(c.protocol('web'), null, 'proxy-defaults deleted: no protocol from Consul');
  t.equal(c.protocol('api'), 'http');
  t.equal(changes(), 2);
  fake.set(PROXY_DEFAULTS, []);
  t.equal(changes(), 2, 'the same answer again changes nothing');
});

t.test('an unknown protocol is reported with a code and ignored', async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [SERVICE_DEFAULTS]: [{ Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'htttp' }],
    [PROXY_DEFAULTS]: [{ Kind: PROXY_DEFAULTS, Name: 'global', Config: { protocol: 'udp' } }],
  });
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const { c } = central(dir, fake, createLogger({ component: 'agent', destination: stream }));
  c.start();
  t.teardown(() => c.stop());
  await waitFor('both answers', () => c.synced());
  t.equal(c.protocol('api'), null);
  const logged = (): number =>
    lines.filter((l) => l.includes('REMORA_E_AGENT_CENTRAL_CONFIG_INVALID')).length;
  t.equal(logged(), 2, 'each bad value logged');
  fake.set(SERVICE_DEFAULTS, [
    { Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'htttp' },
    { Kind: SERVICE_DEFAULTS, Name: 'web', Protocol: 'http' },
  ]);
  t.equal(logged(), 2, 'an answer that still carries it does not log it again');
  t.same(
    c.problems().map((p) => [p.code, p.message]),
    [
      [
        'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        'service-defaults of api sets protocol "htttp", which is not one of tcp, http, http2, grpc; the value is ignored',
      ],
      [
        'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        'proxy-defaults global sets protocol "udp", which is not one of tcp, http, http2, grpc; the value is ignored',
      ],
    ],
  );
  fake.set(SERVICE_DEFAULTS, [{ Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'http' }]);
  t.equal(c.protocol('api'), 'http');
  t.equal(c.problems().length, 1, 'a fixed entry clears its problem');
});

t.test('a restarted agent knows the protocols before Consul answers', async (t) => {
  const dir = await dataDir(t);
  const first = central(
    dir,
    createFakeConfigEntries({
      [SERVICE_DEFAULTS]: [
        { Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'grpc' },
        {
          Kind: SERVICE_DEFAULTS,
          Name: 'web',
          UpstreamConfig: { Overrides: [{ Name: 'api', ConnectTimeoutMs: 700 }] },
        },
      ],
      [PROXY_DEFAULTS]: [{ Kind: PROXY_DEFAULTS, Name: 'global', Config: { protocol: 'http' } }],
      [SERVICE_RESOLVER]: [
        {
          Kind: SERVICE_RESOLVER,
          Name: 'api',
          ConnectTimeout: '2.5s',
          LoadBalancer: { Policy: 'least_request' },
        },
      ],
      [SERVICE_ROUTER]: [
        {
          Kind: SERVICE_ROUTER,
          Name: 'api',
          Routes: [
            {
              Match: { HTTP: { PathPrefix: '/admin/' } },
              Destination: {
                Service: 'admin',
                PrefixRewrite: '/',
                RetryOnStatusCodes: [429],
                RetryOn: ['unavailable'],
              },
            },
          ],
        },
      ],
      [SERVICE_SPLITTER]: [
        {
          Kind: SERVICE_SPLITTER,
          Name: 'api',
          Splits: [{ Weight: 75 }, { Weight: 25, Service: 'api-v2' }],
        },
      ],
    }),
  );
  first.c.start();
  await waitFor('answers', () => first.c.synced());
  first.c.stop();
  await writesSettled();
  t.same(JSON.parse(await readFile(dataPaths(dir).cache('central-config'), 'utf8')), {
    services: { api: 'grpc' },
    global: 'http',
    upstreams: { web: { defaults: null, overrides: { api: { ConnectTimeoutMs: 700 } } } },
    inbound: {},
    accessLogs: null,
    meshTls: null,
    meshDestinationsOnly: false,
    jwtEntries: [],
    mutualTls: {},
    globalMutualTls: null,
    allowPermissive: false,
    sanitizeClientCert: false,
    metricsBind: null,
    expose: {},
    globalExpose: null,
    resolvers: { api: { connectTimeoutMs: 2500, loadBalancer: 'least_request' } },
    routers: {
      api: [
        {
          match: { pathPrefix: '/admin/' },
          service: 'admin',
          prefixRewrite: '/',
          retryOn: [429],
          retryOnGrpc: [14],
        },
      ],
    },
    splitters: {
      api: [
        { service: 'api', weight: 75 },
        { service: 'api-v2', weight: 25 },
      ],
    },
  });

  // Consul down: the watches only fail
  const down = createFakeConfigEntries();
  const silent = {
    ...down,
    watchConfigEntries: (() => ({ stop() {} })) as typeof down.watchConfigEntries,
  };
  const again = central(dir, silent);
  t.equal(again.c.settled(), true, 'settled from the cache');
  t.equal(again.c.synced(), false);
  t.equal(again.c.protocol('api'), 'grpc');
  t.equal(again.c.protocol('web'), 'http');
  t.same(
    again.c.upstreamLayers('web', 'api'),
    [{ ConnectTimeoutMs: 700 }],
    'and the upstream settings',
  );
  t.same(
    again.c.resolver('api'),
    { connectTimeoutMs: 2500, loadBalancer: 'least_request' },
    'and the resolvers',
  );
  t.same(
    again.c.splitter('api'),
    [
      { service: 'api', weight: 75 },
      { service: 'api-v2', weight: 25 },
    ],
    'and the splitters',
  );
  t.same(
    again.c.router('api'),
    [
      {
        match: { pathPrefix: '/admin/' },
        service: 'admin',
        prefixRewrite: '/',
        retryOn: [429],
        retryOnGrpc: [14],
      },
    ],
    'and the routers',
  );
});

t.test("a service-splitter's shares are read; what Remora cannot apply is reported", async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [SERVICE_SPLITTER]: [
      {
        Kind: SERVICE_SPLITTER,
        Name: 'api',
        Splits: [
          { Weight: 90.004 },
          { Weight: 9.996, Service: 'api-v2', RequestHeaders: { Set: { 'x-v': '2' } } },
          {
            Weight: 0,
            Service: 'api-v3',
            Namespace: 'default',
            ResponseHeaders: { Set: { 'x-v': 'a\r\nb' } },
          },
        ],
      },
      {
        Kind: SERVICE_SPLITTER,
        Name: 'short',
        Splits: [{ Weight: 60 }, { Weight: 30, Service: 'b' }],
      },
      { Kind: SERVICE_SPLITTER, Name: 'none', Splits: [] },
      { Kind: SERVICE_SPLITTER, Name: 'bad', Splits: [{ Weight: '50' }, { Weight: 50 }] },
      { Kind: SERVICE_SPLITTER, Name: 'sub', Splits: [{ Weight: 100, ServiceSubset: 'v1' }] },
    ],
  });
  const { c, changes } = central(dir, fake);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('all answers', () => c.synced());
  t.same(c.splitter('api'), [
    { service: 'api', weight: 90 },
    { service: 'api-v2', weight: 10, requestHeaders: { set: { 'x-v': '2' } } },
    { service: 'api-v3', weight: 0 },
  ]);
  t.same(
    c.splitter('sub'),
    [{ service: 'sub', weight: 100, subset: 'v1' }],
    'the subset is kept, though no resolver defines it',
  );
  for (const name of ['short', 'none', 'bad', 'web', 'constructor', 'toString'])
    t.equal(c.splitter(name), null, name);
  t.equal(c.router('constructor'), null, 'a service named like an Object property has no entry');
  t.equal(c.resolver('constructor'), null);
  t.same(c.upstreamLayers('constructor', 'constructor'), []);
  t.same(
    c
      .problems()
      .map((p) => p.message)
      .sort(),
    [
      'service-splitter of api: Splits[2].ResponseHeaders.Set: the value of "x-v" holds a control character (CR, LF, NUL) or is too long; the share applies without these header changes',
      'service-splitter of bad: Splits[0] needs a Weight from 0 to 100 and a Service name; the splitter is ignored and every call goes to bad',
      'service-splitter of none: Splits must be a non-empty list; the splitter is ignored and every call goes to none',
      'service-splitter of short: the weights add up to 90, not 100; the splitter is ignored and every call goes to short',
      'service-splitter of sub: Splits[0] names subset "v1" of sub, which sub\'s service-resolver does not define; those calls go to every healthy instance of sub until it does',
    ],
    'a Namespace of "default" is not reported',
  );
  const before = changes();
  fake.set(SERVICE_SPLITTER, []);
  t.equal(c.splitter('api'), null, 'a deleted splitter stops applying');
  t.equal(c.problems().length, 0, 'and its problems go');
  t.equal(changes(), before + 1);
});

t.test(
  "a service-resolver's timeouts and policy are read; what Remora cannot apply is reported",
  async (t) => {
    const dir = await dataDir(t);
    const fake = createFakeConfigEntries({
      [SERVICE_RESOLVER]: [
        {
          Kind: SERVICE_RESOLVER,
          Name: 'api',
          ConnectTimeout: '1m30s',
          RequestTimeout: 250_000_000, // nanoseconds, as Consul's API also takes it
          LoadBalancer: { Policy: 'round_robin' },
        },
        { Kind: SERVICE_RESOLVER, Name: 'zero', ConnectTimeout: '0s', RequestTimeout: '0s' },
        {
          Kind: SERVICE_RESOLVER,
          Name: 'odd',
          ConnectTimeout: 'soon',
          RequestTimeout: '2h',
          LoadBalancer: { Policy: 'random', HashPolicies: [{ Field: 'header', FieldValue: 'x' }] },
          Failover: { '*': { Datacenters: ['dc2'] } },
          Subsets: {},
        },
        {
          Kind: SERVICE_RESOLVER,
          Name: 'sticky',
          LoadBalancer: {
            Policy: 'maglev',
            HashPolicies: [
              { Field: 'cookie', FieldValue: 'sid', CookieConfig: { TTL: '1h', Path: '/' } },
              { Field: 'header' },
              { SourceIP: true, Terminal: true },
            ],
          },
        },
        {
          Kind: SERVICE_RESOLVER,
          Name: 'cookies',
          LoadBalancer: {
            Policy: 'ring_hash',
            HashPolicies: [
              { Field: 'cookie', FieldValue: 'a', CookieConfig: { Session: true } },
              { Field: 'cookie', FieldValue: 'b', CookieConfig: { Path: '/only' } },
              { Field: 'cookie', FieldValue: 'c', CookieConfig: { Session: true, TTL: '1m' } },
              { Field: 'header', FieldValue: 'd', CookieConfig: { TTL: '1m' } },
              { Field: 'cookie', FieldValue: 'e f', CookieConfig: { TTL: '1m' } },
              {
                Field: 'cookie',
                FieldValue: 'g',
                CookieConfig: { TTL: '1m', Path: '/; Domain=x' },
              },
              { Field: 'cookie', FieldValue: 'h', CookieConfig: { TTL: 'later' } },
            ],
          },
        },
        {
          Kind: SERVICE_RESOLVER,
          Name: 'lr',
          LoadBalancer: { Policy: 'least_request', LeastRequestConfig: { ChoiceCount: 3 } },
        },
      ],
    });
    const { c, changes } = central(dir, fake);
    c.start();
    t.teardown(() => c.stop());
    await waitFor('all answers', () => c.synced());
    t.same(c.resolver('api'), {
      connectTimeoutMs: 90_000,
      requestTimeoutMs: 250,
      loadBalancer: 'round_robin',
    });
    t.equal(c.resolver('zero'), null, '0s is Consul\'s "use the default"');
    t.equal(c.resolver('odd'), null, 'nothing usable');
    t.same(c.resolver('lr'), { loadBalancer: 'least_request' });
    t.same(c.resolver('sticky'), {
      loadBalancer: 'maglev',
      hashPolicies: [
        { field: 'cookie', fieldValue: 'sid', cookie: { ttlSeconds: 3600, path: '/' } },
        { sourceIp: true, terminal: true },
      ],
    });
    t.same(
      c.resolver('cookies')?.hashPolicies,
      [
        { field: 'cookie', fieldValue: 'a', cookie: { ttlSeconds: 0 } },
        { field: 'cookie', fieldValue: 'b' },
        { field: 'cookie', fieldValue: 'c' },
        { field: 'header', fieldValue: 'd' },
        { field: 'cookie', fieldValue: 'e f' },
        { field: 'cookie', fieldValue: 'g' },
        { field: 'cookie', fieldValue: 'h' },
      ],
      'a session cookie; without Session or TTL none is made; each bad one hashes only what callers send',
    );
    t.equal(c.resolver('web'), null, 'no resolver');
    t.same(
      c
        .problems()
        .map((p) => p.message)
        .sort(),
      [
        'service-resolver of cookies: LoadBalancer.HashPolicies[2].CookieConfig: a session cookie cannot have a TTL; it is ignored, and no cookie is made up for callers without one',
        'service-resolver of cookies: LoadBalancer.HashPolicies[3].CookieConfig: it applies to Field cookie only; it is ignored, and no cookie is made up for callers without one',
        'service-resolver of cookies: LoadBalancer.HashPolicies[4].CookieConfig: the cookie name "e f" is not a token (RFC 6265); it is ignored, and no cookie is made up for callers without one',
        'service-resolver of cookies: LoadBalancer.HashPolicies[5].CookieConfig: the cookie Path "/; Domain=x" must start with / and hold no ";", space or control character; it is ignored, and no cookie is made up for callers without one',
        'service-resolver of cookies: LoadBalancer.HashPolicies[6].CookieConfig: TTL "later" is not a duration; it is ignored, and no cookie is made up for callers without one',
        "service-resolver of lr: LeastRequestConfig.ChoiceCount 3 is not supported; Remora's proxies compare 2 instances",
        'service-resolver of odd: ConnectTimeout "soon" is not a duration from 1ms to 600s; callers keep their own',
        'service-resolver of odd: Failover["*"]: Datacenters ["dc2"] are not followed by Remora\'s agents, which resolve services in their own datacenter; it is ignored',
        'service-resolver of odd: LoadBalancer.HashPolicies apply to ring_hash or maglev only, not "random"; they are ignored',
        'service-resolver of odd: LoadBalancer.Policy "random" is not one Remora\'s proxies implement (round_robin, least_request, ring_hash, maglev); callers keep their own',
        'service-resolver of odd: RequestTimeout "2h" is not a duration from 1ms to 3600s; callers keep their own',
        'service-resolver of sticky: LoadBalancer.HashPolicies[1] must hash on a Field (header, cookie or query_parameter) with its FieldValue, or on SourceIP, one of them; it is ignored',
      ],
      'an empty Subsets map is not reported',
    );
    const before = changes();
    fake.set(SERVICE_RESOLVER, []);
    t.equal(c.resolver('api'), null, 'a deleted resolver stops applying');
    t.equal(c.problems().length, 0, 'and its problems go');
    t.equal(changes(), before + 1);
  },
);

t.test(
  "a service-resolver's subsets and the routes and splits naming them are read; bad ones are reported",
  async (t) => {
    const dir = await dataDir(t);
    const entries = {
      [SERVICE_RESOLVER]: [
        {
          Kind: SERVICE_RESOLVER,
          Name: 'api',
          DefaultSubset: 'v1',
          Subsets: {
            v1: { Filter: 'Service.Meta.version == v1' },
            v2: { Filter: 'Service.Meta.version == v2', OnlyPassing: true },
            all: {},
            Bad_Name: { Filter: '' },
            broken: { Filter: 'Service.Meta.version ==' },
            nofield: { Filter: 'Service.Colour == red' },
          },
        },
        { Kind: SERVICE_RESOLVER, Name: 'db', DefaultSubset: 'primary' },
      ],
      [SERVICE_SPLITTER]: [
        {
          Kind: SERVICE_SPLITTER,
          Name: 'api',
          Splits: [
            { Weight: 90, ServiceSubset: 'v1' },
            { Weight: 10, ServiceSubset: 'v2' },
          ],
        },
        { Kind: SERVICE_SPLITTER, Name: 'db', Splits: [{ Weight: 100, ServiceSubset: 'V1!' }] },
      ],
      [SERVICE_ROUTER]: [
        {
          Kind: SERVICE_ROUTER,
          Name: 'api',
          Routes: [
            { Match: { HTTP: { PathPrefix: '/beta/' } }, Destination: { ServiceSubset: 'v2' } },
            { Match: { HTTP: { PathPrefix: '/old/' } }, Destination: { ServiceSubset: 'v0' } },
          ],
        },
      ],
    };
    const { c } = central(dir, createFakeConfigEntries(entries));
    c.start();
    t.teardown(() => c.stop());
    await waitFor('all answers', () => c.synced());
    const resolver = {
      subsets: { v1: 'Service.Meta.version == v1', v2: 'Service.Meta.version == v2', all: '' },
      defaultSubset: 'v1',
    };
    t.same(c.resolver('api'), resolver);
    t.equal(c.resolver('db'), null, 'a default subset that is not defined is dropped');
    t.same(c.splitter('api'), [
      { service: 'api', weight: 90, subset: 'v1' },
      { service: 'api', weight: 10, subset: 'v2' },
    ]);
    t.same(c.splitter('db'), [{ service: 'db', weight: 100 }], 'a bad subset name is dropped');
    t.same(
      c.router('api')?.map((r) => r.subset),
      ['v2', 'v0'],
    );
    const problems = c.problems().map((p) => p.message);
    t.ok(
      problems.every((m, i) => c.problems()[i]?.code === 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID'),
    );
    t.match(problems.sort(), [
      /^service-resolver of api: subset "Bad_Name" is not a valid name \(a DNS label: lower-case letters, digits and dashes\); the subset is ignored, and calls for it go to every healthy instance of api$/,
      /^service-resolver of api: subset "broken" has a bad Filter \(.+\); the subset is ignored/,
      /^service-resolver of api: subset "nofield" has a bad Filter \(.*Service\.Colour.*\); the subset is ignored/,
      /^service-resolver of db: DefaultSubset "primary" is not one of its subsets \(none\); calls go to every healthy instance of db$/,
      /^service-router of api: Routes\[1\] names subset "v0" of api, which api's service-resolver does not define; those calls go to every healthy instance of api until it does$/,
      /^service-splitter of db: Splits\[0\]\.ServiceSubset "V1!" is not a subset name \(a DNS label\); it is ignored$/,
    ]);

    // a restarted agent has the subsets from its cache before Consul answers
    await writesSettled();
    const again = central(dir, createFakeConfigEntries(entries, { held: true }));
    again.c.start();
    t.teardown(() => again.c.stop());
    t.same(again.c.resolver('api'), resolver);
    t.same(again.c.router('api')?.[0]?.subset, 'v2');
    t.same(again.c.splitter('api')?.[1], { service: 'api', weight: 10, subset: 'v2' });
  },
);

t.test('splits and routes resolve to a service or one of its subsets', (t) => {
  const resolvers: Record<string, ResolverSettings> = {
    api: { subsets: { v1: 'Service.Meta.version == v1', v2: '' }, defaultSubset: 'v1' },
    db: { subsets: { replica: 'Service.Tags contains replica' } },
  };
  const splitters: Record<string, SplitShare[]> = {
    api: [
      { service: 'api', weight: 80, subset: 'v1' },
      { service: 'api', weight: 10, subset: 'v2' },
      { service: 'api', weight: 5 },
      { service: 'db', weight: 5, subset: 'replica' },
    ],
    // a share naming a subset does not follow the service's splitter
    db: [{ service: 'db-next', weight: 100 }],
  };
  const flat = flattenSplits('api', (n) => splitters[n] ?? null);
  t.same(flat, [
    { target: 'api/v1', weight: 80 },
    { target: 'api/v2', weight: 10 },
    { target: 'api', weight: 5 },
    { target: 'db/replica', weight: 5 },
  ]);
  const resolved = resolveShares(flat ?? [], (n) => resolvers[n] ?? null);
  t.same(
    resolved,
    [
      { target: 'api', weight: 85 },
      { target: 'api/v2', weight: 10 },
      { target: 'db/replica', weight: 5 },
    ],
    'the default subset is the service itself',
  );
  t.equal(
    resolveTarget('api', 'v9', (n) => resolvers[n] ?? null),
    'api',
    'an unknown subset',
  );
  t.equal(
    resolveTarget('web', 'v1', () => null),
    'web',
    'no resolver',
  );
  t.equal(
    resolveTarget('api', 'constructor', (n) => resolvers[n] ?? null),
    'api',
    "a subset named like an Object property is not Object's",
  );
  t.same(parseTargetName(targetName('api', 'v2')), { service: 'api', subset: 'v2' });
  t.same(parseTargetName('api'), { service: 'api' });
  t.end();
});

t.test(
  "a service-resolver's Redirect and Failover are read; what Remora cannot follow is reported",
  async (t) => {
    const dir = await dataDir(t);
    const subsets = { v1: { Filter: 'Service.Meta.version == v1' }, v2: {} };
    const entries = {
      [SERVICE_RESOLVER]: [
        { Kind: SERVICE_RESOLVER, Name: 'old', Redirect: { Service: 'api', ServiceSubset: 'v2' } },
        { Kind: SERVICE_RESOLVER, Name: 'self', Redirect: { Service: 'self' } },
        {
          Kind: SERVICE_RESOLVER,
          Name: 'api',
          Subsets: subsets,
          Failover: {
            '*': { Service: 'api-dr' },
            v2: {
              Targets: [{ ServiceSubset: 'v1' }, { Service: 'api-dr', Datacenter: 'dc2' }, {}],
            },
            v9: { Service: 'api-dr' },
          },
        },
        { Kind: SERVICE_RESOLVER, Name: 'far', Redirect: { Service: 'api', Peer: 'east' } },
        {
          Kind: SERVICE_RESOLVER,
          Name: 'both',
          Redirect: { Service: 'api' },
          Failover: { '*': { Service: 'api-dr' } },
        },
        { Kind: SERVICE_RESOLVER, Name: 'nosub', Redirect: { ServiceSubset: 'v3' } },
        {
          Kind: SERVICE_RESOLVER,
          Name: 'ns',
          Failover: { '*': { Service: 'x', Namespace: 'ops' } },
        },
      ],
    };
    const { c } = central(dir, createFakeConfigEntries(entries));
    c.start();
    t.teardown(() => c.stop());
    await waitFor('all answers', () => c.synced());
    t.same(c.resolver('old'), { redirect: { service: 'api', subset: 'v2' } });
    t.equal(c.resolver('self'), null, 'a redirect to the service itself changes nothing');
    const api = c.resolver('api');
    t.same(api?.failover, {
      '*': [{ service: 'api-dr' }],
      v2: [{ service: 'api', subset: 'v1' }, { service: 'api' }],
    });
    t.equal(c.resolver('far'), null, 'a redirect to a peer is not followed');
    t.same(
      c.resolver('both'),
      { failover: { '*': [{ service: 'api-dr' }] } },
      'with both, the Redirect is dropped (Consul refuses such an entry)',
    );
    t.equal(c.resolver('nosub'), null);
    t.equal(c.resolver('ns'), null);
    t.same(
      c
        .problems()
        .map((p) => p.message)
        .sort(),
      [
        'service-resolver of api: Failover["v2"].Targets[1]: its Datacenter "dc2" is not followed by Remora\'s agents, which resolve services in their own datacenter, namespace and partition; that target is left out',
        'service-resolver of api: Failover["v9"] names no subset of api; it is ignored',
        'service-resolver of both: Redirect: Redirect and Failover cannot both be set (Consul refuses it); it is ignored, and calls go to both',
        'service-resolver of far: Redirect: its Peer "east" is not followed by Remora\'s agents, which resolve services in their own datacenter, namespace and partition; it is ignored, and calls go to far',
        'service-resolver of nosub: Redirect: its ServiceSubset "v3" is not one of nosub\'s subsets; it is ignored, and calls go to nosub',
        'service-resolver of ns: Failover["*"]: its Namespace "ops" is not followed by Remora\'s agents, which resolve services in their own datacenter, namespace and partition; that target is left out',
      ],
    );

    // a restarted agent has them from its cache before Consul answers
    await writesSettled();
    const again = central(dir, createFakeConfigEntries(entries, { held: true }));
    again.c.start();
    t.teardown(() => again.c.stop());
    t.same(again.c.resolver('old'), c.resolver('old'));
    t.same(again.c.resolver('api'), api);
  },
);

t.test("targets in the reader's own datacenter are followed", (t) => {
  const found = new Map<string, string>();
  t.same(
    resolverSettings(
      { Kind: SERVICE_RESOLVER, Name: 'old', Redirect: { Service: 'api', Datacenter: 'dc1' } },
      found,
      'dc1',
    ),
    { redirect: { service: 'api' } },
  );
  t.same(
    resolverSettings(
      {
        Kind: SERVICE_RESOLVER,
        Name: 'api',
        Failover: { '*': { Service: 'api-dr', Datacenters: ['dc2', 'dc1'] } },
      },
      found,
      'dc1',
    ),
    { failover: { '*': [{ service: 'api-dr' }] } },
  );
  t.same(
    [...found.values()],
    [
      'service-resolver of api: Failover["*"]: Datacenters ["dc2"] are not followed by Remora\'s agents, which resolve services in their own datacenter; they are left out',
    ],
  );
  t.end();
});

t.test('redirects are followed to their end, and failover targets resolved', (t) => {
  const resolvers: Record<string, ResolverSettings> = {
    old: { redirect: { service: 'api' } },
    older: { redirect: { service: 'old' } },
    api: {
      subsets: { v1: '', v2: '' },
      defaultSubset: 'v1',
      failover: {
        v1: [{ service: 'api', subset: 'v2' }, { service: 'dr' }],
        '*': [{ service: 'dr' }],
      },
    },
    canary: { redirect: { service: 'api', subset: 'v2' } },
    dr: { redirect: { service: 'dr-east' } },
    a: { redirect: { service: 'b' } },
    b: { redirect: { service: 'a' } },
  };
  const resolver = (n: string) => resolvers[n] ?? null;
  t.equal(resolveTarget('older', undefined, resolver), 'api', 'a chain of redirects');
  t.equal(resolveTarget('canary', undefined, resolver), 'api/v2', 'a redirect to a subset');
  t.equal(
    resolveTarget('old', 'v9', resolver),
    'api',
    "another service: the call's subset is dropped",
  );
  t.same(followRedirects('a', undefined, resolver), {
    service: 'a',
    loop: ['a', 'b', 'a'],
  });
  t.equal(resolveTarget('a', undefined, resolver), 'a', 'a loop: calls stay with the service');
  t.same(
    failoverTargets('api', resolver),
    ['api/v2', 'dr-east'],
    "the default subset's failover, each target resolved (dr redirects to dr-east)",
  );
  t.same(failoverTargets('api/v2', resolver), ['dr-east'], 'another subset: `*`');
  t.same(failoverTargets('dr-east', resolver), [], 'no resolver, no failover');
  t.end();
});

t.test("a split's header changes stay with the share that names its target", (t) => {
  const tag = (v: string) => ({ set: { 'x-version': v } });
  const splitters: Record<string, SplitShare[]> = {
    api: [
      { service: 'api', weight: 50, requestHeaders: tag('v1') },
      { service: 'api', weight: 25, requestHeaders: tag('v1') },
      { service: 'api-next', weight: 25, requestHeaders: tag('next') },
    ],
    'api-next': [
      { service: 'api-v2', weight: 50, responseHeaders: { add: { via: 'v2' } } },
      { service: 'api-v3', weight: 50 },
    ],
  };
  t.same(
    flattenSplits('api', (n) => splitters[n] ?? null),
    [
      { target: 'api', weight: 75, requestHeaders: tag('v1') },
      { target: 'api-v2', weight: 12.5, responseHeaders: { add: { via: 'v2' } } },
      { target: 'api-v3', weight: 12.5 },
    ],
    "equal shares add up; a split leading to another splitter passes on the inner split's changes only, as Consul flattens them",
  );
  t.same(
    flattenSplits('db', (n) =>
      n === 'db' ? [{ service: 'db', weight: 100, requestHeaders: tag('x') }] : null,
    ),
    [{ target: 'db', weight: 100, requestHeaders: tag('x') }],
    'a splitter that only changes headers still applies',
  );
  t.equal(
    flattenSplits('db', (n) => (n === 'db' ? [{ service: 'db', weight: 100 }] : null)),
    null,
    'one share to itself, unchanged: nothing to apply',
  );
  t.end();
});

t.test('Consul failing settles the protocols with what is known, and is not fatal', async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries();
  const failing = {
    ...fake,
    watchConfigEntries: ((kind, h) => {
      queueMicrotask(() => h.onError(new Error(`connection refused (${kind})`)));
      return { stop() {} };
    }) as typeof fake.watchConfigEntries,
  };
  const { c, changes } = central(dir, failing);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('settled', () => c.settled());
  t.equal(c.synced(), false);
  t.equal(c.protocol('api'), null, 'nothing from Consul: the definitions and tcp decide');
  t.equal(changes(), 1, 'the agent is told to build its snapshots');
});

t.test('one kind failing does not hold back the other', async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [SERVICE_DEFAULTS]: [{ Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'http' }],
  });
  const partly = {
    ...fake,
    watchConfigEntries: ((kind, h) => {
      if (kind === SERVICE_DEFAULTS) return fake.watchConfigEntries(kind, h);
      queueMicrotask(() => h.onError(new Error('403 Permission denied')));
      return { stop() {} };
    }) as typeof fake.watchConfigEntries,
  };
  const { c, changes } = central(dir, partly);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('settled', () => c.settled() && c.protocol('api') === 'http');
  const before = changes();
  fake.set(SERVICE_DEFAULTS, [{ Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'grpc' }]);
  t.equal(c.protocol('api'), 'grpc');
  t.equal(changes(), before + 1, 'a later change is acted on');
});

t.test("a caller's UpstreamConfig: Defaults, then the Override for the destination", async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [SERVICE_DEFAULTS]: [
      {
        Kind: SERVICE_DEFAULTS,
        Name: 'web',
        UpstreamConfig: {
          Defaults: { ConnectTimeoutMs: 1000 },
          Overrides: [
            { Name: 'api', Limits: { MaxConnections: 5 } },
            { Name: 'db', Limits: { MaxConnections: 'many' } },
            { Limits: { MaxConnections: 9 } },
          ],
        },
      },
    ],
  });
  const { c } = central(dir, fake);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('both answers', () => c.synced());
  t.same(c.upstreamLayers('web', 'api'), [
    { ConnectTimeoutMs: 1000 },
    { Limits: { MaxConnections: 5 } },
  ]);
  t.same(c.upstreamLayers('web', 'db'), [{ ConnectTimeoutMs: 1000 }], 'a bad Override is left out');
  t.same(c.upstreamLayers('billing', 'api'), [], 'another caller has none');
  t.same(
    c.problems().map((p) => p.message),
    [
      'service-defaults of web: UpstreamConfig.Overrides[1].Limits.MaxConnections must be an integer from 1 to 1000000, got string "many"; that part is ignored',
      'service-defaults of web: UpstreamConfig.Overrides[2] has no Name; it is ignored',
    ],
  );
  fake.set(SERVICE_DEFAULTS, []);
  t.same(c.upstreamLayers('web', 'api'), []);
  t.same(c.problems(), [], 'gone with the entry');
});

t.test("a service's inbound settings from its service-defaults, cached", async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [SERVICE_DEFAULTS]: [
      {
        Kind: SERVICE_DEFAULTS,
        Name: 'api',
        LocalConnectTimeoutMs: 250,
        LocalRequestTimeoutMs: 2000,
        MaxInboundConnections: 0,
      },
      {
        Kind: SERVICE_DEFAULTS,
        Name: 'web',
        LocalRequestTimeoutMs: 1.5,
        MaxInboundConnections: 64,
        LocalConnectTimeoutMs: '1s',
      },
      { Kind: SERVICE_DEFAULTS, Name: 'plain', Protocol: 'http' },
    ],
  });
  const { c } = central(dir, fake);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('both answers', () => c.synced());
  t.same(
    c.inbound('api'),
    { localConnectTimeoutMs: 250, localRequestTimeoutMs: 2000 },
    "0 is Consul's unset",
  );
  t.same(c.inbound('web'), { maxInboundConnections: 64 }, 'bad values are left out');
  t.same(c.inbound('plain'), null);
  t.same(
    c.problems().map((p) => [p.code, p.message]),
    [
      [
        'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        'service-defaults of web: LocalConnectTimeoutMs must be a whole number from 1 to 3600000, got "1s"; it is ignored',
      ],
      [
        'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        'service-defaults of web: LocalRequestTimeoutMs must be a whole number from 0 to 3600000, got 1.5; it is ignored',
      ],
    ],
  );
  c.stop();
  await writesSettled();
  // a restarted agent has them before Consul answers
  const again = central(dir, createFakeConfigEntries({}));
  t.same(again.c.inbound('api'), { localConnectTimeoutMs: 250, localRequestTimeoutMs: 2000 });
  t.same(again.c.inbound('web'), { maxInboundConnections: 64 });
  again.c.start();
  t.teardown(() => again.c.stop());
  await waitFor('answers', () => again.c.synced());
  t.same(again.c.inbound('api'), null, 'gone once Consul answers without the entry');
});

t.test(
  "a service's RateLimits from its service-defaults: applied, bad parts said, cached",
  async (t) => {
    const dir = await dataDir(t);
    const fake = createFakeConfigEntries({
      [SERVICE_DEFAULTS]: [
        {
          Kind: SERVICE_DEFAULTS,
          Name: 'api',
          RateLimits: {
            InstanceLevel: {
              RequestsPerSecond: 100,
              RequestsMaxBurst: 200,
              Routes: [
                { PathExact: '/login', RequestsPerSecond: 5 },
                { PathPrefix: '/reports', RequestsPerSecond: 1, RequestsMaxBurst: 2 },
                { PathRegex: '/items/[0-9]+', RequestsPerSecond: 10 },
                { PathPrefix: 'reports', RequestsPerSecond: 1 },
                { PathExact: '/a', PathPrefix: '/a', RequestsPerSecond: 1 },
                { PathRegex: '(', RequestsPerSecond: 1 },
                { PathExact: '/b' },
                { PathExact: '/c', RequestsPerSecond: 1.5 },
              ],
            },
          },
        },
        {
          Kind: SERVICE_DEFAULTS,
          Name: 'web',
          RateLimits: { InstanceLevel: { RequestsMaxBurst: 5 } },
        },
        {
          Kind: SERVICE_DEFAULTS,
          Name: 'db',
          RateLimits: { InstanceLevel: { RequestsPerSecond: 0 } },
        },
      ],
    });
    const { c } = central(dir, fake);
    c.start();
    t.teardown(() => c.stop());
    await waitFor('the answers', () => c.synced());
    const api = {
      rateLimit: {
        instance: { requestsPerSecond: 100, burst: 200 },
        routes: [
          { pathExact: '/login', requestsPerSecond: 5, burst: 5 },
          { pathPrefix: '/reports', requestsPerSecond: 1, burst: 2 },
          { pathRegex: '/items/[0-9]+', requestsPerSecond: 10, burst: 10 },
        ],
      },
    };
    t.same(c.inbound('api'), api, 'a burst defaults to the rate, as in Consul');
    t.same(c.inbound('web'), null, 'a burst without a rate limits nothing');
    t.same(c.inbound('db'), null, "0 is Consul's unset");
    t.same(
      c
        .problems()
        .map((p) => p.message)
        .sort(),
      [
        'service-defaults of api: RateLimits.InstanceLevel.Routes[3].PathPrefix "reports" must start with /; it is ignored',
        'service-defaults of api: RateLimits.InstanceLevel.Routes[4] must set one of PathExact, PathPrefix, PathRegex; it is ignored',
        'service-defaults of api: RateLimits.InstanceLevel.Routes[5].PathRegex "(" is not a regular expression; it is ignored',
        'service-defaults of api: RateLimits.InstanceLevel.Routes[6] sets no RequestsPerSecond; it is ignored',
        'service-defaults of api: RateLimits.InstanceLevel.Routes[7] RequestsPerSecond must be a whole number from 1 to 1000000, got 1.5; it is ignored',
        'service-defaults of web: RateLimits.InstanceLevel sets RequestsMaxBurst without RequestsPerSecond; it is ignored',
      ],
    );
    c.stop();
    await writesSettled();
    const again = central(dir, createFakeConfigEntries({}));
    t.same(again.c.inbound('api'), api, 'cached');
  },
);

t.test(
  'proxy-defaults AccessLogs: where every proxy writes them, in which format, and what is not applied',
  async (t) => {
    const dir = await dataDir(t);
    const global = (AccessLogs: unknown) => [{ Kind: PROXY_DEFAULTS, Name: 'global', AccessLogs }];
    const fake = createFakeConfigEntries({ [PROXY_DEFAULTS]: global({ Enabled: true }) });
    const { c } = central(dir, fake);
    c.start();
    t.teardown(() => c.stop());
    await waitFor('both answers', () => c.synced());
    t.same(c.accessLogs(), { type: 'stdout' }, "Consul's default type");
    const cases: [unknown, unknown, string[]][] = [
      [{ Enabled: false, Type: 'file', Path: '/var/log/a.log' }, null, []],
      [{ Enabled: true, Type: 'stderr' }, { type: 'stderr' }, []],
      [
        { Enabled: true, Type: 'file', Path: '/var/log/a.log', TextFormat: '%START_TIME%' },
        { type: 'file', path: '/var/log/a.log', textFormat: '%START_TIME%' },
        [],
      ],
      [
        { Enabled: true, JSONFormat: '{"code":"%RESPONSE_CODE%"}', TextFormat: '' },
        { type: 'stdout', jsonFormat: '{"code":"%RESPONSE_CODE%"}' },
        [],
      ],
      [
        { Enabled: true, TextFormat: '%START_TIME% %UPSTREAM_COLOUR%' },
        { type: 'stdout' },
        [
          `proxy-defaults global: AccessLogs: TextFormat: %UPSTREAM_COLOUR% is not an operator Remora's proxies know; they know ${ACCESS_FORMAT_OPERATORS.join(', ')}; the proxies write their own JSON lines instead (docs/proxy.md, "Access logs")`,
        ],
      ],
      [
        { Enabled: true, JSONFormat: '{"a":', Type: 'stderr' },
        { type: 'stderr' },
        [
          `proxy-defaults global: AccessLogs: JSONFormat is not JSON: ${jsonError('{"a":')}; the proxies write their own JSON lines instead (docs/proxy.md, "Access logs")`,
        ],
      ],
      [
        { Enabled: true, JSONFormat: '{}', TextFormat: '%DURATION%' },
        { type: 'stdout' },
        [
          'proxy-defaults global: AccessLogs: TextFormat and JSONFormat cannot both be set; keep one; the proxies write their own JSON lines instead (docs/proxy.md, "Access logs")',
        ],
      ],
      [
        { Enabled: true, TextFormat: 7 },
        { type: 'stdout' },
        [
          'proxy-defaults global: AccessLogs.TextFormat must be a string; the proxies write their own JSON lines instead (docs/proxy.md, "Access logs")',
        ],
      ],
      [
        { Enabled: true, Type: 'file', Path: 'a.log' },
        null,
        [
          'proxy-defaults global: AccessLogs.Path must be an absolute file path for Type file, got "a.log"; access logs stay off',
        ],
      ],
      [
        { Enabled: true, Type: 'syslog' },
        null,
        [
          'proxy-defaults global: AccessLogs.Type "syslog" is not one of stdout, stderr, file; access logs stay off',
        ],
      ],
      [true, null, ['proxy-defaults global: AccessLogs must be an object; access logs stay off']],
    ];
    for (const [given, want, problems] of cases) {
      fake.set(PROXY_DEFAULTS, global(given));
      t.same(c.accessLogs(), want, JSON.stringify(given));
      t.same(
        c.problems().map((p) => p.message),
        problems,
      );
    }
    fake.set(
      PROXY_DEFAULTS,
      global({ Enabled: true, Type: 'file', Path: '/var/log/a.log', TextFormat: '%DURATION%' }),
    );
    c.stop();
    await writesSettled();
    const again = central(dir, createFakeConfigEntries({}));
    t.same(
      again.c.accessLogs(),
      { type: 'file', path: '/var/log/a.log', textFormat: '%DURATION%' },
      'cached',
    );
  },
);

t.test('a change made while the agent was down reaches it with the second answer', async (t) => {
  const dir = await dataDir(t);
  const first = central(
    dir,
    createFakeConfigEntries({
      [SERVICE_DEFAULTS]: [{ Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'grpc' }],
    }),
  );
  first.c.start();
  await waitFor('answers', () => first.c.synced());
  first.c.stop();
  await writesSettled();

  // restarted: the cache says grpc, Consul now says http; proxy-defaults is unchanged
  const again = central(
    dir,
    createFakeConfigEntries({
      [SERVICE_DEFAULTS]: [{ Kind: SERVICE_DEFAULTS, Name: 'api', Protocol: 'http' }],
    }),
  );
  t.equal(again.c.protocol('api'), 'grpc', 'from the cache before Consul answers');
  again.c.start();
  t.teardown(() => again.c.stop());
  await waitFor('both answers', () => again.c.synced());
  t.equal(again.c.protocol('api'), 'http');
  t.equal(again.changes(), 1, 'the agent is told, so its proxies get new snapshots');
});

t.test("a service-router's routes are read; what Remora cannot apply is reported", async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [SERVICE_ROUTER]: [
      {
        Kind: SERVICE_ROUTER,
        Name: 'api',
        Routes: [
          {
            Match: {
              HTTP: { PathPrefix: '/admin/', Header: [{ Name: 'x-debug', Present: true }] },
            },
            Destination: {
              Service: 'admin',
              PrefixRewrite: '/',
              NumRetries: 3,
              RequestHeaders: { Set: { 'X-Admin': '1' }, Remove: ['Cookie'] },
              ResponseHeaders: { Set: { 'Content-Length': '0' } },
            },
          },
          {
            Match: { HTTP: { Methods: ['get', 'HEAD'] } },
            Destination: {
              Service: 'api-read',
              RequestTimeout: '2s',
              NumRetries: 50,
              RetryOnConnectFailure: true,
              RetryOnStatusCodes: [503, 429],
              RetryOn: ['retriable-4xx', '5xx', 'unavailable', 'cancelled', 'envoy-ratelimited'],
            },
          },
          { Match: { HTTP: { PathExact: '/q', QueryParam: [{ Name: 'x', Exact: '1' }] } } },
          { Match: { HTTP: { QueryParam: [{ Name: 'y', Exact: '1', Regex: '.*' }] } } },
          { Match: { HTTP: { PathRegex: '(' } }, Destination: { Service: 'broken' } },
          { Match: { HTTP: { Methods: ['GET'] } }, Destination: { PrefixRewrite: '/v2' } },
          { Destination: { Service: 'api-v2' } },
        ],
      },
      { Kind: SERVICE_ROUTER, Name: 'web', Routes: 'all' },
    ],
  });
  const { c, changes } = central(dir, fake);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('all answers', () => c.synced());
  t.same(c.router('api'), [
    {
      match: { pathPrefix: '/admin/', header: [{ name: 'x-debug', present: true }] },
      service: 'admin',
      prefixRewrite: '/',
      maxRetries: 3,
      requestHeaders: { set: { 'x-admin': '1' }, remove: ['cookie'] },
    },
    {
      match: { methods: ['GET', 'HEAD'] },
      service: 'api-read',
      requestTimeoutMs: 2000,
      retryOn: [409, 429, 503],
      retryOnGrpc: [1, 14],
    },
    { match: { pathExact: '/q' }, query: [{ name: 'x', exact: '1' }], service: 'api' },
    { match: { pathPrefix: '/' }, service: 'api-v2' },
  ]);
  t.equal(c.router('web'), null);
  t.same(
    c
      .problems()
      .map((p) => p.message)
      .sort(),
    [
      'service-router of api: Routes[0].Destination.ResponseHeaders.Set "Content-Length" is a framing, hop-by-hop or proxy field that routes cannot change; the route applies without these header changes',
      "service-router of api: Routes[1].Destination.NumRetries 50 is not a whole number from 0 to 10; the route keeps api-read's own",
      'service-router of api: Routes[1].Destination.RetryOn "envoy-ratelimited" is not a condition Remora\'s proxies implement (5xx, gateway-error, reset, connect-failure, refused-stream, retriable-status-codes, retriable-4xx, cancelled, deadline-exceeded, resource-exhausted, internal, unavailable); it is ignored',
      'service-router of api: Routes[3] has a bad match (Match.HTTP.QueryParam[0] should only contain one of Present, Exact, or Regex); the route is ignored',
      'service-router of api: Routes[4] has a bad match (Match.HTTP.pathRegex: regex "(" does not compile: Invalid regular expression: /^(?:()$/: Unterminated group); the route is ignored',
      'service-router of api: Routes[5] sets PrefixRewrite without a PathPrefix or PathExact match; the route is ignored',
      'service-router of web: Routes must be a list; the router is ignored',
    ],
  );
  const before = changes();
  fake.set(SERVICE_ROUTER, []);
  t.equal(c.router('api'), null, 'a deleted router stops applying');
  t.equal(c.problems().length, 0, 'and its problems go');
  t.equal(changes(), before + 1);
});

t.test("the mesh entry's TLS: applied, each bad direction left out and said, cached", async (t) => {
  const dir = await dataDir(t);
  const mesh = (TLS: unknown) => [{ Kind: MESH, Name: 'mesh', TLS }];
  const fake = createFakeConfigEntries({
    [MESH]: mesh({ Incoming: { TLSMinVersion: 'TLSv1_3' } }),
  });
  const { c } = central(dir, fake);
  c.start();
  t.teardown(() => c.stop());
  await waitFor('the answers', () => c.synced());
  t.same(c.meshTls(), { incoming: { minVersion: 'TLSv1_3' } });
  const keep = "(TLS 1.2 to 1.3 with OpenSSL's suites instead)";
  const cases: [unknown, unknown, string[]][] = [
    [undefined, null, []],
    [{ Incoming: { TLSMinVersion: '', CipherSuites: [] } }, null, []],
    [
      {
        Incoming: { TLSMinVersion: 'TLSv1_2', TLSMaxVersion: 'TLS_AUTO' },
        Outgoing: {
          TLSMaxVersion: 'TLSv1_2',
          CipherSuites: ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
        },
      },
      {
        incoming: { minVersion: 'TLSv1_2', maxVersion: 'TLS_AUTO' },
        outgoing: {
          maxVersion: 'TLSv1_2',
          cipherSuites: ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
        },
      },
      [],
    ],
    [
      { Incoming: { TLSMinVersion: 'TLSv1_0' }, Outgoing: { TLSMinVersion: 'TLSv1_3' } },
      { outgoing: { minVersion: 'TLSv1_3' } },
      [
        `mesh: TLS.Incoming.TLSMinVersion TLSv1_0 is below what Remora's sidecars speak (TLSv1_2 and TLSv1_3); mesh: TLS.Incoming is not applied ${keep}`,
      ],
    ],
    [
      { Outgoing: { CipherSuites: ['TLS_RSA_WITH_RC4_128_SHA'] } },
      null,
      [
        `mesh: TLS.Outgoing.CipherSuites "TLS_RSA_WITH_RC4_128_SHA" is not one of ${Object.keys(CIPHER_SUITES).join(', ')}; mesh: TLS.Outgoing is not applied ${keep}`,
      ],
    ],
    [
      { Incoming: { TLSMinVersion: 'TLSv1_3' }, Outgoing: { TLSMaxVersion: 'TLSv1_2' } },
      null,
      [
        `mesh: TLS: Incoming and Outgoing share no TLS version, so no sidecar could reach another; neither is applied ${keep}`,
      ],
    ],
    [
      {
        Incoming: {
          TLSMaxVersion: 'TLSv1_2',
          CipherSuites: ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'],
        },
        Outgoing: { CipherSuites: ['TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384'] },
      },
      null,
      [
        `mesh: TLS: Incoming and Outgoing share no TLS 1.2 suite, so no sidecar could reach another; neither is applied ${keep}`,
      ],
    ],
    [7, null, ['mesh: TLS must be an object; it is not applied']],
  ];
  for (const [given, want, problems] of cases) {
    fake.set(MESH, given === undefined ? [] : mesh(given));
    t.same(c.meshTls(), want, JSON.stringify(given));
    t.same(
      c.problems().map((p) => p.message),
      problems,
    );
  }
  fake.set(MESH, mesh({ Outgoing: { TLSMinVersion: 'TLSv1_3' } }));
  c.stop();
  await writesSettled();
  const again = central(dir, createFakeConfigEntries({}));
  t.same(again.c.meshTls(), { outgoing: { minVersion: 'TLSv1_3' } }, 'cached');
});

t.test(
  "the mesh entry's TransparentProxy.MeshDestinationsOnly: followed, checked, cached",
  async (t) => {
    const dir = await dataDir(t);
    const mesh = (entry: Record<string, unknown>) => [{ Kind: MESH, Name: 'mesh', ...entry }];
    const fake = createFakeConfigEntries({
      [MESH]: mesh({ TransparentProxy: { MeshDestinationsOnly: true } }),
    });
    const { c, changes } = central(dir, fake);
    c.start();
    t.teardown(() => c.stop());
    await waitFor('the answers', () => c.synced());
    t.equal(c.meshDestinationsOnly(), true);
    const keep = 'apps in transparent mode keep reaching destinations outside the mesh';
    const cases: [Record<string, unknown> | null, boolean, string[]][] = [
      [null, false, []],
      [{ TransparentProxy: {} }, false, []],
      [{ TransparentProxy: { MeshDestinationsOnly: false } }, false, []],
      [{ transparent_proxy: { mesh_destinations_only: true } }, true, []],
      [{ TransparentProxy: { mesh_destinations_only: true } }, true, []],
      [
        { TransparentProxy: { MeshDestinationsOnly: 'yes' } },
        false,
        [
          `mesh: TransparentProxy.MeshDestinationsOnly must be true or false, got string "yes"; it is read as false: ${keep}`,
        ],
      ],
      [{ TransparentProxy: true }, false, [`mesh: TransparentProxy must be an object; ${keep}`]],
      [
        { TransparentProxy: { MeshDestinationsOnly: 1 }, TLS: 7 },
        false,
        [
          'mesh: TLS must be an object; it is not applied',
          `mesh: TransparentProxy.MeshDestinationsOnly must be true or false, got number 1; it is read as false: ${keep}`,
        ],
      ],
    ];
    for (const [given, want, problems] of cases) {
      fake.set(MESH, given === null ? [] : mesh(given));
      t.equal(c.meshDestinationsOnly(), want, JSON.stringify(given));
      t.same(
        c
          .problems()
          .map((p) => p.message)
          .sort(),
        problems,
      );
      t.ok(
        c.problems().every((p) => p.code === 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID'),
        'reported as the other bad entries',
      );
    }
    const before = changes();
    fake.set(MESH, mesh({ TransparentProxy: { MeshDestinationsOnly: true } }));
    t.equal(changes(), before + 1, 'a change is acted on');
    fake.set(MESH, mesh({ TransparentProxy: { MeshDestinationsOnly: true } }));
    t.equal(changes(), before + 1, 'the same answer again is not');
    c.stop();
    await writesSettled();
    const again = central(dir, createFakeConfigEntries({}));
    t.equal(again.c.meshDestinationsOnly(), true, 'cached: a restarted agent applies it at once');
  },
);

t.test(
  "the mesh entry's HTTP.SanitizeXForwardedClientCert: followed, checked, cached",
  async (t) => {
    const dir = await dataDir(t);
    const mesh = (entry: Record<string, unknown>) => [{ Kind: MESH, Name: 'mesh', ...entry }];
    const fake = createFakeConfigEntries({
      [MESH]: mesh({ HTTP: { SanitizeXForwardedClientCert: true } }),
    });
    const { c, changes } = central(dir, fake);
    c.start();
    t.teardown(() => c.stop());
    await waitFor('the answers', () => c.synced());
    t.equal(c.sanitizeClientCert(), true);
    const keep = "apps keep getting the caller's identity in x-forwarded-client-cert";
    const cases: [Record<string, unknown> | null, boolean, string[]][] = [
      [null, false, []],
      [{ HTTP: {} }, false, []],
      [{ HTTP: { SanitizeXForwardedClientCert: false } }, false, []],
      [{ http: { sanitize_x_forwarded_client_cert: true } }, true, []],
      [
        { HTTP: { SanitizeXForwardedClientCert: 'true' } },
        false,
        [
          `mesh: HTTP.SanitizeXForwardedClientCert must be true or false, got string "true"; it is read as false: ${keep}`,
        ],
      ],
      [{ HTTP: [] }, false, [`mesh: HTTP must be an object; ${keep}`]],
    ];
    for (const [given, want, problems] of cases) {
      fake.set(MESH, given === null ? [] : mesh(given));
      t.equal(c.sanitizeClientCert(), want, JSON.stringify(given));
      t.same(
        c.problems().map((p) => [p.code, p.message]),
        problems.map((m) => ['REMORA_E_AGENT_CENTRAL_CONFIG_INVALID', m]),
      );
    }
    const before = changes();
    fake.set(MESH, mesh({ HTTP: { SanitizeXForwardedClientCert: true } }));
    t.equal(changes(), before + 1, 'a change is acted on');
    c.stop();
    await writesSettled();
    const again = central(dir, createFakeConfigEntries({}, { held: true }));
    t.equal(again.c.sanitizeClientCert(), true, 'cached: a restarted agent applies it at once');
  },
);

t.test("proxy-defaults' envoy_prometheus_bind_addr is cached, IPv6 too", async (t) => {
  const dir = await dataDir(t);
  const fake = createFakeConfigEntries({
    [PROXY_DEFAULTS]: [
      {
        Kind: PROXY_DEFAULTS,
        Name: 'global',
        Config: { envoy_prometheus_bind_addr: '[::]:20200' },
      },
    ],
  });
  const { c } = central(dir, fake);
  c.start();
  await waitFor('the answers', () => c.synced());
  t.same(c.metricsBind(), { bindAddress: '::', bindPort: 20200 });
  c.stop();
  await writesSettled();
  const again = central(dir, createFakeConfigEntries({}, { held: true }));
  t.same(again.c.metricsBind(), { bindAddress: '::', bindPort: 20200 }, 'before Consul answers');
});

t.test('a resolver that hashes is cached with its hash policies', async (t) => {
  const dir = await dataDir(t);
  const sticky = {
    Kind: SERVICE_RESOLVER,
    Name: 'api',
    LoadBalancer: {
      Policy: 'ring_hash',
      HashPolicies: [
        { Field: 'header', FieldValue: 'x-user', Terminal: true },
        { Field: 'cookie', FieldValue: 'sid', CookieConfig: { TTL: '30m', Path: '/app' } },
        { Field: 'cookie', FieldValue: 'tab', CookieConfig: { Session: true } },
      ],
    },
  };
  const first = central(dir, createFakeConfigEntries({ [SERVICE_RESOLVER]: [sticky] }));
  first.c.start();
  await waitFor('the answers', () => first.c.synced());
  first.c.stop();
  await writesSettled();
  const again = central(dir, createFakeConfigEntries({}));
  t.same(again.c.resolver('api'), {
    loadBalancer: 'ring_hash',
    hashPolicies: [
      { field: 'header', fieldValue: 'x-user', terminal: true },
      { field: 'cookie', fieldValue: 'sid', cookie: { ttlSeconds: 1800, path: '/app' } },
      { field: 'cookie', fieldValue: 'tab', cookie: { ttlSeconds: 0 } },
    ],
  });
});

t.test(
  'MutualTLSMode from service-defaults, else proxy-defaults; the mesh gate; checked and cached',
  async (t) => {
    const dir = await dataDir(t);
    const fake = createFakeConfigEntries({
      [SERVICE_DEFAULTS]: [
        { Kind: SERVICE_DEFAULTS, Name: 'api', MutualTLSMode: 'permissive' },
        { Kind: SERVICE_DEFAULTS, Name: 'db', MutualTLSMode: 'strict' },
        { Kind: SERVICE_DEFAULTS, Name: 'web', Protocol: 'http' },
        { Kind: SERVICE_DEFAULTS, Name: 'odd', MutualTLSMode: 'lenient' },
      ],
      [PROXY_DEFAULTS]: [{ Kind: PROXY_DEFAULTS, Name: 'global', MutualTLSMode: 'permissive' }],
      [MESH]: [{ Kind: MESH, Name: 'mesh', AllowEnablingPermissiveMutualTLS: true }],
    });
    const { c, changes } = central(dir, fake);
    c.start();
    t.teardown(() => c.stop());
    await waitFor('the answers', () => c.synced());
    t.same(c.mutualTlsMode('api'), { mode: 'permissive', source: 'service-defaults' });
    t.same(c.mutualTlsMode('db'), { mode: 'strict', source: 'service-defaults' });
    t.same(
      c.mutualTlsMode('web'),
      { mode: 'permissive', source: 'proxy-defaults' },
      'a service-defaults entry without the field leaves it to proxy-defaults',
    );
    t.same(c.mutualTlsMode('odd'), { mode: 'permissive', source: 'proxy-defaults' });
    t.equal(c.allowPermissiveMutualTls(), true);
    t.same(
      c.problems().map((p) => [p.code, p.message]),
      [
        [
          'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
          'service-defaults of odd: MutualTLSMode "lenient" is not one of "strict", "permissive"; it is ignored (its sidecars require mTLS unless something else sets permissive)',
        ],
      ],
    );

    const before = changes();
    fake.set(MESH, [{ Kind: MESH, Name: 'mesh', AllowEnablingPermissiveMutualTLS: false }]);
    t.equal(c.allowPermissiveMutualTls(), false, 'turning the flag off is followed');
    t.equal(changes(), before + 1, 'and acted on');
    fake.set(MESH, [
      {
        Kind: MESH,
        Name: 'mesh',
        ...({ allow_enabling_permissive_mutual_tls: true } as Record<string, unknown>),
      },
    ]);
    t.equal(c.allowPermissiveMutualTls(), true, 'snake_case, as an entry written as given holds');
    fake.set(MESH, [{ Kind: MESH, Name: 'mesh', AllowEnablingPermissiveMutualTLS: 'yes' }]);
    t.equal(c.allowPermissiveMutualTls(), false, 'anything but a boolean is read as false');
    t.ok(
      c
        .problems()
        .some((p) =>
          p.message.startsWith(
            'mesh: AllowEnablingPermissiveMutualTLS must be true or false, got string "yes"; it is read as false',
          ),
        ),
      'and reported',
    );
    fake.set(MESH, [{ Kind: MESH, Name: 'mesh', AllowEnablingPermissiveMutualTLS: true }]);
    fake.set(PROXY_DEFAULTS, [{ Kind: PROXY_DEFAULTS, Name: 'global' }]);
    t.equal(c.mutualTlsMode('web'), null, 'neither entry sets one');

    c.stop();
    await writesSettled();
    const again = central(dir, createFakeConfigEntries({}, { held: true }));
    t.same(
      again.c.mutualTlsMode('api'),
      { mode: 'permissive', source: 'service-defaults' },
      'cached: a restarted agent applies it before Consul answers',
    );
    t.equal(again.c.allowPermissiveMutualTls(), true, 'the mesh gate too');
  },
);

t.test(
  "an instance's mutual TLS mode: its definition, then service-defaults, proxy-defaults, strict",
  (t) => {
    const base = {
      instanceId: 'api-1',
      service: 'api',
      registration: null,
      central: null,
      allowPermissive: true,
      transparent: true,
    } as const;
    t.same(resolveMutualTlsMode(base), { mode: 'strict', source: 'default', problem: null });
    t.same(
      resolveMutualTlsMode({ ...base, central: { mode: 'permissive', source: 'proxy-defaults' } }),
      { mode: 'permissive', source: 'proxy-defaults', problem: null },
    );
    t.same(
      resolveMutualTlsMode({
        ...base,
        registration: 'strict',
        central: { mode: 'permissive', source: 'service-defaults' },
      }),
      { mode: 'strict', source: 'registration', problem: null },
      "the definition's proxy.mutual_tls_mode wins over the entries",
    );
    t.same(
      resolveMutualTlsMode({
        ...base,
        registration: 'permissive',
        central: { mode: 'strict', source: 'service-defaults' },
      }),
      { mode: 'permissive', source: 'registration', problem: null },
    );
    t.end();
  },
);

t.test(
  'permissive without the mesh flag is reported, naming the way out, and strict applies',
  (t) => {
    const base = {
      instanceId: 'api-1',
      service: 'api',
      registration: null,
      allowPermissive: false,
      transparent: true,
    } as const;
    const bySd = resolveMutualTlsMode({
      ...base,
      central: { mode: 'permissive', source: 'service-defaults' },
    });
    t.equal(bySd.mode, 'strict');
    t.equal(bySd.asked, 'permissive');
    t.equal(bySd.problem?.code, 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_ALLOWED');
    t.equal(
      bySd.problem?.message,
      'api-1: MutualTLSMode in service-defaults of api is "permissive", but the mesh entry does not set AllowEnablingPermissiveMutualTLS = true; its sidecar requires mTLS (strict). To let plain callers of the app\'s port through while they are onboarded, set AllowEnablingPermissiveMutualTLS = true in the mesh entry; otherwise set MutualTLSMode = "strict" in service-defaults of api',
    );
    const byReg = resolveMutualTlsMode({ ...base, registration: 'permissive', central: null });
    t.match(byReg.problem?.message, /its definition's proxy\.mutual_tls_mode is "permissive"/);
    t.match(byReg.problem?.message, /remove proxy\.mutual_tls_mode from api-1's definition$/);
    const byPd = resolveMutualTlsMode({
      ...base,
      central: { mode: 'permissive', source: 'proxy-defaults' },
    });
    t.equal(byPd.mode, 'strict');
    t.match(byPd.problem?.message, /set MutualTLSMode = "strict" in proxy-defaults global$/);
    t.same(
      resolveMutualTlsMode({ ...base, central: { mode: 'strict', source: 'service-defaults' } }),
      { mode: 'strict', source: 'service-defaults', problem: null },
      'strict needs no flag',
    );
    t.end();
  },
);

t.test('permissive applies to transparent instances only', (t) => {
  const base = {
    instanceId: 'api-1',
    service: 'api',
    registration: null,
    allowPermissive: true,
    transparent: false,
  } as const;
  const r = resolveMutualTlsMode({
    ...base,
    central: { mode: 'permissive', source: 'service-defaults' },
  });
  t.equal(r.mode, 'strict');
  t.equal(r.problem?.code, 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_TRANSPARENT');
  t.match(r.problem?.message, /api-1 is not transparent/);
  const global = resolveMutualTlsMode({
    ...base,
    central: { mode: 'permissive', source: 'proxy-defaults' },
  });
  t.same(
    [global.mode, global.problem],
    ['strict', null],
    'a mesh-wide proxy-defaults permissive is not reported for every explicit-mode instance',
  );
  t.end();
});

t.test(
  'Expose of service-defaults and proxy-defaults: followed live, checked, reported and cached',
  async (t) => {
    const dir = await dataDir(t);
    const health = { Path: '/health', LocalPathPort: 8080, ListenerPort: 21500 };
    const fake = createFakeConfigEntries({
      [SERVICE_DEFAULTS]: [
        { Kind: SERVICE_DEFAULTS, Name: 'api', Expose: { Paths: [health] } },
        { Kind: SERVICE_DEFAULTS, Name: 'odd', Expose: { Paths: [{ ...health, Path: 'health' }] } },
      ],
      [PROXY_DEFAULTS]: [{ Kind: PROXY_DEFAULTS, Name: 'global', Expose: { Checks: true } }],
    });
    const { c, changes } = central(dir, fake);
    c.start();
    t.teardown(() => c.stop());
    await waitFor('the answers', () => c.synced());
    const apiPath = { path: '/health', localPathPort: 8080, listenerPort: 21500, protocol: 'http' };
    t.same(c.expose('api'), {
      serviceDefaults: { checks: false, paths: [apiPath] },
      proxyDefaults: { checks: true },
    });
    t.same(c.expose('web'), { serviceDefaults: null, proxyDefaults: { checks: true } });
    t.same(
      c.problems().map((p) => [p.code, p.message]),
      [
        [
          'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
          `service-defaults of odd: Expose.Paths[0] Path must start with /, got "health"; that path is not exposed (the entry's other paths are)`,
        ],
      ],
      'a bad path is reported, coded',
    );

    const before = changes();
    fake.set(PROXY_DEFAULTS, [
      {
        Kind: PROXY_DEFAULTS,
        Name: 'global',
        ...({ expose: { checks: 'true', paths: [{ ...health, ListenerPort: 0 }] } } as Record<
          string,
          unknown
        >),
      },
    ]);
    t.equal(changes(), before + 1, 'a changed entry is acted on');
    t.same(c.expose('web').proxyDefaults, { checks: false, paths: [] }, 'bad values left out');
    t.same(
      c
        .problems()
        .map((p) => p.message)
        .filter((m) => m.startsWith('proxy-defaults')),
      [
        'proxy-defaults global: Expose.Checks must be true or false, got "true"; it is read as false (checks keep probing the app directly)',
        "proxy-defaults global: Expose.Paths[0] ListenerPort must be a port from 1 to 65535, got 0; that path is not exposed (the entry's other paths are)",
      ],
    );
    fake.set(SERVICE_DEFAULTS, [
      { Kind: SERVICE_DEFAULTS, Name: 'api', Expose: { Paths: [health] } },
    ]);
    t.notOk(
      c.problems().some((p) => p.message.startsWith('service-defaults of odd')),
      'a fixed (deleted) entry is no longer reported',
    );
    fake.set(PROXY_DEFAULTS, []);
    t.same(c.expose('web'), { serviceDefaults: null, proxyDefaults: null }, 'deleted: nothing');
    t.same(c.problems(), [], 'and nothing reported');

    c.stop();
    await writesSettled();
    const again = central(dir, createFakeConfigEntries({}, { held: true }));
    t.same(
      again.c.expose('api').serviceDefaults,
      { checks: false, paths: [apiPath] },
      'cached: a restarted agent exposes the path before Consul answers',
    );
  },
);
