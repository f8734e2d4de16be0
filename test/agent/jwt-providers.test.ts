import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createJwksKeeper, jwtProviderSettings } from '../../agent/jwt-providers.ts';
import { createCentralConfig } from '../../agent/central-config.ts';
import { dataPaths, ensureDir, writesSettled } from '../../agent/files.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { waitFor } from '../../lib/util/index.ts';
import { createFakeConfigEntries } from './fakes.ts';
import { jwksBase64, makeKey } from '../helpers/jwt.ts';
import type { ConfigEntry } from '../../agent/ports.ts';
import { RemoraError } from '../../lib/errors/index.ts';

const key = makeKey('ES256', 'k1');
const key2 = makeKey('EdDSA', 'k2');

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'remora-jwt-'));
  t.teardown(async () => {
    await writesSettled();
    await rm(dir, { recursive: true, force: true });
  });
  return dir;
}

t.test('an entry with every field reads into camelCase settings', async (t) => {
  const found = new Map<string, string>();
  const s = jwtProviderSettings(
    {
      Kind: 'jwt-provider',
      Name: 'okta',
      Issuer: 'https://issuer.example',
      Audiences: ['api', 'web'],
      JSONWebKeySet: { Local: { JWKS: jwksBase64([key, key2]) } },
      Locations: [
        { Header: { Name: 'X-Token', ValuePrefix: 'Token ', Forward: true } },
        { QueryParam: { Name: 'access_token' } },
        { Cookie: { Name: 'session' } },
      ],
      Forwarding: { HeaderName: 'x-jwt-payload', PadForwardPayloadHeader: true },
      ClockSkewSeconds: 10,
      CacheConfig: { Size: 50 },
    },
    found,
  );
  t.same(found.size, 0);
  t.same(s, {
    provider: {
      name: 'okta',
      locations: [
        { header: { name: 'X-Token', valuePrefix: 'Token ', forward: true } },
        { queryParam: { name: 'access_token' } },
        { cookie: { name: 'session' } },
      ],
      clockSkewSeconds: 10,
      cacheSize: 50,
      issuer: 'https://issuer.example',
      audiences: ['api', 'web'],
      forwarding: { headerName: 'x-jwt-payload', padForwardPayloadHeader: true },
    },
    source: { inline: [key.jwk, key2.jwk] },
  });
});

t.test("Consul's defaults fill what an entry leaves out", async (t) => {
  const s = jwtProviderSettings({
    Name: 'auth0',
    ClockSkewSeconds: 0,
    JSONWebKeySet: { Remote: { URI: 'https://auth.example/.well-known/jwks.json' } },
  });
  t.same(s?.provider.locations, [{ header: { name: 'Authorization', valuePrefix: 'Bearer ' } }]);
  t.equal(s?.provider.clockSkewSeconds, 30, '0 is "not set": 30 s');
  t.same(s?.source, {
    remote: {
      uri: 'https://auth.example/.well-known/jwks.json',
      cacheDurationMs: 300_000,
      requestTimeoutMs: 5000,
      fetchAsynchronously: false,
      numRetries: 0,
      baseIntervalMs: 1000,
      maxIntervalMs: 10_000,
    },
  });
  t.same(
    jwtProviderSettings({ Name: 'f', JSONWebKeySet: { Local: { Filename: '/etc/jwks.json' } } })
      ?.source,
    {
      filename: '/etc/jwks.json',
    },
  );
});

t.test('a bad entry is left out with a problem naming its field', async (t) => {
  const jwks = { Local: { JWKS: jwksBase64([key]) } };
  const hmac = Buffer.from(JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] })).toString(
    'base64',
  );
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{}, /JSONWebKeySet is required/],
    [
      { JSONWebKeySet: { Local: { JWKS: 'x' }, Remote: { URI: 'https://a' } } },
      /JSONWebKeySet must set exactly one of Local and Remote/,
    ],
    [
      { JSONWebKeySet: { Local: { JWKS: 'bm90IGpzb24=' } } },
      /JSONWebKeySet\.Local\.JWKS \(base64 of a JWKS\) is not a JSON Web Key Set/,
    ],
    [{ JSONWebKeySet: { Local: { JWKS: hmac } } }, /key #1 has kty "oct".*HMAC/],
    [
      { JSONWebKeySet: { Local: { Filename: 'jwks.json' } } },
      /Local\.Filename must be an absolute path/,
    ],
    [
      { JSONWebKeySet: { Remote: { URI: 'ftp://a/jwks' } } },
      /Remote\.URI must be an http or https URL/,
    ],
    [
      { JSONWebKeySet: { Remote: { URI: 'https://a', CacheDuration: 'soon' } } },
      /Remote\.CacheDuration must be a duration/,
    ],
    [
      { JSONWebKeySet: { Remote: { URI: 'https://a', RetryPolicy: { NumRetries: 99 } } } },
      /RetryPolicy\.NumRetries must be a whole number from 0 to 10/,
    ],
    [
      { JSONWebKeySet: jwks, Locations: [{ Header: { Name: 'A' }, Cookie: { Name: 'b' } }] },
      /Locations\[0\] must set exactly one/,
    ],
    [
      { JSONWebKeySet: jwks, Locations: [{ Header: { Name: 'a b' } }] },
      /Locations\[0\]\.Header\.Name/,
    ],
    [
      { JSONWebKeySet: jwks, Forwarding: { PadForwardPayloadHeader: true } },
      /Forwarding\.HeaderName is required/,
    ],
    [
      { JSONWebKeySet: jwks, ClockSkewSeconds: -1 },
      /ClockSkewSeconds must be a whole number from 0 to 86400/,
    ],
    [{ JSONWebKeySet: jwks, Audiences: 'api' }, /Audiences must be a list of strings/],
  ];
  for (const [entry, message] of cases) {
    const found = new Map<string, string>();
    t.equal(jwtProviderSettings({ Name: 'p', ...entry }, found), null, String(message));
    t.match(found.get('j/p'), message);
    t.match(found.get('j/p'), /^jwt-provider p: .*; the provider is left out/);
  }
});

t.test(
  'central config watches jwt-provider entries, reports bad ones, and caches them',
  async (t) => {
    const dir = await tempDir(t);
    await ensureDir(dir);
    const entries: ConfigEntry[] = [
      {
        Kind: 'jwt-provider',
        Name: 'okta',
        JSONWebKeySet: { Local: { JWKS: jwksBase64([key]) } },
        Issuer: 'i',
      } as ConfigEntry,
      { Kind: 'jwt-provider', Name: 'broken', JSONWebKeySet: {} } as ConfigEntry,
    ];
    const fake = createFakeConfigEntries({ 'jwt-provider': entries });
    let changes = 0;
    const c = createCentralConfig({
      consul: { watchConfigEntries: fake.watchConfigEntries } as never,
      paths: dataPaths(dir),
      logger: createSilentLogger(),
      onChange: () => void (changes += 1),
    });
    c.start();
    t.teardown(() => c.stop());
    await waitFor('answers', () => c.synced());
    t.ok(fake.watching().includes('jwt-provider'));
    t.same(
      c.jwtProviders().map((s) => s.provider.name),
      ['okta'],
      'the bad entry is left out',
    );
    const problem = c.problems().find((p) => p.details.entry === 'j/broken');
    t.equal(problem?.code, 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID');
    t.match(
      problem?.message,
      /jwt-provider broken: JSONWebKeySet must set exactly one of Local and Remote/,
    );
    t.ok(changes > 0);
    fake.set('jwt-provider', [entries[0]!]);
    await waitFor('problem gone', () => c.problems().length === 0);
    c.stop();
    await writesSettled();
    // a restarted agent knows the providers before Consul answers
    const again = createCentralConfig({
      consul: {
        watchConfigEntries: createFakeConfigEntries({}, { held: true }).watchConfigEntries,
      } as never,
      paths: dataPaths(dir),
      logger: createSilentLogger(),
      onChange: () => {},
    });
    t.same(
      again.jwtProviders().map((s) => s.provider.issuer),
      ['i'],
    );
  },
);

async function jwksServer(
  t: Test,
  answer: (n: number) => [number, string],
): Promise<{ uri: string; hits: () => number }> {
  let n = 0;
  const server: Server = createServer((_req, res) => {
    const [status, body] = answer(n++);
    res.writeHead(status, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  return { uri: `http://127.0.0.1:${port}/jwks.json`, hits: () => n };
}

t.test(
  'a remote key set is fetched in the background, with retries, and its last good keys kept',
  async (t) => {
    let failing = false;
    const srv = await jwksServer(t, (n) =>
      n < 2 ? [503, 'busy'] : failing ? [500, 'down'] : [200, JSON.stringify({ keys: [key.jwk] })],
    );
    let changes = 0;
    const keeper = createJwksKeeper({
      logger: createSilentLogger(),
      onChange: () => void (changes += 1),
    });
    t.teardown(() => keeper.stop());
    const settings = [
      jwtProviderSettings({
        Name: 'remote',
        JSONWebKeySet: {
          Remote: {
            URI: srv.uri,
            CacheDuration: '1s',
            RequestTimeoutMs: 2000,
            RetryPolicy: {
              NumRetries: 2,
              RetryPolicyBackoff: { BaseInterval: '10ms', MaxInterval: '20ms' },
            },
          },
        },
      })!,
    ];
    const first = keeper.providers(settings);
    t.same(first[0]?.keys, [], 'no keys before the first fetch: nothing waits for it');
    t.match(first[0]?.keysProblem, /is being fetched/);
    await waitFor(
      'keys fetched',
      () => (keeper.providers(settings)[0]?.keys.length ?? 0) === 1,
      5000,
    );
    t.equal(srv.hits(), 3, 'two failures retried, the third attempt served');
    t.ok(changes >= 1, 'the agent is told to send new snapshots');
    t.same(keeper.providers(settings)[0]?.keys, [key.jwk]);
    failing = true;
    await waitFor('a failed refresh reported', () => keeper.problems().length === 1, 5000);
    t.equal(keeper.problems()[0]?.code, 'REMORA_E_AGENT_JWKS_UNAVAILABLE');
    t.match(
      keeper.problems()[0]?.message,
      /cannot fetch its keys from http:\/\/127\.0\.0\.1:\d+\/jwks\.json .*keeping the keys fetched last/,
    );
    t.same(keeper.providers(settings)[0]?.keys, [key.jwk], 'the last good keys stay');
    t.equal(keeper.providers(settings)[0]?.keysProblem, undefined);
  },
);

t.test('a remote answer past 1 MiB is cut and reported, not kept whole', async (t) => {
  // 2 MiB of a JSON string: a key set no one publishes, or a URI pointing at the wrong thing
  const srv = await jwksServer(t, () => [
    200,
    JSON.stringify({ keys: [], pad: 'x'.repeat(2 << 20) }),
  ]);
  const keeper = createJwksKeeper({ logger: createSilentLogger(), onChange: () => {} });
  t.teardown(() => keeper.stop());
  const settings = [
    jwtProviderSettings({
      Name: 'huge',
      JSONWebKeySet: { Remote: { URI: srv.uri, CacheDuration: '1m', RequestTimeoutMs: 2000 } },
    })!,
  ];
  keeper.providers(settings);
  await waitFor('the fetch reported', () => keeper.problems().length === 1, 5000);
  t.match(keeper.problems()[0]?.message, /huge: cannot fetch its keys .*larger than 1048576 bytes/);
  t.same(keeper.providers(settings)[0]?.keys, [], 'no keys from it');
});

t.test('a key file is read when snapshots are built; an unreadable one is reported', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'jwks.json');
  await writeFile(file, JSON.stringify({ keys: [key.jwk] }));
  const keeper = createJwksKeeper({ logger: createSilentLogger(), onChange: () => {} });
  t.teardown(() => keeper.stop());
  const settings = [
    jwtProviderSettings({ Name: 'file', JSONWebKeySet: { Local: { Filename: file } } })!,
  ];
  t.same(keeper.providers(settings)[0]?.keys, [key.jwk]);
  await writeFile(file, JSON.stringify({ keys: [key.jwk, key2.jwk] }));
  t.equal(keeper.providers(settings)[0]?.keys.length, 2, 'a rotated file is read again');
  await rm(file);
  const p = keeper.providers(settings)[0];
  t.same(p?.keys, []);
  t.match(p?.keysProblem, /cannot be read/);
  t.match(keeper.problems()[0]?.message, /jwt-provider file: cannot read .*jwks\.json/);
});

t.test(
  'a Consul that does not know jwt-provider entries (before 1.16) is not an outage',
  async (t) => {
    const dir = await tempDir(t);
    await ensureDir(dir);
    const fake = createFakeConfigEntries({}, { held: true });
    const c = createCentralConfig({
      consul: { watchConfigEntries: fake.watchConfigEntries } as never,
      paths: dataPaths(dir),
      logger: createSilentLogger(),
      onChange: () => {},
    });
    c.start();
    t.teardown(() => c.stop());
    const old = new RemoraError(
      'REMORA_E_CONSUL_REQUEST_FAILED',
      'Consul refused /v1/config/jwt-provider with 400: invalid config entry kind: jwt-provider',
      { status: 400 },
    );
    fake.fail('jwt-provider', old);
    for (const kind of fake.watching()) if (kind !== 'jwt-provider') fake.set(kind, []);
    await waitFor('answers', () => c.synced());
    t.same(c.jwtProviders(), [], 'read as no providers');
    t.same(c.problems(), [], 'nothing to report');
    // any other failure of the same watch is an outage, as for every kind
    const down = new RemoraError('REMORA_E_CONSUL_REQUEST_FAILED', 'Consul refused with 500', {
      status: 500,
    });
    fake.fail('jwt-provider', down);
    t.equal(c.synced(), true, 'what Consul answered before still holds');
  },
);
