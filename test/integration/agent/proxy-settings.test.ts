// What a service's proxy does with its app and where every proxy logs (docs/agent.md, "The
// proxy's settings for its app", "Access logs"): service-defaults, a definition's proxy config and
// proxy-defaults AccessLogs reach running proxies. Real devconsul, nats-server, control, agent and
// proxies.
import t from 'tap';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../helpers/nats.ts';
import {
  consulDefinitions,
  httpGet,
  putConfig,
  startMesh,
  waitFor,
  webReachesApi,
  type Mesh,
} from './harness.ts';

t.setTimeout(120_000);

/** api-1's running proxy's inbound settings (from its admin `/config`). */
async function apiInbound(mesh: Mesh): Promise<Record<string, unknown> | undefined> {
  const port = (await mesh.status()).instances.find((i) => i.id === 'api-1')?.proxy?.adminPort;
  if (port === undefined) return undefined;
  const r = await httpGet(`http://127.0.0.1:${port}/config`);
  const ib = (r.json as { snapshot?: { inbound: Record<string, unknown> } }).snapshot?.inbound;
  if (!ib) return undefined;
  const { localConnectTimeoutMs, localRequestTimeoutMs, maxInboundConnections } = ib;
  return { localConnectTimeoutMs, localRequestTimeoutMs, maxInboundConnections };
}

t.test(
  "api's service-defaults and its own definition set what api's proxy does with its app",
  async (t) => {
    const mesh = await startMesh(t);
    const defs = consulDefinitions(mesh);
    for (const [name, body] of Object.entries(defs)) await mesh.writeDefinition(name, body);
    await putConfig(mesh, { Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'http' } });
    const agent = mesh.startAgent();
    t.teardown(() => agent.stop());
    await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);

    // Consul's field names, one in the snake_case Consul also accepts
    await putConfig(mesh, {
      Kind: 'service-defaults',
      Name: 'api',
      LocalRequestTimeoutMs: 1500,
      max_inbound_connections: 50,
    });
    t.same(
      await waitFor(
        "api's proxy to apply them",
        async () => {
          const ib = await apiInbound(mesh);
          return ib?.maxInboundConnections === 50 ? ib : null;
        },
        30_000,
        100,
      ),
      { localConnectTimeoutMs: undefined, localRequestTimeoutMs: 1500, maxInboundConnections: 50 },
    );

    // the definition's proxy config wins, key by key; and a public /metrics for scrapers
    const api = defs['api.json'] as { service: { connect: { sidecar_service: object } } };
    const metricsPort = await freePort();
    await mesh.writeDefinition('api.json', {
      service: {
        ...api.service,
        connect: {
          sidecar_service: {
            ...api.service.connect.sidecar_service,
            proxy: {
              config: {
                local_request_timeout_ms: 0,
                local_connect_timeout_ms: 400,
                envoy_prometheus_bind_addr: `127.0.0.1:${metricsPort}`,
              },
            },
          },
        },
      },
    });
    t.same(
      await waitFor(
        "api's proxy to apply its definition",
        async () => {
          const ib = await apiInbound(mesh);
          return ib?.localConnectTimeoutMs === 400 ? ib : null;
        },
        30_000,
        100,
      ),
      { localConnectTimeoutMs: 400, localRequestTimeoutMs: 0, maxInboundConnections: 50 },
    );
    t.ok(await waitFor('web to reach api', () => webReachesApi(mesh), 30_000, 100));
    const scraped = await waitFor(
      "api's proxy to serve /metrics on envoy_prometheus_bind_addr",
      async () => {
        const r = await httpGet(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => null);
        return r?.status === 200 ? r.body : null;
      },
      30_000,
      100,
    );
    t.match(
      scraped,
      /^remora_proxy_requests_total\{direction="inbound",service="api",code="2xx"\} [1-9]/m,
      'with the calls it took',
    );
    t.equal(
      (await httpGet(`http://127.0.0.1:${metricsPort}/config`)).status,
      404,
      'and nothing else of the admin API',
    );

    // a value Remora cannot use is reported and left out
    await putConfig(mesh, { Kind: 'service-defaults', Name: 'api', MaxInboundConnections: -1 });
    const problem = await waitFor(
      'the problem in status',
      async () =>
        (await mesh.status()).problems.find((p) => /MaxInboundConnections/.test(p.message)),
      30_000,
      100,
    );
    t.equal(problem.code, 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID');
    t.match(
      problem.message,
      'service-defaults of api: MaxInboundConnections must be a whole number from 0 to 1000000, got -1',
    );
    t.same(
      await waitFor(
        'the limit gone',
        async () => {
          const ib = await apiInbound(mesh);
          return ib?.maxInboundConnections === undefined ? ib : null;
        },
        30_000,
        100,
      ),
      { localConnectTimeoutMs: 400, localRequestTimeoutMs: 0, maxInboundConnections: undefined },
    );

    // RateLimits: api's proxy admits its burst, then answers 429 before the app
    await putConfig(mesh, {
      Kind: 'service-defaults',
      Name: 'api',
      RateLimits: { InstanceLevel: { RequestsPerSecond: 1, RequestsMaxBurst: 2 } },
    });
    await waitFor(
      "api's proxy to apply the limit",
      async () => {
        const port = (await mesh.status()).instances.find((i) => i.id === 'api-1')?.proxy
          ?.adminPort;
        const r = await httpGet(`http://127.0.0.1:${port}/config`);
        return (r.json as { snapshot?: { inbound: { rateLimit?: unknown } } }).snapshot?.inbound
          .rateLimit;
      },
      30_000,
      100,
    );
    // six calls in a row outrun one token a second after a burst of two
    const answers = [];
    for (let i = 0; i < 6; i++)
      answers.push(await httpGet(`http://127.0.0.1:${mesh.ports.apiLocal}/`));
    const limited = answers.filter((a) => a.status === 429);
    t.ok(
      limited.length >= 1,
      `some calls were limited (${answers.map((a) => a.status).join(' ')})`,
    );
    t.match(
      limited[0]?.body,
      /^REMORA_E_PROXY_RATE_LIMITED: api admits 1 request per second \(burst 2/,
    );
    t.ok(
      answers.slice(0, 2).every((a) => a.status === 200),
      'the burst went through',
    );
  },
);

t.test('proxy-defaults AccessLogs: every proxy logs its calls to the file it names', async (t) => {
  const mesh = await startMesh(t);
  for (const [name, body] of Object.entries(consulDefinitions(mesh)))
    await mesh.writeDefinition(name, body);
  const dir = mkdtempSync(join(tmpdir(), 'remora-access-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'access.log');
  await putConfig(mesh, {
    Kind: 'proxy-defaults',
    Name: 'global',
    Config: { protocol: 'http' },
    AccessLogs: {
      Enabled: true,
      Type: 'file',
      Path: path,
      JSONFormat: JSON.stringify({
        direction: '%REMORA_DIRECTION%',
        source: '%REMORA_SOURCE%',
        destination: '%REMORA_DESTINATION%',
        status: '%RESPONSE_CODE%',
        upstream: '%UPSTREAM_CLUSTER%',
      }),
    },
  });
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());
  await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
  const logged = await waitFor(
    'both sides of a call in the file',
    async () => {
      await webReachesApi(mesh);
      const lines = existsSync(path)
        ? readFileSync(path, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l) as Record<string, unknown>)
        : [];
      // calls made while api's sidecar was still starting were logged too (503): take a 200
      const out = lines.find(
        (l) => l.direction === 'outbound' && l.destination === 'api' && l.status === 200,
      );
      const inb = lines.find(
        (l) => l.direction === 'inbound' && l.destination === 'api' && l.status === 200,
      );
      return out && inb ? { out, inb } : null;
    },
    30_000,
    200,
  );
  t.same(
    logged.out,
    { direction: 'outbound', source: 'web', destination: 'api', status: 200, upstream: 'api' },
    'in the JSONFormat',
  );
  t.same(logged.inb, {
    direction: 'inbound',
    source: 'web',
    destination: 'api',
    status: 200,
    upstream: 'local_app',
  });

  // a format the proxies cannot apply: reported, and the lines go on in their own JSON
  await putConfig(mesh, {
    Kind: 'proxy-defaults',
    Name: 'global',
    Config: { protocol: 'http' },
    AccessLogs: { Enabled: true, Type: 'file', Path: path, TextFormat: '%START_TIME% %COLOUR%' },
  });
  const problem = await waitFor(
    'the format that cannot apply in status',
    async () => (await mesh.status()).problems.find((p) => /%COLOUR%/.test(p.message)),
    30_000,
    100,
  );
  t.equal(problem.code, 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID');
  await waitFor(
    "a line in the proxies' own JSON",
    async () => {
      await webReachesApi(mesh);
      return readFileSync(path, 'utf8').includes('"log":"access"');
    },
    30_000,
    200,
  );
  t.pass('the logs stay on');
});

t.test(
  'AccessLogs to stdout: proxy.log is rotated past proxyLogMaxBytes, and no line is lost',
  async (t) => {
    const mesh = await startMesh(t);
    for (const [name, body] of Object.entries(consulDefinitions(mesh)))
      await mesh.writeDefinition(name, body);
    await putConfig(mesh, {
      Kind: 'proxy-defaults',
      Name: 'global',
      Config: { protocol: 'http' },
      AccessLogs: { Enabled: true, Type: 'stdout' },
    });
    const agent = mesh.startAgent({
      REMORA_AGENT_PROXY_LOG_MAX_BYTES: '8192',
      REMORA_AGENT_PROXY_LOG_FILES: '100',
      REMORA_AGENT_PROXY_LOG_CHECK_MS: '50',
    });
    t.teardown(() => agent.stop());
    await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
    // calls through web's sidecar, each with its own path: one outbound line each in web's log
    const CALLS = 300;
    for (let i = 0; i < CALLS; i++) {
      const r = await httpGet(`http://127.0.0.1:${mesh.ports.apiLocal}/rotation/${i}`);
      if (r.status !== 200) t.fail(`call ${i} answered ${r.status}`);
    }
    const dir = join(mesh.dataDir, 'instances', 'web-1');
    const files = () => readdirSync(dir).filter((f) => /^proxy\.log(\.\d+)?$/.test(f));
    // the rotator runs on: the files are read once they stand still (the same names and sizes
    // at two polls in a row), so that no line moves from one to another while they are read
    let last = '';
    const still = (): boolean => {
      let now: string;
      try {
        now = files()
          .sort()
          .map((f) => `${f}:${statSync(join(dir, f)).size}`)
          .join(' ');
      } catch {
        now = ''; // a file renamed between the listing and its size: not still
      }
      const same = now !== '' && now === last;
      last = now;
      return same;
    };
    const logged = await waitFor(
      'every call in the access lines of web-1, its files standing still',
      () => {
        if (!still()) return null;
        const paths: string[] = [];
        for (const f of files())
          for (const line of readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean)) {
            const l = JSON.parse(line) as { log?: string; path?: string; direction?: string };
            if (
              l.log === 'access' &&
              l.direction === 'outbound' &&
              l.path?.startsWith('/rotation/')
            )
              paths.push(l.path);
          }
        return paths.length >= CALLS ? paths : null;
      },
      20_000,
      150,
    );
    const rotated = files().filter((f) => f !== 'proxy.log');
    t.ok(rotated.length >= 3, `web-1's log was rotated (${rotated.length} copies)`);
    const notes = agent
      .output()
      .split('\n')
      .filter((l) => l.includes('rotated the proxy log of web-1'));
    t.ok(notes.length >= 3, 'the agent logged each rotation');
    t.ok(
      notes.every((l) => (JSON.parse(l) as { paused: boolean }).paused),
      'web-1 was paused for each cut',
    );
    for (const f of rotated) t.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`);
    t.equal(logged.length, CALLS, 'each call logged once: none lost, none copied twice');
    t.equal(new Set(logged).size, CALLS);
    t.ok(statSync(join(dir, 'proxy.log')).size < 8192 * 2, 'proxy.log stays near its bound');
    t.ok(await webReachesApi(mesh), 'the paused and resumed proxies serve on');
  },
);
