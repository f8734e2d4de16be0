// Consul's configuration entries decide the protocol of a service whose definitions leave it
// out (docs/agent.md, "Protocols"): real devconsul, nats-server, control, agent and proxies.
import t, { type Test } from 'tap';
import { runRemora } from '../../helpers/cli.ts';
import {
  OPERATOR_TOKEN,
  consulDefinitions,
  httpGet,
  putConfig,
  startMesh,
  waitFor,
  webReachesApi,
  type Mesh,
  cliEnv,
} from './harness.ts';

t.setTimeout(180_000);

interface Resilience {
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  circuitBreaker: { maxConnections: number };
}

/**
 * What api's app saw of a call made on a fresh connection to web's upstream listener, as web's
 * app would make it: `peer` is web's identity when api's proxy handled it as HTTP (it adds
 * `x-forwarded-client-cert`), null when it forwarded bytes. Connections opened before a protocol
 * change keep the protocol they started with, so this opens a new one.
 */
async function apiPeer(mesh: Mesh): Promise<string | null | undefined> {
  try {
    const r = await httpGet(`http://127.0.0.1:${mesh.ports.apiLocal}/`);
    return r.status === 200 ? ((r.json as { peer: string | null }).peer ?? null) : undefined;
  } catch {
    return undefined;
  }
}

/** web's upstream to api and api-1's own protocol, as `remora status` reports them. */
async function protocols(mesh: Mesh): Promise<string> {
  const s = await mesh.status();
  const api = s.instances.find((i) => i.id === 'api-1');
  const web = s.instances.find((i) => i.id === 'web-1');
  return `api-1 ${api?.protocol}, web-1 → api ${web?.upstreams.find((u) => u.destination === 'api')?.protocol}`;
}

/** web's running proxy's snapshot of its api upstream (from its admin `/config`). */
async function webApiUpstream(
  mesh: Mesh,
): Promise<{ resilience: Resilience; loadBalancer: string } | undefined> {
  const port = (await mesh.status()).instances.find((i) => i.id === 'web-1')?.proxy?.adminPort;
  const r = await httpGet(`http://127.0.0.1:${port}/config`);
  return (
    r.json as {
      snapshot?: {
        upstreams: { destinationName: string; resilience: Resilience; loadBalancer: string }[];
      };
    }
  ).snapshot?.upstreams.find((u) => u.destinationName === 'api');
}

/** The environment the operator CLI needs to reach `mesh` (NATS, Consul, the operator token). */
/**
 * web and api as `definitions` writes them, and the demo app on api2App registered as a service
 * of its own, api-v2, all speaking http (proxy-defaults); the agent started.
 */
async function startApiV2Mesh(t: Test): Promise<{ mesh: Mesh; defs: Record<string, object> }> {
  const mesh = await startMesh(t);
  const p = mesh.ports;
  const defs = consulDefinitions(mesh);
  for (const [name, body] of Object.entries(defs)) await mesh.writeDefinition(name, body);
  await mesh.writeDefinition('api-v2.json', {
    service: {
      name: 'api-v2',
      id: 'api-v2-1',
      port: p.api2App,
      connect: { sidecar_service: { port: p.api2Sidecar } },
    },
  });
  await putConfig(mesh, { Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'http' } });
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());
  return { mesh, defs };
}

t.test(
  'service-defaults and proxy-defaults set the protocol the definitions leave out; L7 intentions need it',
  async (t) => {
    const mesh = await startMesh(t);
    for (const [name, body] of Object.entries(consulDefinitions(mesh)))
      await mesh.writeDefinition(name, body);
    const agent = mesh.startAgent();
    t.teardown(() => agent.stop());

    const plain = await waitFor('web to reach api', () => webReachesApi(mesh), 90_000, 100);
    t.equal(await protocols(mesh), 'api-1 tcp, web-1 → api tcp', 'no entry: tcp, as in Consul');
    t.equal(
      plain.api?.peer,
      null,
      'over tcp, api’s proxy forwards bytes and adds no identity header',
    );
    t.equal(await apiPeer(mesh), null, 'the same on a fresh connection');

    // an L7 intention for api, which serves tcp: saved, with a warning naming the fix
    const l7 = await runRemora(
      [
        'intention',
        'create',
        'web',
        'api',
        '--permissions',
        '[{"action":"allow","http":{"pathPrefix":"/"}}]',
      ],
      {
        env: { REMORA_CLI_NATS_SERVERS: mesh.nats.url, REMORA_CLI_OPERATOR_TOKEN: OPERATOR_TOKEN },
      },
    );
    t.equal(l7.code, 0, l7.stderr);
    t.match(l7.stderr, /warning: api serves tcp, where requests cannot be checked/);
    await waitFor(
      'the tcp connection refused',
      async () => (await apiPeer(mesh)) === undefined,
      30_000,
      100,
    );
    t.pass("api's proxy denies web's new connections: the permissions cannot be checked on tcp");
    const cliEnv = {
      REMORA_CLI_NATS_SERVERS: mesh.nats.url,
      REMORA_CLI_CONSUL_ADDRESS: mesh.consul.url,
    };
    const onTcp = await runRemora(['explain', 'web', 'api'], { env: cliEnv });
    t.equal(onTcp.code, 2, 'explain exits 2: the connection is refused');
    t.match(onTcp.stdout, 'web → api: DENIED');
    t.match(onTcp.stdout, 'but api serves tcp, where requests cannot be checked');
    t.match(onTcp.stdout, 'api serves: tcp (no protocol set anywhere)');
    t.match(onTcp.stdout, /to allow: set api's protocol to http/);

    await putConfig(mesh, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await waitFor(
      'both sides to turn http',
      async () => (await protocols(mesh)) === 'api-1 http, web-1 → api http',
      30_000,
      100,
    );
    const peer = await waitFor(
      'an answer through the http proxies',
      async () => (await apiPeer(mesh)) ?? null,
      30_000,
      100,
    );
    t.match(peer, /^spiffe:\/\/.+\/svc\/web$/, 'api’s proxy now vouches for web per request');
    const onHttp = await runRemora(['explain', 'web', 'api', '--method', 'GET', '--path', '/x'], {
      env: cliEnv,
    });
    t.equal(onHttp.code, 0, onHttp.stderr);
    t.match(onHttp.stdout, 'web → api: allowed');
    t.match(onHttp.stdout, 'api serves: http (its service-defaults entry)');

    const del = await runRemora(['intention', 'delete', 'web', 'api'], {
      env: { REMORA_CLI_NATS_SERVERS: mesh.nats.url, REMORA_CLI_OPERATOR_TOKEN: OPERATOR_TOKEN },
    });
    t.equal(del.code, 0, del.stderr);

    // proxy-defaults covers services without their own entry; service-defaults wins over it
    await putConfig(mesh, { Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'grpc' } });
    await waitFor(
      'web, which has no service-defaults, to take proxy-defaults',
      async () =>
        (await mesh.status()).instances.find((i) => i.id === 'web-1')?.protocol === 'grpc',
      30_000,
      100,
    );
    t.equal(await protocols(mesh), 'api-1 http, web-1 → api http', 'service-defaults wins');

    // deleting the service's entry hands it to proxy-defaults
    await fetch(`${mesh.consul.url}/v1/config/proxy-defaults/global`, { method: 'DELETE' });
    await fetch(`${mesh.consul.url}/v1/config/service-defaults/api`, { method: 'DELETE' });
    await waitFor(
      'both sides back to tcp',
      async () => (await protocols(mesh)) === 'api-1 tcp, web-1 → api tcp',
      30_000,
      100,
    );
    t.equal(
      await waitFor(
        'a plain answer',
        async () => ((await apiPeer(mesh)) === null ? 'plain' : null),
        30_000,
        100,
      ),
      'plain',
      'tcp again: no identity header',
    );
    t.ok(await webReachesApi(mesh), 'web still reaches api');

    // web's service-defaults UpstreamConfig reaches its running proxy's snapshot
    await putConfig(mesh, {
      Kind: 'service-defaults',
      Name: 'web',
      UpstreamConfig: {
        Defaults: { Limits: { MaxConnections: 77 } },
        Overrides: [{ Name: 'api', ConnectTimeoutMs: 1234 }],
      },
    });
    const resilience = await waitFor(
      "web's proxy to apply the upstream settings",
      async () => {
        const api = await webApiUpstream(mesh);
        return api?.resilience.connectTimeoutMs === 1234 ? api.resilience : null;
      },
      30_000,
      100,
    );
    t.equal(resilience.circuitBreaker.maxConnections, 77, 'Defaults under the Override');

    // api's service-resolver sets every caller's timeouts and balancing, over web's own settings
    await putConfig(mesh, {
      Kind: 'service-resolver',
      Name: 'api',
      ConnectTimeout: '2s',
      RequestTimeout: '30s',
      LoadBalancer: { Policy: 'least_request' },
      Failover: { '*': { Datacenters: ['dc2'] } },
    });
    const viaResolver = await waitFor(
      "web's proxy to apply api's resolver",
      async () => {
        const api = await webApiUpstream(mesh);
        return api?.resilience.connectTimeoutMs === 2000 ? api : null;
      },
      30_000,
      100,
    );
    t.same(
      [viaResolver.resilience.requestTimeoutMs, viaResolver.loadBalancer],
      [30_000, 'least_request'],
      'the request timeout and the policy too',
    );
    const failover = await waitFor(
      'the unsupported Failover in status',
      async () =>
        (await mesh.status()).problems.find((p) => /Failover\["\*"\]: Datacenters/.test(p.message)),
      30_000,
      100,
    );
    t.equal(failover.code, 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID');
    const explained = await runRemora(['explain', 'web', 'api'], { env: cliEnv });
    t.match(
      explained.stdout,
      "api's service-resolver: connect timeout 2s, request timeout 30s, balancing least_request for every caller",
      'explain shows what the resolver sets',
    );
    t.match(
      explained.stdout,
      /ignored: service-resolver of api: Failover\["\*"\]: Datacenters \["dc2"\] are not followed/,
    );
    t.ok(await webReachesApi(mesh), 'calls go on through the resolver settings');
    await fetch(`${mesh.consul.url}/v1/config/service-resolver/api`, { method: 'DELETE' });
    await waitFor(
      "web's own settings back",
      async () => (await webApiUpstream(mesh))?.resilience.connectTimeoutMs === 1234,
      30_000,
      100,
    );

    // consistent hashing: the policy and what each call is hashed on reach web's proxy
    await putConfig(mesh, {
      Kind: 'service-resolver',
      Name: 'api',
      LoadBalancer: {
        Policy: 'ring_hash',
        HashPolicies: [
          { Field: 'header', FieldValue: 'x-user' },
          { Field: 'cookie', FieldValue: 'sid', CookieConfig: { TTL: '30m', Path: '/' } },
          { SourceIP: true },
        ],
      },
    });
    const hashed = await waitFor(
      "web's proxy to hash its calls to api",
      async () => {
        const api = (await webApiUpstream(mesh)) as {
          loadBalancer: string;
          hashPolicies?: unknown;
        };
        return api?.loadBalancer === 'ring_hash' ? api : null;
      },
      30_000,
      100,
    );
    t.same(hashed.hashPolicies, [
      { field: 'header', fieldValue: 'x-user' },
      { field: 'cookie', fieldValue: 'sid', cookie: { ttlSeconds: 1800, path: '/' } },
      { sourceIp: true },
    ]);
    t.ok(await webReachesApi(mesh), 'calls go on, hashed');
    t.match(
      (await runRemora(['explain', 'web', 'api'], { env: cliEnv })).stdout,
      "balancing ring_hash on header x-user, then cookie sid (set for 1800s on / when a caller has none), then the caller's address for every caller",
    );
    await fetch(`${mesh.consul.url}/v1/config/service-resolver/api`, { method: 'DELETE' });
    await fetch(`${mesh.consul.url}/v1/config/service-defaults/web`, { method: 'DELETE' });

    // a protocol Remora does not know is reported and ignored
    await putConfig(mesh, { Kind: 'service-defaults', Name: 'api', Protocol: 'htttp' });
    const problem = await waitFor(
      'the problem in status',
      async () =>
        (await mesh.status()).problems.find(
          (p) => p.code === 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        ),
      30_000,
      100,
    );
    t.match(problem.message, /service-defaults of api sets protocol "htttp"/);
    t.equal(await protocols(mesh), 'api-1 tcp, web-1 → api tcp', 'the bad value changes nothing');
    t.ok(await webReachesApi(mesh), 'and calls keep working');
  },
);

t.test("api's service-splitter and service-router send web's calls to api-v2", async (t) => {
  const { mesh } = await startApiV2Mesh(t);
  const p = mesh.ports;

  /** Who answered a call made through web's api upstream: the answering sidecar's identity. */
  const answeredBy = async (): Promise<string | null> => {
    try {
      const r = await httpGet(`http://127.0.0.1:${p.apiLocal}/`);
      return r.status === 200 ? ((r.json as { self: string | null }).self ?? null) : null;
    } catch {
      return null;
    }
  };
  const first = await waitFor('web to reach api over http', answeredBy, 90_000, 100);
  t.match(first, /\/svc\/api$/);

  await putConfig(mesh, {
    Kind: 'service-splitter',
    Name: 'api',
    Splits: [{ Weight: 0 }, { Weight: 100, Service: 'api-v2' }],
  });
  const moved = await waitFor(
    'calls to api answered by api-v2',
    async () => {
      const by = await answeredBy();
      return by !== null && /\/svc\/api-v2$/.test(by) ? by : null;
    },
    30_000,
    100,
  );
  t.match(moved, /\/svc\/api-v2$/, "api-v2's sidecar answered, with its own identity");
  const answers = new Set<string | null>();
  for (let i = 0; i < 10; i++) answers.add(await answeredBy());
  t.same([...answers], [moved], 'every call goes to api-v2 while it has 100 %');

  const splits = await waitFor(
    "web's proxy to show the split",
    async () => {
      const port = (await mesh.status()).instances.find((i) => i.id === 'web-1')?.proxy?.adminPort;
      const r = await httpGet(`http://127.0.0.1:${port}/clusters`);
      const list = r.json as { name: string; splitOf?: string; endpoints: unknown[] }[];
      return list.some((c) => c.splitOf === 'api') ? list : null;
    },
    30_000,
    100,
  );
  t.same(
    splits.map((c) => [c.name, c.splitOf ?? null, c.endpoints.length]),
    [
      ['api', null, 1],
      ['api-v2', 'api', 1],
    ],
    '/clusters lists api-v2 as a share of api, with its endpoint',
  );

  // explain follows the split to api-v2 and its intentions
  const env = cliEnv(mesh);
  const allowed = await runRemora(['explain', 'web', 'api'], { env });
  t.equal(allowed.code, 0, allowed.stderr);
  t.match(allowed.stdout, "api's service-splitter: api-v2 100 %");
  t.match(allowed.stdout, /web → api-v2: allowed/);
  const deny = await runRemora(['intention', 'create', 'web', 'api-v2', '--deny'], { env });
  t.equal(deny.code, 0, deny.stderr);
  const refused = await waitFor(
    "api-v2's sidecar to refuse web",
    async () => {
      const r = await httpGet(`http://127.0.0.1:${p.apiLocal}/`).catch(() => null);
      return r?.status === 403 ? r : null;
    },
    30_000,
    100,
  );
  t.match(refused.body, /REMORA_E_PROXY_INTENTION_DENIED/, 'the share to api-v2 is refused');
  const denied = await runRemora(['explain', 'web', 'api'], { env });
  t.equal(denied.code, 2, 'explain exits 2: the calls that go to api-v2 are refused');
  t.match(denied.stdout, 'web → api: allowed');
  t.match(denied.stdout, /web → api-v2: DENIED/);
  t.match(denied.stdout, "to allow api-v2's share: remora intention create web api-v2");

  await fetch(`${mesh.consul.url}/v1/config/service-splitter/api`, { method: 'DELETE' });
  await waitFor(
    'calls to api answered by api again',
    async () => /\/svc\/api$/.test((await answeredBy()) ?? ''),
    30_000,
    100,
  );
  t.pass('the splitter deleted: api answers again');

  // api's service-router: /v2/… goes to api-v2 with the prefix rewritten, the rest stays with api
  await putConfig(mesh, {
    Kind: 'service-router',
    Name: 'api',
    Routes: [
      {
        Match: { HTTP: { PathPrefix: '/v2/' } },
        Destination: { Service: 'api-v2', PrefixRewrite: '/' },
      },
    ],
  });
  const routedDenied = await waitFor(
    '/v2/ routed to api-v2, whose sidecar still denies web',
    async () => {
      const r = await httpGet(`http://127.0.0.1:${p.apiLocal}/v2/hello`).catch(() => null);
      return r?.status === 403 ? r : null;
    },
    30_000,
    100,
  );
  t.match(
    routedDenied.body,
    /REMORA_E_PROXY_INTENTION_DENIED/,
    'routes obey the target intentions',
  );
  const explainedRoute = await runRemora(
    ['explain', 'web', 'api', '--method', 'GET', '--path', '/v2/hello'],
    { env },
  );
  t.equal(explainedRoute.code, 2, 'explain: this request would be refused');
  t.match(
    explainedRoute.stdout,
    "api's service-router: this request meets route 1 (path prefix /v2/) → api-v2 100 %, path prefix rewritten to /",
  );
  const allow = await runRemora(['intention', 'delete', 'web', 'api-v2'], { env });
  t.equal(allow.code, 0, allow.stderr);
  const routed = await waitFor(
    '/v2/hello answered by api-v2 as /hello',
    async () => {
      const r = await httpGet(`http://127.0.0.1:${p.apiLocal}/v2/hello`).catch(() => null);
      return r?.status === 200 ? (r.json as { self: string; path: string }) : null;
    },
    30_000,
    100,
  );
  t.match(routed, { path: '/hello', self: /\/svc\/api-v2$/ });
  const other = await httpGet(`http://127.0.0.1:${p.apiLocal}/hello`);
  t.match(other.json, { path: '/hello', self: /\/svc\/api$/ }, 'other paths stay with api');
});

t.test("api's resolver subsets pick which instances answer web's calls", async (t) => {
  const mesh = await startMesh(t);
  const p = mesh.ports;
  // round robin, so that both instances answer a few calls when both may
  const defs = consulDefinitions(mesh, { load_balancer: 'round_robin' });
  await mesh.writeDefinition('web.json', defs['web.json']);
  // two instances of api, told apart by their version meta
  for (const [which, version] of [
    [1, 'v1'],
    [2, 'v2'],
  ] as const)
    await mesh.writeDefinition(`api-${which}.json`, {
      service: {
        name: 'api',
        id: `api-${which}`,
        port: which === 1 ? p.api1App : p.api2App,
        meta: { version },
        connect: { sidecar_service: { port: which === 1 ? p.api1Sidecar : p.api2Sidecar } },
      },
    });
  await putConfig(mesh, { Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'http' } });
  const agent = mesh.startAgent();
  t.teardown(() => agent.stop());

  /** The instances that answered `n` calls made through web's api upstream. */
  const answeredBy = async (n = 12): Promise<string[]> => {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      try {
        const r = await httpGet(`http://127.0.0.1:${p.apiLocal}/`);
        if (r.status === 200) seen.add((r.json as { instance: string }).instance);
        else seen.add(`status ${r.status}`);
      } catch {
        seen.add('no answer');
      }
    }
    return [...seen].sort();
  };
  const both = await waitFor(
    'web to reach both api instances',
    async () => ((await answeredBy(8)).join() === 'api-1,api-2' ? true : null),
    90_000,
    200,
  );
  t.ok(both, 'without a resolver, both instances answer');

  await putConfig(mesh, {
    Kind: 'service-resolver',
    Name: 'api',
    DefaultSubset: 'v1',
    Subsets: {
      v1: { Filter: 'Service.Meta.version == v1' },
      v2: { Filter: 'Service.Meta.version == v2' },
    },
  });
  const first = await waitFor(
    'calls to go to the default subset',
    async () => {
      const a = await answeredBy(8);
      return a.join() === 'api-1' ? a : null;
    },
    30_000,
    100,
  );
  t.same(first, ['api-1'], 'the default subset: only v1 answers');
  t.same(await answeredBy(), ['api-1'], 'again, over more calls');

  await putConfig(mesh, {
    Kind: 'service-splitter',
    Name: 'api',
    Splits: [
      { Weight: 0, ServiceSubset: 'v1' },
      { Weight: 100, ServiceSubset: 'v2' },
    ],
  });
  await waitFor(
    'calls to go to the v2 subset',
    async () => ((await answeredBy(4)).join() === 'api-2' ? true : null),
    30_000,
    100,
  );
  t.same(await answeredBy(), ['api-2'], 'the split sends every call to v2');

  // explain shows the subsets and the share
  const env = cliEnv(mesh);
  const ex = await runRemora(['explain', 'web', 'api'], { env });
  t.match(
    ex.stdout,
    "api's service-resolver: subsets v1 (the default) = instances where Service.Meta.version == v1; v2 = instances where Service.Meta.version == v2",
  );
  t.match(ex.stdout, "api's service-splitter: api/v2 100 %");

  // a route to a subset api's resolver does not define: reported, and its requests go to api
  await putConfig(mesh, {
    Kind: 'service-router',
    Name: 'api',
    Routes: [{ Match: { HTTP: { PathPrefix: '/old/' } }, Destination: { ServiceSubset: 'v0' } }],
  });
  const dangling = await waitFor(
    'explain to name the undefined subset',
    async () => {
      const r = await runRemora(['explain', 'web', 'api'], { env });
      return r.stdout.includes('Routes[0] names subset') ? r.stdout : null;
    },
    30_000,
    200,
  );
  t.match(
    dangling,
    `ignored: service-router of api: Routes[0] names subset "v0" of api, which api's service-resolver does not define`,
  );
  await fetch(`${mesh.consul.url}/v1/config/service-router/api`, { method: 'DELETE' });

  // Consul refuses a filter it cannot parse, and so does devconsul
  const bad = await fetch(`${mesh.consul.url}/v1/config`, {
    method: 'PUT',
    body: JSON.stringify({
      Kind: 'service-resolver',
      Name: 'api',
      Subsets: { v1: { Filter: 'Service.Meta.version ===' } },
    }),
  });
  t.equal(bad.status, 400, 'a bad filter is refused when written');
  t.same(await answeredBy(), ['api-2'], 'and the calls go on as before');
});

t.test(
  "api's resolver: a Redirect sends web's calls to api-v2, and a Failover does once api has no instance left",
  async (t) => {
    const { mesh, defs } = await startApiV2Mesh(t);
    const p = mesh.ports;
    const env = cliEnv(mesh);

    /** The service whose sidecar answered a call through web's api upstream (its identity's). */
    const answeredBy = async (): Promise<string> => {
      try {
        const r = await httpGet(`http://127.0.0.1:${p.apiLocal}/`);
        const self = r.status === 200 ? (r.json as { self: string | null }).self : null;
        return self?.split('/svc/')[1] ?? `status ${r.status}`;
      } catch {
        return 'no answer';
      }
    };
    const until = (what: string, service: string) =>
      waitFor(what, async () => ((await answeredBy()) === service ? service : null), 90_000, 100);
    await until('web to reach api', 'api');

    await putConfig(mesh, {
      Kind: 'service-resolver',
      Name: 'api',
      Redirect: { Service: 'api-v2' },
    });
    await until('the redirect to apply', 'api-v2');
    const after = new Set<string>();
    for (let i = 0; i < 10; i++) after.add(await answeredBy());
    t.same([...after], ['api-v2'], 'every call goes to api-v2 while api is up');
    const redirected = await runRemora(['explain', 'web', 'api'], { env });
    t.match(redirected.stdout, "api's service-resolver: redirects every call to api-v2");
    t.match(redirected.stdout, /web → api-v2: allowed/);
    const webApi = async () =>
      (await mesh.status()).instances
        .find((i) => i.id === 'web-1')
        ?.upstreams.find((u) => u.destination === 'api');
    t.match(await webApi(), { redirectedTo: 'api-v2', endpoints: 1 }, 'status shows the redirect');

    // api's own intentions no longer decide: api-v2's sidecar does
    const deny = async (dest: string) => {
      const r = await runRemora(['intention', 'create', 'web', dest, '--deny'], { env });
      t.equal(r.code, 0, r.stderr);
    };
    await deny('api');
    const apiDenied = await runRemora(['explain', 'web', 'api'], { env });
    t.equal(apiDenied.code, 0, 'web → api denied, but every call goes to api-v2: not refused');
    t.match(apiDenied.stdout, "api's intentions do not decide: its service-resolver redirects");
    t.equal(await answeredBy(), 'api-v2', 'and the calls are answered');
    await deny('api-v2');
    const v2Denied = await runRemora(['explain', 'web', 'api'], { env });
    t.equal(v2Denied.code, 2, 'web → api-v2 denied: the redirected calls are refused');
    t.match(v2Denied.stdout, /web → api-v2: DENIED/);
    t.match(v2Denied.stdout, 'to allow the redirect to api-v2: remora intention create web api-v2');
    for (const dest of ['api', 'api-v2']) {
      const r = await runRemora(['intention', 'delete', 'web', dest], { env });
      t.equal(r.code, 0, r.stderr);
    }

    await putConfig(mesh, {
      Kind: 'service-resolver',
      Name: 'api',
      Failover: { '*': { Service: 'api-v2' } },
    });
    await until('the redirect to be gone', 'api');
    const explained = await runRemora(['explain', 'web', 'api'], { env });
    t.match(explained.stdout, 'when api has no healthy instance, calls fail over to api-v2');
    t.match(await webApi(), { failover: ['api-v2'] }, 'status shows the failover');

    // api's last instance goes away: its calls go to api-v2, and come back with it
    await mesh.removeDefinition('api.json');
    t.equal(await until('the failover', 'api-v2'), 'api-v2', 'api has no instance: api-v2 answers');
    const port = (await mesh.status()).instances.find((i) => i.id === 'web-1')?.proxy?.adminPort;
    const metrics = (await httpGet(`http://127.0.0.1:${port}/metrics`)).body;
    t.match(metrics, /remora_proxy_failovers_total\{upstream="api",target="api-v2"\} [1-9]/);
    await mesh.writeDefinition('api.json', defs['api.json']);
    t.equal(await until('api back', 'api'), 'api', 'api is back: it answers again');
  },
);
