import t from 'tap';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readinessCheckId, registrationFor } from '../../agent/agent.ts';
import type { ConsulPort } from '../../agent/ports.ts';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import { decodeDefinitionFile } from '../../agent/definitions.ts';
import { waitFor } from '../../lib/util/index.ts';
import { createFakeConfigEntries, startHost } from './fakes.ts';

t.test('the registration carries the node meta, the sidecar and its readiness check', async (t) => {
  const def = decodeDefinitionFile(
    JSON.stringify({
      service: {
        name: 'web',
        id: 'web-1',
        port: 8080,
        meta: { team: 'a' },
        tags: ['blue'],
        connect: {
          sidecar_service: {
            proxy: {
              config: { protocol: 'http' },
              upstreams: [
                { destination_name: 'api', local_bind_port: 9191 },
                { destination_name: 'db', local_bind_port: 9192, config: { protocol: 'tcp' } },
              ],
            },
          },
        },
      },
    }),
    'w.json',
  ).services[0]!;
  const body = registrationFor(def, {
    node: 'n1',
    sidecarPort: 21000,
    advertiseAddress: '10.0.0.5',
    checkTtlMs: 30000,
    ready: false,
  }) as {
    meta: Record<string, string>;
    tags: string[];
    connect: {
      sidecar_service: {
        id: string;
        port: number;
        address: string;
        meta: Record<string, string>;
        tags: string[];
        checks: unknown[];
        proxy: { destination_service_id: string; config?: unknown; upstreams: unknown[] };
      };
    };
  };
  t.same(body.meta, { team: 'a', 'remora-node': 'n1' });
  const sc = body.connect.sidecar_service;
  t.equal(sc.id, 'web-1-sidecar-proxy');
  t.equal(sc.port, 21000);
  t.equal(sc.address, '10.0.0.5');
  t.same(
    sc.meta,
    { team: 'a', 'remora-node': 'n1' },
    "the parent's meta, which resolver subsets filter on (Consul's default for a sidecar)",
  );
  t.same([body.tags, sc.tags], [['blue'], ['blue']], "and the parent's tags");
  t.same(sc.checks, [
    {
      CheckID: readinessCheckId('web-1'),
      Name: 'Remora proxy ready',
      TTL: '30s',
      Status: 'critical',
    },
  ]);
  t.equal(sc.proxy.destination_service_id, 'web-1');
  t.same(sc.proxy.config, { protocol: 'http' }, 'the protocol the definition gives');
  t.same(
    sc.proxy.upstreams,
    [
      {
        destination_type: 'service',
        destination_name: 'api',
        local_bind_address: '127.0.0.1',
        local_bind_port: 9191,
      },
      {
        destination_type: 'service',
        destination_name: 'db',
        local_bind_address: '127.0.0.1',
        local_bind_port: 9192,
        config: { protocol: 'tcp' },
      },
    ],
    "an upstream without a protocol is registered without one: Consul's config entries decide",
  );
});

t.test(
  'a removed definition is stopped in order: fail readiness, deregister, drain, stop',
  async (t) => {
    const events: string[] = [];
    let consulFailures = 2;
    const consul: ConsulPort = {
      async registerService(def) {
        if (consulFailures-- > 0) throw new Error('connection refused');
        events.push(`register ${String(def.id)}`);
      },
      async deregisterService(id) {
        events.push(`deregister ${id}`);
      },
      async updateTtl(id, status) {
        events.push(`ttl ${id} ${status}`);
      },
      watchConnect: () => ({ stop: () => undefined }),
      watchServices: () => ({ stop: () => undefined }),
      watchConfigEntries: createFakeConfigEntries().watchConfigEntries,
    };
    const { agent, configDir } = await startHost(t, consul, events);
    await waitFor('api-1 registered despite two Consul failures', () =>
      events.includes('register api-1'),
    );
    await waitFor('the proxy ready and the check passing', () =>
      events.includes(`ttl ${readinessCheckId('api-1')} passing`),
    );
    const st = agent.status().instances[0]!;
    t.equal(st.proxy?.ready, true);
    t.match(st.certificate?.spiffeId, /\/svc\/api$/);

    events.length = 0;
    await rm(join(configDir, 'api.json'));
    await agent.reload();
    t.same(
      events,
      [`ttl ${readinessCheckId('api-1')} critical`, 'deregister api-1', 'drain'],
      'fail readiness → deregister → drain',
    );
    t.same(agent.status().instances, []);
  },
);

/**
 * A Consul that keeps the readiness check's status the way Consul does: a registration sets it
 * from the check it carries, a TTL update sets it when the update arrives. `hold` makes the next
 * call of a kind wait until released, to let the proxy change its mind meanwhile.
 */
function checkModel() {
  const status = new Map<string, string>();
  const gates = { register: null as Promise<void> | null, ttl: null as Promise<void> | null };
  let inFlight = 0;
  let maxInFlight = 0;
  let failTtl = false;
  const consul: ConsulPort = {
    async registerService(def) {
      await gates.register;
      const sc = (
        def as { connect: { sidecar_service: { checks: { CheckID: string; Status: string }[] } } }
      ).connect.sidecar_service;
      for (const c of sc.checks) status.set(c.CheckID, c.Status);
    },
    async deregisterService() {},
    async updateTtl(id, st) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        await gates.ttl;
        if (failTtl) {
          failTtl = false;
          throw new Error('Unknown check ID');
        }
        status.set(id, st);
      } finally {
        inFlight--;
      }
    },
    watchConnect: () => ({ stop: () => undefined }),
    watchServices: () => ({ stop: () => undefined }),
    watchConfigEntries: createFakeConfigEntries().watchConfigEntries,
  };
  return {
    consul,
    status: (id: string) => status.get(id),
    maxInFlight: () => maxInFlight,
    /** The next TTL update fails, as when Consul lost the registration. */
    failNextTtl: () => (failTtl = true),
    /** Holds calls of one kind until the returned function is called. */
    hold(kind: 'register' | 'ttl'): () => void {
      let release!: () => void;
      gates[kind] = new Promise<void>((r) => (release = r));
      return () => {
        gates[kind] = null;
        release();
      };
    },
  };
}

t.test(
  'a proxy that becomes ready while its registration is in flight ends up passing, not with the status read before',
  async (t) => {
    const m = checkModel();
    const host = await startHost(t, m.consul, []);
    const check = readinessCheckId('api-1');
    await waitFor('the check passing', () => m.status(check) === 'passing');
    // Consul lost the registration: the next check write fails and the agent registers again,
    // with the proxy not ready at that moment; the registration is held while it becomes ready
    const release = m.hold('register');
    m.failNextTtl();
    host.proxyStatus(false, 'draining the app');
    await waitFor(
      'the agent registering again',
      () => host.agent.status().instances[0]?.registered === false,
    );
    host.proxyStatus(true);
    await waitFor(
      'the agent saw ready',
      () => host.agent.status().instances[0]?.proxy?.ready === true,
    );
    release();
    await waitFor(
      'the instance registered',
      () => host.agent.status().instances[0]?.registered === true,
    );
    // the periodic refresh is 10 s away: only the registration's own write can make it pass now
    t.equal(m.status(check), 'passing', 'passing as soon as the registration is done');
  },
);

t.test(
  'readiness changes during a slow check write are sent one at a time and the last one wins',
  async (t) => {
    const m = checkModel();
    const host = await startHost(t, m.consul, []);
    const check = readinessCheckId('api-1');
    await waitFor('the check passing', () => m.status(check) === 'passing');
    const release = m.hold('ttl');
    host.proxyStatus(false, 'draining the app');
    await waitFor(
      'the agent saw not ready',
      () => host.agent.status().instances[0]?.proxy?.ready === false,
    );
    host.proxyStatus(true);
    await waitFor(
      'the agent saw ready',
      () => host.agent.status().instances[0]?.proxy?.ready === true,
    );
    release();
    await waitFor('the check passing again', () => m.status(check) === 'passing');
    await new Promise((r) => setTimeout(r, 100));
    t.equal(m.status(check), 'passing');
    t.equal(m.maxInFlight(), 1, 'never two writes of the check in flight at once');
  },
);

t.test("no instance is given an exposed path's listener port as its sidecar port", async (t) => {
  const registered = new Map<string, number>();
  const consul: ConsulPort = {
    async registerService(def) {
      const sc = (def as { connect?: { sidecar_service: { port: number } } }).connect;
      if (sc) registered.set(String(def.id), sc.sidecar_service.port);
    },
    async deregisterService() {},
    async updateTtl() {},
    watchConnect: () => ({ stop: () => undefined }),
    watchServices: () => ({ stop: () => undefined }),
    watchConfigEntries: createFakeConfigEntries().watchConfigEntries,
  };
  const expose = { paths: [{ path: '/metrics', local_path_port: 9102, listener_port: 21000 }] };
  await startHost(t, consul, [], {
    'a.json': {
      service: { name: 'a', port: 8081, connect: { sidecar_service: { proxy: { expose } } } },
    },
    'b.json': { service: { name: 'b', port: 8082, connect: { sidecar_service: {} } } },
  });
  await waitFor('both registered', () => registered.size === 2);
  t.same(
    [registered.get('a'), registered.get('b')].sort(),
    [21001, 21002],
    '21000, the first port of the range, is a listener of a: skipped',
  );
});

t.test(
  "an exposed check's listener serves the Consul agent's address, learnt before it is registered",
  async (t) => {
    const order: string[] = [];
    let selfFailures = 1;
    const consul: ConsulPort = {
      async registerService(def) {
        order.push(`register ${String(def.id)}`);
      },
      async deregisterService() {},
      async updateTtl() {},
      async agentAddress() {
        if (selfFailures-- > 0) throw new Error('connection refused');
        order.push('agent/self');
        return '10.0.0.5';
      },
      watchConnect: () => ({ stop: () => undefined }),
      watchServices: () => ({ stop: () => undefined }),
      watchConfigEntries: createFakeConfigEntries().watchConfigEntries,
    };
    const snapshots: ProxySnapshot[] = [];
    const check = { name: 'ready', http: 'http://127.0.0.1:8081/ready', interval: '5s' };
    await startHost(
      t,
      consul,
      [],
      {
        'api.json': {
          service: {
            name: 'api',
            id: 'api-1',
            port: 8081,
            check,
            connect: {
              sidecar_service: {
                port: 21001,
                proxy: {
                  expose: {
                    checks: true,
                    paths: [{ path: '/metrics', local_path_port: 9102, listener_port: 21600 }],
                  },
                },
              },
            },
          },
        },
      },
      { exposePortMin: 21500, exposePortMax: 21500 },
      (s) => snapshots.push(s),
    );
    await waitFor('api-1 registered', () => order.includes('register api-1'));
    t.same(order, ['agent/self', 'register api-1'], "Consul's address first, despite a failure");
    await waitFor('a snapshot with the address', () =>
      snapshots.some((s) => s.expose?.some((p) => p.allowSources?.length)),
    );
    const last = snapshots.at(-1)!;
    t.same(
      last.expose,
      [
        { path: '/metrics', localPathPort: 9102, listenerPort: 21600, protocol: 'http' },
        {
          path: '/ready',
          localPathPort: 8081,
          listenerPort: 21500,
          protocol: 'http',
          allowSources: ['10.0.0.5'],
        },
      ],
      'the check path is confined to the Consul agent; the listed path stays public',
    );
    t.notOk(
      snapshots.some((s) =>
        s.expose?.some((p) => p.path === '/ready' && p.allowSources === undefined),
      ),
      'no snapshot ever served the check path to everyone',
    );
  },
);

/** A Consul that keeps the last registration of each service ID in `registered`. */
function recordingConsul(
  registered: Map<string, Record<string, unknown>>,
  entries = createFakeConfigEntries(),
): ConsulPort {
  return {
    async registerService(def) {
      registered.set(String(def.id), def);
    },
    async deregisterService() {},
    async updateTtl() {},
    watchConnect: () => ({ stop: () => undefined }),
    watchServices: () => ({ stop: () => undefined }),
    watchConfigEntries: entries.watchConfigEntries,
  };
}

t.test(
  'exposed checks take ports of their own range; past its end a check stays as it was',
  async (t) => {
    const registered = new Map<string, Record<string, unknown>>();
    const consul = recordingConsul(registered);
    const service = (name: string, port: number): unknown => ({
      service: {
        name,
        port,
        check: { name: 'ready', http: `http://127.0.0.1:${port}/ready?x=1`, interval: '5s' },
        connect: { sidecar_service: { proxy: { expose: { checks: true } } } },
      },
    });
    const { agent } = await startHost(
      t,
      consul,
      [],
      { 'a.json': service('a', 8081), 'b.json': service('b', 8082), 'c.json': service('c', 8083) },
      { exposePortMin: 21500, exposePortMax: 21501 },
    );
    await waitFor('all registered', () => registered.size === 3);
    const checkOf = (id: string): unknown => (registered.get(id)!.checks as unknown[])[0];
    const exposeOf = (id: string): unknown =>
      (registered.get(id)!.connect as { sidecar_service: { proxy: { expose?: unknown } } })
        .sidecar_service.proxy.expose;
    const placed = ['a', 'b', 'c'].filter((id) => exposeOf(id) !== undefined);
    t.equal(placed.length, 2, 'two ports in the range: two services get their check exposed');
    const ports = placed.map((id) => {
      const paths = (exposeOf(id) as { paths: { listener_port: number }[] }).paths;
      t.match(paths, [{ path: '/ready', protocol: 'http' }]);
      t.same(checkOf(id), {
        name: 'ready',
        http: `http://127.0.0.1:${paths[0]!.listener_port}/ready?x=1`,
        interval: '5s',
      });
      return paths[0]!.listener_port;
    });
    t.same(ports.sort(), [21500, 21501]);
    const [left] = ['a', 'b', 'c'].filter((id) => !placed.includes(id));
    t.match(checkOf(left!), { http: /^http:\/\/127\.0\.0\.1:808\d\/ready\?x=1$/ }, 'unchanged');
    t.match(agent.status().problems, [
      {
        code: 'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
        message: new RegExp(
          `no free port left in 21500–21501 to expose the check path /ready of ${left}`,
        ),
      },
    ]);
  },
);

t.test(
  "service-defaults' and proxy-defaults' Expose reach the snapshot, the checks and the registration, live",
  async (t) => {
    const registered = new Map<string, Record<string, unknown>>();
    const entries = createFakeConfigEntries({
      'proxy-defaults': [{ Kind: 'proxy-defaults', Name: 'global', Expose: { Checks: true } }],
      'service-defaults': [
        {
          Kind: 'service-defaults',
          Name: 'api',
          Expose: { Paths: [{ Path: '/metrics', LocalPathPort: 9102, ListenerPort: 21600 }] },
        },
        {
          Kind: 'service-defaults',
          Name: 'web',
          // api-1's sidecar port
          Expose: { Paths: [{ Path: '/metrics', LocalPathPort: 9103, ListenerPort: 21001 }] },
        },
      ],
    });
    const consul = recordingConsul(registered, entries);
    const service = (name: string, port: number, sidecarPort: number): unknown => ({
      service: {
        name,
        id: `${name}-1`,
        port,
        check: { name: 'ready', http: `http://127.0.0.1:${port}/ready`, interval: '5s' },
        connect: { sidecar_service: { port: sidecarPort } },
      },
    });
    const snapshots: ProxySnapshot[] = [];
    const { agent } = await startHost(
      t,
      consul,
      [],
      { 'api.json': service('api', 8081, 21001), 'web.json': service('web', 8082, 21002) },
      { exposePortMin: 21500, exposePortMax: 21509 },
      (s) => snapshots.push(s),
    );
    const apiReg = () => registered.get('api-1');
    const exposeOf = (r: Record<string, unknown> | undefined): unknown =>
      (r?.connect as { sidecar_service: { proxy: { expose?: unknown } } } | undefined)
        ?.sidecar_service.proxy.expose;
    await waitFor('api registered with its paths', () => exposeOf(apiReg()) !== undefined);
    t.same(
      exposeOf(apiReg()),
      {
        paths: [
          { path: '/metrics', local_path_port: 9102, listener_port: 21600, protocol: 'http' },
          { path: '/ready', local_path_port: 8081, listener_port: 21500, protocol: 'http' },
        ],
      },
      "service-defaults' path, then the check's that proxy-defaults' Checks exposes",
    );
    t.same(
      (apiReg()!.checks as unknown[])[0],
      { name: 'ready', http: 'http://127.0.0.1:21500/ready', interval: '5s' },
      'the check probes the sidecar',
    );
    await waitFor('an api snapshot with both paths', () =>
      snapshots.some((s) => s.instance.id === 'api-1' && s.expose?.length === 2),
    );

    await waitFor('web reported', () =>
      agent.status().instances.some((i) => i.id === 'web-1' && i.warnings.length > 0),
    );
    const web = agent.status().instances.find((i) => i.id === 'web-1')!;
    t.same(
      web.warnings.map((w) => [w.code, w.message]),
      [
        [
          'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
          'web-1: Expose.Paths of service-defaults of web: ListenerPort 21001 of /metrics is already the sidecar port of api-1; that path is not exposed (nor a check on it). Set another ListenerPort in the entry',
        ],
      ],
      'a path whose port is taken is said, and only that path is left out',
    );
    t.match(
      exposeOf(registered.get('web-1')),
      { paths: [{ path: '/ready', listener_port: 21501 }] },
      "web's check is exposed all the same",
    );

    entries.set('service-defaults', []);
    entries.set('proxy-defaults', []);
    await waitFor('api registered again without them', () => exposeOf(apiReg()) === undefined);
    t.same(
      (apiReg()!.checks as unknown[])[0],
      { name: 'ready', http: 'http://127.0.0.1:8081/ready', interval: '5s' },
      'deleted entries: the check probes the app again',
    );
    await waitFor(
      'an api snapshot without exposed paths',
      () => snapshots.filter((s) => s.instance.id === 'api-1').at(-1)?.expose === undefined,
    );
    await waitFor('web no longer reported', () =>
      agent.status().instances.every((i) => i.warnings.length === 0),
    );
  },
);

t.test(
  "a proxy-defaults path two instances of the host ask for: the earlier ID's, with its check",
  async (t) => {
    const registered = new Map<string, Record<string, unknown>>();
    const entries = createFakeConfigEntries({
      'proxy-defaults': [
        {
          Kind: 'proxy-defaults',
          Name: 'global',
          Expose: {
            Checks: true,
            Paths: [{ Path: '/ready', LocalPathPort: 8081, ListenerPort: 21600 }],
          },
        },
      ],
    });
    const instance = (id: string, sidecarPort: number): unknown => ({
      service: {
        name: 'api',
        id,
        port: 8081,
        check: { name: 'ready', http: 'http://127.0.0.1:8081/ready', interval: '5s' },
        connect: { sidecar_service: { port: sidecarPort } },
      },
    });
    const { agent } = await startHost(
      t,
      recordingConsul(registered, entries),
      [],
      { 'api-1.json': instance('api-1', 21001), 'api-2.json': instance('api-2', 21002) },
      { exposePortMin: 21500, exposePortMax: 21509 },
    );
    await waitFor('both registered', () => registered.size === 2);
    const sidecarOf = (id: string) =>
      (registered.get(id)!.connect as { sidecar_service: { proxy: { expose?: unknown } } })
        .sidecar_service.proxy;
    const checkOf = (id: string): unknown => (registered.get(id)!.checks as unknown[])[0];
    t.same(sidecarOf('api-1').expose, {
      paths: [{ path: '/ready', local_path_port: 8081, listener_port: 21600, protocol: 'http' }],
    });
    t.match(checkOf('api-1'), { http: 'http://127.0.0.1:21600/ready' }, 'its check on that path');
    t.equal(sidecarOf('api-2').expose, undefined, 'api-2 exposes nothing on 21600');
    t.match(checkOf('api-2'), { http: 'http://127.0.0.1:8081/ready' }, 'its check probes the app');
    await waitFor('api-2 reported', () =>
      agent.status().instances.some((i) => i.id === 'api-2' && i.warnings.length > 0),
    );
    t.match(agent.status().instances.find((i) => i.id === 'api-2')!.warnings, [
      {
        code: 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        message: /ListenerPort 21600 of \/ready is already the exposed path \/ready of api-1/,
      },
    ]);
    t.same(agent.status().instances.find((i) => i.id === 'api-1')!.warnings, [], 'api-1 is not');
  },
);
