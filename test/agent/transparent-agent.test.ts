// The agent's wiring of transparent mode, with fakes (no root, no iptables): allocated listener
// ports in the registration and the snapshot, rules planned from the discovery watch once the
// proxy is ready, rebuilt when endpoints change, removed in the ordered stop.
import t, { type Test } from 'tap';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createAgent } from '../../agent/agent.ts';
import { EMPTY_AFTER_OUTAGE_GRACE_MS } from '../../agent/discovery.ts';
import type { ConfigEntry, ConnectEntry, ConsulPort, ControlPort } from '../../agent/ports.ts';
import type { TransparentManager, TransparentPlan } from '../../agent/transparent/index.ts';
import { createLogger, createSilentLogger } from '../../lib/log/index.ts';
import { Writable } from 'node:stream';
import { waitFor, type Clock } from '../../lib/util/index.ts';
import type { IntentionsSnapshot } from '../../lib/intentions/index.ts';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import {
  createFakeConfigEntries,
  createFakeControl,
  createFakeProxies,
  createHostDir,
  createJumpClock,
} from './fakes.ts';

const entry = (id: string, address: string, port: number, protocol?: string): ConnectEntry => ({
  Node: { Node: 'n2', Address: address },
  Service: {
    ID: `${id}-sidecar-proxy`,
    Service: 'x-sidecar-proxy',
    Address: address,
    Port: 21000,
    Proxy: {
      DestinationServiceID: id,
      LocalServicePort: port,
      ...(protocol ? { Config: { protocol } } : {}),
    },
  },
});

/** web-1, transparent, with these upstreams, under an agent with fake Consul, control and proxies. */
async function transparentAgent(
  t: Test,
  o: {
    upstreams: unknown[];
    manager: TransparentManager;
    pid: number;
    config?: Record<string, unknown>;
    control?: (clock: Clock) => ControlPort;
    beforeAck?: (s: ProxySnapshot) => Promise<void>;
    transparentDerivedMax?: number;
    /** More definition files next to web.json. */
    files?: Record<string, unknown>;
    /** Consul's config entries by kind, at start. */
    configEntries?: Record<string, ConfigEntry[]>;
    /** The config-entry watches answer only on `configEntries.release()`. */
    configHeld?: boolean;
    /** The agent's log lines go here (silent otherwise). */
    logLines?: string[];
  },
) {
  const host = await createHostDir(t, {
    'web.json': {
      service: {
        name: 'web',
        id: 'web-1',
        port: 8080,
        connect: {
          sidecar_service: {
            port: 21000,
            proxy: {
              mode: 'transparent',
              upstreams: o.upstreams,
              ...(o.config ? { config: o.config } : {}),
            },
          },
        },
      },
    },
    ...o.files,
  });
  const registrations: Record<string, unknown>[] = [];
  const watchers = new Map<string, (e: ConnectEntry[]) => void>();
  const catalog: { report: ((names: string[]) => void) | null } = { report: null };
  const configEntries = createFakeConfigEntries(o.configEntries, { held: o.configHeld ?? false });
  const consul: ConsulPort = {
    watchConfigEntries: configEntries.watchConfigEntries,
    registerService: async (def) => void registrations.push(def),
    deregisterService: async () => undefined,
    updateTtl: async () => undefined,
    watchConnect(service, h) {
      watchers.set(service, (e) => h.onChange(e));
      return { stop: () => watchers.delete(service) };
    },
    watchServices(h) {
      catalog.report = (names) => h.onChange(names);
      return { stop: () => (catalog.report = null) };
    },
  };
  const clock = createJumpClock();
  const snapshots: ProxySnapshot[] = [];
  const proxies = createFakeProxies({
    pid: o.pid,
    onSnapshot: (snap) => snapshots.push(snap),
    ...(o.beforeAck ? { beforeAck: o.beforeAck } : {}),
  });
  t.teardown(() => proxies.close());
  const agent = createAgent({
    settings: host.settings({
      drainTimeoutMs: 200,
      transparentPortMin: 15001,
      transparentPortMax: 15010,
      transparentProxyUid: 998,
      ...(o.transparentDerivedMax === undefined
        ? {}
        : { transparentDerivedMax: o.transparentDerivedMax }),
    }),
    consul,
    control: (o.control ?? createFakeControl)(clock),
    processes: proxies.processes,
    clock,
    random: () => 0.5,
    logger: o.logLines
      ? createLogger({
          component: 'agent',
          destination: new Writable({
            write(chunk: Buffer, _enc, cb) {
              o.logLines!.push(chunk.toString());
              cb();
            },
          }),
        })
      : createSilentLogger(),
    transparent: o.manager,
  });
  t.teardown(() => agent.stop());
  return {
    agent,
    registrations,
    watchers,
    snapshots,
    catalog,
    configEntries,
    clock,
    configDir: host.configDir,
  };
}

t.test('a transparent instance gets ports, a snapshot field and rules that follow', async (t) => {
  const calls: string[] = [];
  const plans: TransparentPlan[] = [];
  const manager: TransparentManager = {
    apply: async (plan) => {
      calls.push(`apply ${plan.instanceId}`);
      plans.push(plan);
    },
    remove: async (id) => void calls.push(`remove ${id}`),
    reconcile: async (keep) => void calls.push(`reconcile ${[...keep].join(',')}`),
    status: () => ({
      active: true,
      chains: ['A', 'B'],
      redirects: 3,
      meshDestinationsOnly: false,
      lastError: null,
    }),
    idle: async () => undefined,
    ipv6: false,
  };
  const { agent, registrations, watchers, snapshots } = await transparentAgent(t, {
    upstreams: [
      { destination_name: 'api', config: { protocol: 'http' } },
      { destination_name: 'echo', local_bind_port: 9300 },
    ],
    manager,
    pid: 61_000,
  });
  await agent.start();
  t.same(calls[0], 'reconcile web-1', 'start-up clean-up keeps the defined transparent instance');
  await waitFor('both watches', () => watchers.size === 2);
  watchers.get('api')!([entry('api-1', '10.0.0.12', 8080), entry('api-2', '10.0.0.13', 8080)]);
  watchers.get('echo')!([entry('echo-1', '10.0.0.14', 7000)]);
  await waitFor('the rules planned once the proxy is ready', () => plans.length > 0);

  const reg = registrations.at(-1) as {
    connect: { sidecar_service: { proxy: { upstreams: { local_bind_port: number }[] } } };
  };
  t.same(
    reg.connect.sidecar_service.proxy.upstreams.map((u) => u.local_bind_port),
    [15001, 9300],
    'Consul gets the allocated port for the upstream without one',
  );
  const snap = snapshots.at(-1)!;
  t.same(
    snap.upstreams.map((u) => u.localBindPort),
    [15001, 9300],
  );
  t.same(snap.transparent, {
    http: [{ bindAddress: '127.0.0.1', bindPort: 15002, upstream: 'api' }],
  });
  t.same(
    plans.at(-1),
    {
      instanceId: 'web-1',
      appPort: 8080,
      sidecarPort: 21000,
      proxyUid: 998,
      targets: [
        { service: 'api', address: '10.0.0.12', port: 8080, toPort: 15002 },
        { service: 'api', address: '10.0.0.13', port: 8080, toPort: 15002 },
        { service: 'echo', address: '10.0.0.14', port: 7000, toPort: 9300 },
      ],
    },
    'HTTP destinations go to the Host-routing listener, TCP ones to the upstream listener',
  );
  t.match(agent.status().instances[0]!.transparent, { active: true });

  const before = plans.length;
  watchers.get('api')!([entry('api-1', '10.0.0.12', 8080)]);
  await waitFor('the rules rebuilt after an endpoint left', () => plans.length > before);
  t.same(
    plans
      .at(-1)!
      .targets.filter((x) => x.service === 'api')
      .map((x) => x.address),
    ['10.0.0.12'],
  );

  calls.length = 0;
  await agent.stop();
  t.same(calls, ['remove web-1'], 'the ordered stop removes the rules');
});

t.test('with IPv6 rules, the proxy also listens on ::1 where they redirect', async (t) => {
  const { agent, watchers, snapshots } = await transparentAgent(t, {
    upstreams: [
      { destination_name: 'api', config: { protocol: 'http' } },
      { destination_name: 'echo', local_bind_port: 9300 },
      { destination_name: 'db', local_bind_port: 9301, local_bind_address: '::1' },
    ],
    manager: {
      apply: async () => undefined,
      remove: async () => undefined,
      reconcile: async () => undefined,
      status: () => null,
      idle: async () => undefined,
      ipv6: true,
    },
    pid: 62_000,
  });
  await agent.start();
  await waitFor('the three watches', () => watchers.size === 3);
  for (const [service, report] of watchers) report([entry(`${service}-1`, '10.0.0.20', 8080)]);
  await waitFor('a snapshot', () => snapshots.length > 0);
  t.same(snapshots.at(-1)!.transparent, {
    http: [
      // 15001 is api's own upstream listener (no local_bind_port given)
      { bindAddress: '127.0.0.1', bindPort: 15002, upstream: 'api' },
      { bindAddress: '::1', bindPort: 15002, upstream: 'api' },
    ],
    // db listens on ::1 already
    forward: [{ bindAddress: '::1', bindPort: 9300, upstream: 'echo' }],
  });
});

const quietManager = (plans: TransparentPlan[]): TransparentManager => ({
  apply: async (plan) => void plans.push(plan),
  remove: async () => undefined,
  reconcile: async () => undefined,
  status: () => null,
  idle: async () => undefined,
  ipv6: false,
});

t.test(
  'a transparent instance also calls what its intentions allow, and follows them',
  async (t) => {
    let policy: IntentionsSnapshot = {
      revision: 1,
      defaultPolicy: 'deny',
      auditMode: false,
      intentions: [
        { source: 'web', destination: 'db', action: 'allow' },
        { source: '*', destination: 'cache', action: 'allow' },
        { source: 'web', destination: 'cache', action: 'deny' },
        {
          source: 'web',
          destination: 'search',
          permissions: [{ action: 'allow', http: { pathPrefix: '/q' } }],
        },
        { source: 'web', destination: 'legacy', action: 'allow' },
      ],
    };
    const changed: ((p: IntentionsSnapshot) => void)[] = [];
    const plans: TransparentPlan[] = [];
    const { agent, watchers, snapshots, catalog } = await transparentAgent(t, {
      upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
      manager: quietManager(plans),
      pid: 63_000,
      control: (clock) => ({
        ...createFakeControl(clock),
        intentions: async () => policy,
        onIntentionsChanged: (fn) => {
          changed.push(fn);
          return () => undefined;
        },
      }),
    });
    await agent.start();
    await waitFor('the explicit upstream watched', () => watchers.has('api'));
    watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
    await waitFor('the catalog watched', () => catalog.report !== null);
    catalog.report!([
      'api',
      'cache',
      'consul',
      'db',
      'db-sidecar-proxy',
      'legacy',
      'search',
      'web',
    ]);
    await waitFor(
      'the allowed services watched',
      () => watchers.has('db') && watchers.has('search'),
    );
    t.notOk(watchers.has('cache'), 'an exact deny beats the wildcard allow');
    t.notOk(watchers.has('web'), 'not itself');
    t.notOk(watchers.has('db-sidecar-proxy'), "not a sidecar's own entry");
    watchers.get('db')!([entry('db-1', '10.0.0.30', 5432)]);
    watchers.get('search')!([entry('search-1', '10.0.0.31', 9200, 'http')]);
    // legacy has no sidecar: Consul lists no connect entry for it
    watchers.get('legacy')!([]);
    await waitFor(
      'a snapshot with the derived upstreams',
      () => (snapshots.at(-1)?.upstreams.length ?? 0) === 3,
    );
    const snap = snapshots.at(-1)!;
    t.same(
      snap.upstreams.map((u) => [u.destinationName, u.protocol]),
      [
        ['api', 'http'],
        ['db', 'tcp'],
        ['search', 'http'],
      ],
      'db and search derived (L7 permissions may allow some requests); legacy has no sidecar',
    );
    const port = (name: string) =>
      snap.upstreams.find((u) => u.destinationName === name)!.localBindPort;
    const hostPort = (name: string) =>
      snap.transparent!.http.find((l) => l.upstream === name)!.bindPort;
    t.same(
      snap.transparent!.http.map((l) => l.upstream),
      ['api', 'search'],
      'the HTTP ones get Host-routing listeners',
    );
    const used = [port('api'), port('db'), port('search'), hostPort('api'), hostPort('search')];
    t.equal(new Set(used).size, 5, 'every listener has its own port');
    t.ok(
      used.every((p) => p >= 15001 && p <= 15010),
      'from the transparent range',
    );
    await waitFor(
      'rules for the derived services',
      () => (plans.at(-1)?.targets.length ?? 0) === 3,
    );
    t.same(
      plans.at(-1)!.targets.map((x) => [x.service, x.address, x.toPort]),
      [
        ['api', '10.0.0.12', hostPort('api')],
        ['db', '10.0.0.30', port('db')],
        ['search', '10.0.0.31', hostPort('search')],
      ],
    );
    t.same(
      agent.status().instances[0]!.upstreams.map((u) => [u.destination, u.derived]),
      [
        ['api', false],
        ['db', true],
        ['search', true],
      ],
    );

    // an intention change takes db away: no listener, no rule, no watch
    policy = {
      ...policy,
      revision: 2,
      intentions: policy.intentions.filter((i) => i.destination !== 'db'),
    };
    for (const fn of changed) fn(policy);
    await waitFor(
      'db dropped',
      () => !watchers.has('db') && snapshots.at(-1)!.upstreams.length === 2,
    );
    await waitFor('its rule dropped', () => plans.at(-1)!.targets.every((x) => x.service !== 'db'));

    // a service that joins the catalog later is picked up
    catalog.report!(['api', 'cache', 'consul', 'legacy', 'search', 'web', 'ledger']);
    policy = {
      ...policy,
      revision: 3,
      intentions: [...policy.intentions, { source: 'web', destination: 'ledger', action: 'allow' }],
    };
    for (const fn of changed) fn(policy);
    await waitFor('ledger watched', () => watchers.has('ledger'));
    watchers.get('ledger')!([entry('ledger-1', '10.0.0.32', 7000, 'grpc')]);
    await waitFor('ledger in the snapshot', () =>
      snapshots.at(-1)!.upstreams.some((u) => u.destinationName === 'ledger'),
    );
    const last = snapshots.at(-1)!;
    const ledger = last.upstreams.find((u) => u.destinationName === 'ledger')!;
    t.equal(ledger.protocol, 'grpc');
    t.notOk(
      last.upstreams.some((u) => u !== ledger && u.localBindPort === ledger.localBindPort),
      'on a port of its own',
    );
  },
);

t.test(
  'derive_upstreams: false keeps a transparent instance to its listed upstreams',
  async (t) => {
    const { agent, watchers, snapshots, catalog } = await transparentAgent(t, {
      upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
      manager: quietManager([]),
      pid: 64_000,
      config: { derive_upstreams: false },
    });
    await agent.start();
    await waitFor('the explicit upstream watched', () => watchers.has('api'));
    watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    t.equal(catalog.report, null, 'the catalog is not watched');
    t.same(
      snapshots.at(-1)!.upstreams.map((u) => u.destinationName),
      ['api'],
    );
  },
);

t.test("the mesh entry's MeshDestinationsOnly reaches the rules, live", async (t) => {
  const plans: TransparentPlan[] = [];
  const mesh = (on: boolean) => [
    { Kind: 'mesh', Name: 'mesh', TransparentProxy: { MeshDestinationsOnly: on } },
  ];
  const { agent, watchers, configEntries } = await transparentAgent(t, {
    upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
    manager: quietManager(plans),
    pid: 64_500,
    config: { derive_upstreams: false },
    configEntries: { mesh: mesh(true) },
  });
  await agent.start();
  await waitFor('the upstream watched', () => watchers.has('api'));
  watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
  await waitFor('the rules', () => plans.length > 0);
  t.equal(plans.at(-1)!.meshDestinationsOnly, true, 'the first plan refuses non-mesh calls');
  const warnings = () => agent.status().instances[0]!.warnings.map((w) => w.code);
  t.same(
    warnings(),
    ['REMORA_E_AGENT_TRANSPARENT_HOST_CONFINED'],
    'without app_user, the whole host is confined: said',
  );
  t.match(agent.status().instances[0]!.warnings[0]!.message, /set app_user to the user the app/);
  const before = plans.length;
  configEntries.set('mesh', mesh(false));
  await waitFor('the rules rebuilt', () => plans.length > before);
  t.notOk('meshDestinationsOnly' in plans.at(-1)!, 'turned off: the plan has no filter chain');
  t.same(warnings(), [], 'and the warning goes');
  configEntries.set('mesh', []);
  configEntries.set('mesh', mesh(true));
  await waitFor('on again', () => plans.at(-1)!.meshDestinationsOnly === true);
});

t.test('with app_user, MeshDestinationsOnly confines the app alone: no warning', async (t) => {
  const plans: TransparentPlan[] = [];
  const { agent, watchers } = await transparentAgent(t, {
    upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
    manager: quietManager(plans),
    pid: 64_510,
    config: { derive_upstreams: false, app_user: 1001 },
    configEntries: {
      mesh: [{ Kind: 'mesh', Name: 'mesh', TransparentProxy: { MeshDestinationsOnly: true } }],
    },
  });
  await agent.start();
  await waitFor('the upstream watched', () => watchers.has('api'));
  watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
  await waitFor('the rules', () => plans.length > 0);
  t.equal(plans.at(-1)!.meshDestinationsOnly, true);
  t.equal(plans.at(-1)!.appUid, 1001);
  t.same(agent.status().instances[0]!.warnings, []);
});

t.test(
  "a new upstream's addresses are redirected only once the proxy listens for it",
  async (t) => {
    const plans: TransparentPlan[] = [];
    let hold: Promise<void> | null = null;
    let release = (): void => undefined;
    const { agent, watchers, snapshots, catalog } = await transparentAgent(t, {
      upstreams: [],
      manager: quietManager(plans),
      pid: 65_000,
      // the fake control's default policy is allow: web may call db
      beforeAck: async () => {
        if (hold) await hold;
      },
    });
    await agent.start();
    await waitFor('the catalog watched', () => catalog.report !== null);
    await waitFor('the first rules (inbound only)', () => plans.length > 0);
    t.same(plans.at(-1)!.targets, []);
    hold = new Promise<void>((resolve) => (release = resolve));
    catalog.report!(['db', 'web']);
    await waitFor('db watched', () => watchers.has('db'));
    watchers.get('db')!([entry('db-1', '10.0.0.30', 5432)]);
    await waitFor('the snapshot with db sent', () =>
      snapshots.some((s) => s.upstreams.some((u) => u.destinationName === 'db')),
    );
    await new Promise((r) => setTimeout(r, 100));
    t.ok(
      plans.every((p) => p.targets.length === 0),
      'no rule while the proxy has not applied it',
    );
    release();
    await waitFor('the rule once it is applied', () =>
      plans.at(-1)!.targets.some((x) => x.service === 'db' && x.address === '10.0.0.30'),
    );
  },
);

t.test(
  'over transparentDerivedMax, the first services are kept and the rest reported',
  async (t) => {
    const { agent, watchers, catalog, clock } = await transparentAgent(t, {
      upstreams: [],
      manager: quietManager([]),
      pid: 66_000,
      transparentDerivedMax: 2,
    });
    await agent.start();
    await waitFor('the catalog watched', () => catalog.report !== null);
    // the fake control's default policy is allow: web may call all three
    catalog.report!(['cache', 'db', 'ledger', 'web']);
    await waitFor('two watched', () => watchers.has('cache') && watchers.has('db'));
    t.notOk(watchers.has('ledger'), 'the third is not watched');
    const inst = agent.status().instances[0]!;
    t.match(inst.warnings[0], {
      code: 'REMORA_E_AGENT_DERIVED_LIMIT',
      message:
        /web-1: intentions allow 3 services but transparentDerivedMax \(2\) leaves room for 2; not intercepted: ledger/,
    });
    // db leaves the catalog: it is held for the grace (a restarted Consul re-lists its
    // services within seconds), then its room goes to ledger
    const left = clock.now();
    catalog.report!(['cache', 'ledger', 'web']);
    await new Promise((r) => setTimeout(r, 300));
    t.ok(watchers.has('db') && !watchers.has('ledger'), 'db still held a moment later');
    clock.jump(EMPTY_AFTER_OUTAGE_GRACE_MS - 400);
    await new Promise((r) => setTimeout(r, 100));
    t.ok(watchers.has('db') && !watchers.has('ledger'), 'db still held just before the grace ends');
    clock.jump(400);
    await waitFor('ledger watched once db is gone', () => watchers.has('ledger'));
    t.ok(clock.now() - left >= EMPTY_AFTER_OUTAGE_GRACE_MS, 'after the grace');
    t.notOk(watchers.has('db'));
    t.same(agent.status().instances[0]!.warnings, [], 'no longer over the limit');
  },
);

t.test('transparent instances sharing the namespace are told to set app_user', async (t) => {
  const billing = (config: Record<string, unknown>) => ({
    service: {
      name: 'billing',
      id: 'billing-1',
      port: 8081,
      connect: { sidecar_service: { port: 21001, proxy: { mode: 'transparent', config } } },
    },
  });
  const plans: TransparentPlan[] = [];
  const shared = await transparentAgent(t, {
    upstreams: [],
    manager: quietManager(plans),
    pid: 67_000,
    files: { 'billing.json': billing({}) },
  });
  await shared.agent.start();
  await waitFor('rules for both', () => new Set(plans.map((p) => p.instanceId)).size === 2);
  const warned = shared.agent.status().instances.map((i) => i.warnings.map((w) => w.code));
  t.same(warned, [['REMORA_E_AGENT_TRANSPARENT_SHARED'], ['REMORA_E_AGENT_TRANSPARENT_SHARED']]);
  t.match(
    shared.agent.status().instances[0]!.warnings[0]!.message,
    /billing-1 and web-1 intercept/,
  );
  rmSync(join(shared.configDir, 'billing.json'));
  await shared.agent.reload();
  t.same(
    shared.agent.status().instances.map((i) => [i.id, i.warnings]),
    [['web-1', []]],
    'the warning goes with the other instance',
  );
  await shared.agent.stop();

  const scoped: TransparentPlan[] = [];
  const own = await transparentAgent(t, {
    upstreams: [],
    manager: quietManager(scoped),
    pid: 68_000,
    config: { app_user: 1001 },
    files: { 'billing.json': billing({ app_user: 'nobody' }) },
  });
  await own.agent.start();
  await waitFor('rules for both', () => new Set(scoped.map((p) => p.instanceId)).size === 2);
  t.same(
    own.agent.status().instances.map((i) => i.warnings),
    [[], []],
    'each app its own user: no warning',
  );
  t.same(
    Object.fromEntries(scoped.map((p) => [p.instanceId, p.appUid])),
    { 'web-1': 1001, 'billing-1': 65534 },
    'each plan redirects only its app user (nobody is 65534 in /etc/passwd)',
  );
});

const sd = (name: string, protocol: string): ConfigEntry => ({
  Kind: 'service-defaults',
  Name: name,
  Protocol: protocol,
});

t.test(
  "protocols a definition leaves out: the destination sidecars' registration, then Consul's config entries",
  async (t) => {
    const { agent, watchers, snapshots, registrations, configEntries } = await transparentAgent(t, {
      upstreams: [
        { destination_name: 'api' },
        { destination_name: 'billing' },
        { destination_name: 'echo', local_bind_port: 9300 },
        { destination_name: 'pay', config: { protocol: 'tcp' } },
        { destination_name: 'audit', config: { load_balancer: 'round_robin' } },
      ],
      config: { derive_upstreams: false },
      manager: quietManager([]),
      pid: 64_000,
      configEntries: {
        'service-defaults': [
          sd('billing', 'grpc'),
          sd('pay', 'http'),
          sd('web', 'http'),
          sd('api', 'grpc'),
          sd('audit', 'http'),
        ],
      },
    });
    await agent.start();
    await waitFor('the watches', () => watchers.size === 5);
    // api's sidecars say http themselves; the others were registered without a protocol
    watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
    for (const name of ['billing', 'echo', 'pay', 'audit'])
      watchers.get(name)!([entry(`${name}-1`, '10.0.0.20', 7000)]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    const first = snapshots.at(-1)!;
    t.equal(first.inbound.protocol, 'http', "web's own protocol from its service-defaults");
    t.same(
      first.upstreams.map((u) => [u.destinationName, u.protocol, u.loadBalancer]),
      [
        ['api', 'http', 'peak_ewma'],
        ['billing', 'grpc', 'peak_ewma'],
        ['echo', 'tcp', 'round_robin'],
        ['pay', 'tcp', 'round_robin'],
        ['audit', 'http', 'round_robin'],
      ],
      "the sidecars' registration beats service-defaults (api); a given protocol beats both " +
        '(pay); the balancer follows the protocol unless given (audit)',
    );
    t.same(
      first.transparent?.http.map((l) => l.upstream),
      ['api', 'audit'],
      'HTTP upstreams get Host-routing listeners',
    );
    const reg = registrations.at(-1) as {
      connect: { sidecar_service: { proxy: { config?: unknown } } };
    };
    t.equal(reg.connect.sidecar_service.proxy.config, undefined, 'registered without a protocol');

    const seen = snapshots.length;
    configEntries.set('proxy-defaults', [
      { Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'http2' } },
    ]);
    await waitFor('a new snapshot', () => snapshots.length > seen);
    t.equal(
      snapshots.at(-1)!.upstreams.find((u) => u.destinationName === 'echo')?.protocol,
      'http2',
      'echo, with no entry of its own, follows proxy-defaults',
    );
    configEntries.set('service-defaults', [sd('billing', 'grpc')]);
    await waitFor(
      'web to follow proxy-defaults',
      () => snapshots.at(-1)!.inbound.protocol === 'http2',
    );
    t.same(
      snapshots.at(-1)!.upstreams.map((u) => [u.destinationName, u.protocol]),
      [
        ['api', 'http'],
        ['billing', 'grpc'],
        ['echo', 'http2'],
        ['pay', 'tcp'],
        ['audit', 'http2'],
      ],
    );
    t.equal(agent.status().instances[0]!.protocol, 'http2', '`remora status` shows it');
  },
);

t.test('no snapshot is built on a guessed protocol before Consul answers', async (t) => {
  const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
    upstreams: [{ destination_name: 'api' }],
    config: { derive_upstreams: false },
    manager: quietManager([]),
    pid: 70_000,
    configHeld: true,
    configEntries: { 'service-defaults': [sd('api', 'http')] },
  });
  await agent.start();
  await waitFor('the watch', () => watchers.has('api'));
  watchers.get('api')!([entry('api-1', '10.0.0.12', 8080)]);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(snapshots.length, 0, 'no snapshot while the config entries are unknown');
  t.match(agent.status().waitingFor, [
    'Consul: config entries (service-defaults, proxy-defaults, service-resolver, service-splitter, service-router)',
  ]);
  configEntries.release();
  await waitFor('a snapshot', () => snapshots.length > 0);
  t.equal(snapshots[0]!.upstreams[0]!.protocol, 'http', 'the first snapshot already has it');
});

t.test(
  'a protocol change moves the rules to the new listener only once the proxy listens there',
  async (t) => {
    const plans: TransparentPlan[] = [];
    let hold: Promise<void> | null = null;
    let release = (): void => undefined;
    const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
      upstreams: [{ destination_name: 'api' }],
      config: { derive_upstreams: false },
      manager: quietManager(plans),
      pid: 71_000,
      configEntries: { 'service-defaults': [sd('api', 'tcp')] },
      beforeAck: async () => {
        if (hold) await hold;
      },
    });
    await agent.start();
    await waitFor('the watch', () => watchers.has('api'));
    watchers.get('api')!([entry('api-1', '10.0.0.12', 8080)]);
    const toPort = (): number | undefined =>
      plans.at(-1)?.targets.find((x) => x.service === 'api')?.toPort;
    await waitFor('the rule to the tcp listener', () => toPort() !== undefined);
    const tcpPort = toPort();
    t.equal(tcpPort, snapshots.at(-1)!.upstreams[0]!.localBindPort, 'tcp: the upstream listener');

    hold = new Promise<void>((resolve) => (release = resolve));
    configEntries.set('service-defaults', [sd('api', 'http')]);
    await waitFor(
      'the http snapshot sent',
      () => snapshots.at(-1)!.upstreams[0]!.protocol === 'http',
    );
    await new Promise((r) => setTimeout(r, 100));
    t.ok(
      plans.every((p) => p.targets.every((x) => x.toPort === tcpPort)),
      'no rule points at the Host-routing listener before the proxy has it',
    );
    release();
    const httpPort = snapshots.at(-1)!.transparent!.http[0]!.bindPort;
    await waitFor('the rule to the Host-routing listener', () => toPort() === httpPort);
  },
);

t.test("upstream settings from the caller's service-defaults reach the snapshot", async (t) => {
  const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
    upstreams: [
      { destination_name: 'api', config: { protocol: 'http', limits: { max_connections: 3 } } },
      { destination_name: 'db', config: { protocol: 'tcp' } },
    ],
    config: { derive_upstreams: false, protocol: 'http' },
    manager: quietManager([]),
    pid: 72_000,
    configEntries: {
      'service-defaults': [
        {
          Kind: 'service-defaults',
          Name: 'web',
          UpstreamConfig: {
            Defaults: { ConnectTimeoutMs: 1500, Limits: { MaxConnections: 40 } },
            Overrides: [{ Name: 'api', Limits: { MaxPendingRequests: 8 }, ConnectTimeoutMs: 900 }],
          },
        },
      ],
    },
  });
  await agent.start();
  await waitFor('the watches', () => watchers.size === 2);
  watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
  watchers.get('db')!([entry('db-1', '10.0.0.30', 5432, 'tcp')]);
  await waitFor('a snapshot', () => snapshots.length > 0);
  const r = (name: string) =>
    snapshots.at(-1)!.upstreams.find((u) => u.destinationName === name)!.resilience;
  t.same(
    [r('api').connectTimeoutMs, r('api').circuitBreaker],
    [900, { maxConnections: 3, maxPendingRequests: 8, maxRequests: 1024 }],
    "api: the Override over Defaults, the definition's own limit over both",
  );
  t.same(
    [r('db').connectTimeoutMs, r('db').circuitBreaker.maxConnections],
    [1500, 40],
    'db: Defaults',
  );

  const seen = snapshots.length;
  configEntries.set('service-defaults', []);
  await waitFor('a new snapshot', () => snapshots.length > seen);
  t.equal(r('db').connectTimeoutMs, 5000, "the entry deleted: Remora's default");
});

t.test(
  "a destination's service-resolver sets its callers' timeouts and balancing, over their own",
  async (t) => {
    const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
      upstreams: [
        {
          destination_name: 'api',
          config: { protocol: 'http', connect_timeout_ms: 700, load_balancer: 'peak_ewma' },
        },
        { destination_name: 'db', config: { protocol: 'tcp' } },
      ],
      config: { derive_upstreams: false, protocol: 'http' },
      manager: quietManager([]),
      pid: 72_100,
      configEntries: {
        'service-resolver': [
          {
            Kind: 'service-resolver',
            Name: 'api',
            ConnectTimeout: '2s',
            RequestTimeout: '45s',
            LoadBalancer: { Policy: 'least_request' },
          },
        ],
      },
    });
    await agent.start();
    await waitFor('the watches', () => watchers.size === 2);
    watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
    watchers.get('db')!([entry('db-1', '10.0.0.30', 5432, 'tcp')]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    const u = (name: string) =>
      snapshots.at(-1)!.upstreams.find((x) => x.destinationName === name)!;
    t.same(
      [
        u('api').resilience.connectTimeoutMs,
        u('api').resilience.requestTimeoutMs,
        u('api').loadBalancer,
      ],
      [2000, 45_000, 'least_request'],
      "the resolver wins over the caller's definition",
    );
    t.same(
      [u('db').resilience.connectTimeoutMs, u('db').loadBalancer],
      [5000, 'round_robin'],
      'db has no resolver',
    );

    const seen = snapshots.length;
    configEntries.set('service-resolver', []);
    await waitFor('a new snapshot', () => snapshots.length > seen);
    t.same(
      [
        u('api').resilience.connectTimeoutMs,
        u('api').resilience.requestTimeoutMs,
        u('api').loadBalancer,
      ],
      [700, 15_000, 'peak_ewma'],
      "the resolver deleted: the caller's own settings again",
    );
  },
);

t.test(
  "a destination's service-splitter reaches its callers' snapshots, nested splitters flattened",
  async (t) => {
    const logLines: string[] = [];
    const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
      logLines,
      upstreams: [
        { destination_name: 'api', config: { protocol: 'http' } },
        { destination_name: 'db', config: { protocol: 'tcp' } },
      ],
      config: { derive_upstreams: false, protocol: 'http' },
      manager: quietManager([]),
      pid: 72_200,
      configEntries: {
        'service-splitter': [
          {
            Kind: 'service-splitter',
            Name: 'api',
            Splits: [{ Weight: 80 }, { Weight: 20, Service: 'api-next' }],
          },
          // api-next splits again: half of its share goes to api-v3
          {
            Kind: 'service-splitter',
            Name: 'api-next',
            Splits: [{ Weight: 50 }, { Weight: 50, Service: 'api-v3' }],
          },
          { Kind: 'service-splitter', Name: 'db', Splits: [{ Weight: 100, Service: 'db-2' }] },
        ],
        'service-resolver': [{ Kind: 'service-resolver', Name: 'api-v3', ConnectTimeout: '3s' }],
      },
    });
    await agent.start();
    await waitFor('the watches', () => watchers.has('api') && watchers.has('db'));
    watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
    watchers.get('db')!([entry('db-1', '10.0.0.30', 5432, 'tcp')]);
    await new Promise((r) => setTimeout(r, 100));
    t.equal(snapshots.length, 0, 'no snapshot before the split targets are known');
    await waitFor(
      'the split targets watched',
      () => watchers.has('api-next') && watchers.has('api-v3'),
    );
    t.notOk(watchers.has('db-2'), 'a tcp upstream is not split, so db-2 is not watched');
    watchers.get('api-next')!([entry('api-next-1', '10.0.0.13', 8080, 'http')]);
    watchers.get('api-v3')!([entry('api-v3-1', '10.0.0.14', 8080, 'http')]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    const u = (name: string) =>
      snapshots.at(-1)!.upstreams.find((x) => x.destinationName === name)!;
    t.same(u('api').splits, [
      { service: 'api', weight: 80 },
      { service: 'api-next', weight: 10 },
      { service: 'api-v3', weight: 10 },
    ]);
    t.same(
      u('api').targets!.map((x) => [
        x.destinationName,
        x.destinationSpiffeId.endsWith(`/svc/${x.destinationName}`),
        x.endpoints.map((e) => e.id),
        x.resilience.connectTimeoutMs,
      ]),
      [
        ['api-next', true, ['api-next-1'], 5000],
        ['api-v3', true, ['api-v3-1'], 3000],
      ],
      "each target with its identity, its endpoints and its own resolver's settings",
    );
    t.equal(u('db').splits, undefined, 'the tcp upstream is not split');
    const warned = logLines.filter((l) => l.includes('service-splitter of db does not apply'));
    t.equal(warned.length, 1, 'which is reported once, however many snapshots are built');
    t.match(warned[0], /REMORA_E_AGENT_CENTRAL_CONFIG_INVALID/);
    t.match(
      warned[0],
      /web-1's calls: its upstream db is tcp.*set the protocol in db's service-defaults/,
    );
    t.same(
      snapshots.at(-1)!.upstreams.map((x) => x.destinationName),
      ['api', 'db'],
      'targets get no listener of their own',
    );

    const seen = snapshots.length;
    configEntries.set('service-splitter', []);
    await waitFor('a new snapshot', () => snapshots.length > seen);
    t.equal(u('api').splits, undefined, 'the splitter deleted: every call goes to api');
    await waitFor(
      'the targets no longer watched',
      () => !watchers.has('api-next') && !watchers.has('api-v3'),
    );
  },
);

t.test(
  "a resolver's subsets pick the instances of the upstream, its splits and its routes",
  async (t) => {
    const versioned = (id: string, address: string, version: string): ConnectEntry => {
      const e = entry(id, address, 8080, 'http');
      return { ...e, Service: { ...e.Service, Meta: { version }, Tags: [`ver-${version}`] } };
    };
    const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
      upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
      config: { derive_upstreams: false, protocol: 'http' },
      manager: quietManager([]),
      pid: 72_250,
      configEntries: {
        'service-resolver': [
          {
            Kind: 'service-resolver',
            Name: 'api',
            DefaultSubset: 'v1',
            Subsets: {
              v1: { Filter: 'Service.Meta.version == v1' },
              v2: { Filter: '"ver-v2" in Service.Tags' },
            },
          },
        ],
        'service-splitter': [
          {
            Kind: 'service-splitter',
            Name: 'api',
            Splits: [
              { Weight: 90, ServiceSubset: 'v1' },
              { Weight: 10, ServiceSubset: 'v2', RequestHeaders: { Set: { 'x-version': 'v2' } } },
            ],
          },
        ],
        'service-router': [
          {
            Kind: 'service-router',
            Name: 'api',
            Routes: [
              { Match: { HTTP: { PathPrefix: '/beta/' } }, Destination: { ServiceSubset: 'v2' } },
            ],
          },
        ],
      },
    });
    await agent.start();
    await waitFor('the watch', () => watchers.has('api'));
    watchers.get('api')!([
      versioned('api-1', '10.0.0.11', 'v1'),
      versioned('api-2', '10.0.0.12', 'v2'),
      versioned('api-3', '10.0.0.13', 'v1'),
    ]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    const api = () => snapshots.at(-1)!.upstreams.find((x) => x.destinationName === 'api')!;
    const ids = (eps: { id: string }[]) => eps.map((e) => e.id);
    t.same(ids(api().endpoints), ['api-1', 'api-3'], 'api itself is its default subset, v1');
    t.same(
      api().splits,
      [
        { service: 'api', weight: 90 },
        { service: 'api/v2', weight: 10, requestHeaders: { set: { 'x-version': 'v2' } } },
      ],
      "the canary's share with its split's header changes",
    );
    t.same(
      api().routes?.map((r) => r.splits),
      [[{ service: 'api/v2', weight: 100 }]],
      'the route goes to the subset past the splitter',
    );
    t.same(
      api().targets!.map((x) => [x.destinationName, x.destinationSpiffeId, ids(x.endpoints)]),
      [['api/v2', api().destinationSpiffeId, ['api-2']]],
      "the subset is a target with api's identity and its own instances",
    );

    // api-2 becomes v1: the subset empties, the default subset takes it
    let seen = snapshots.length;
    watchers.get('api')!([
      versioned('api-1', '10.0.0.11', 'v1'),
      {
        ...versioned('api-2', '10.0.0.12', 'v1'),
        Service: { ...versioned('api-2', '10.0.0.12', 'v1').Service, Tags: [] },
      },
      versioned('api-3', '10.0.0.13', 'v1'),
    ]);
    await waitFor('a new snapshot', () => snapshots.length > seen);
    t.same(ids(api().endpoints), ['api-1', 'api-2', 'api-3']);
    t.same(ids(api().targets![0]!.endpoints), [], 'no v2 instance left');

    // the resolver deleted: the subsets it defined are gone, every call goes to every instance
    seen = snapshots.length;
    configEntries.set('service-resolver', []);
    await waitFor('a new snapshot', () => snapshots.length > seen);
    t.same(
      api().splits,
      [
        { service: 'api', weight: 90 },
        { service: 'api', weight: 10, requestHeaders: { set: { 'x-version': 'v2' } } },
      ],
      "both shares go to api; the canary's share keeps its header changes",
    );
    t.same(
      api().routes?.map((r) => r.splits),
      [[{ service: 'api', weight: 100 }]],
    );
    t.same(api().targets, [], 'no target other than api');
  },
);

t.test(
  "a destination's service-router reaches its callers' snapshots, each route through its service's splitter",
  async (t) => {
    const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
      upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
      config: { derive_upstreams: false, protocol: 'http' },
      manager: quietManager([]),
      pid: 72_300,
      configEntries: {
        'service-router': [
          {
            Kind: 'service-router',
            Name: 'api',
            Routes: [
              {
                Match: { HTTP: { PathPrefix: '/admin/' } },
                Destination: { Service: 'admin', PrefixRewrite: '/' },
              },
              { Match: { HTTP: { Methods: ['POST'] } }, Destination: { Service: 'writer' } },
            ],
          },
        ],
        'service-splitter': [
          {
            Kind: 'service-splitter',
            Name: 'writer',
            Splits: [{ Weight: 50 }, { Weight: 50, Service: 'writer-v2' }],
          },
        ],
      },
    });
    await agent.start();
    await waitFor('the watches', () =>
      ['api', 'admin', 'writer', 'writer-v2'].every((n) => watchers.has(n)),
    );
    for (const n of ['api', 'admin', 'writer', 'writer-v2'])
      watchers.get(n)!([entry(`${n}-1`, '10.0.0.12', 8080, 'http')]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    const api = () => snapshots.at(-1)!.upstreams.find((x) => x.destinationName === 'api')!;
    t.same(api().routes, [
      {
        match: { pathPrefix: '/admin/' },
        splits: [{ service: 'admin', weight: 100 }],
        prefixRewrite: '/',
      },
      {
        match: { methods: ['POST'] },
        splits: [
          { service: 'writer', weight: 50 },
          { service: 'writer-v2', weight: 50 },
        ],
      },
    ]);
    t.equal(api().splits, undefined, 'api has no splitter: unmatched calls stay with api');
    t.same(
      api().targets!.map((x) => x.destinationName),
      ['admin', 'writer', 'writer-v2'],
    );

    const seen = snapshots.length;
    configEntries.set('service-router', []);
    await waitFor('a new snapshot', () => snapshots.length > seen);
    t.same([api().routes, api().targets], [undefined, undefined], 'the router deleted');
    await waitFor(
      'the targets no longer watched',
      () => !watchers.has('admin') && !watchers.has('writer'),
    );
  },
);

t.test(
  "a resolver's Redirect sends the upstream's calls to another service, and its Failover names where they go next",
  async (t) => {
    const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
      upstreams: [{ destination_name: 'db' }],
      config: { derive_upstreams: false },
      manager: quietManager([]),
      pid: 72_350,
      configEntries: {
        'service-resolver': [
          { Kind: 'service-resolver', Name: 'db', Redirect: { Service: 'db-next' } },
          {
            Kind: 'service-resolver',
            Name: 'db-next',
            ConnectTimeout: '3s',
            Failover: { '*': { Targets: [{ Service: 'db-dr' }, { Service: 'db' }] } },
          },
        ],
      },
    });
    await agent.start();
    await waitFor('the watches', () => ['db', 'db-next', 'db-dr'].every((n) => watchers.has(n)));
    for (const n of ['db', 'db-next', 'db-dr'])
      watchers.get(n)!([entry(`${n}-1`, '10.0.0.13', 5432, 'tcp')]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    const db = () => snapshots.at(-1)!.upstreams.find((x) => x.destinationName === 'db')!;
    t.equal(db().protocol, 'tcp');
    t.match(db().destinationSpiffeId, /\/svc\/db-next$/, "the upstream checks db-next's identity");
    t.same(
      db().endpoints.map((e) => e.id),
      ['db-next-1'],
      "and reaches db-next's instances",
    );
    t.equal(db().resilience.connectTimeoutMs, 3000, "under db-next's resolver");
    t.same(db().failover, ['db-dr'], "db-next's failover, without the redirect back to db-next");
    t.same(
      db().targets!.map((x) => [x.destinationName, x.endpoints.map((e) => e.id), x.failover]),
      [['db-dr', ['db-dr-1'], undefined]],
      'the failover target, which does not fail over further',
    );

    // the redirect deleted: db is db again, and db-next's failover no longer applies
    const seen = snapshots.length;
    configEntries.set('service-resolver', [
      {
        Kind: 'service-resolver',
        Name: 'db-next',
        Failover: { '*': { Service: 'db-dr' } },
      },
    ]);
    await waitFor('a new snapshot', () => snapshots.length > seen);
    t.match(db().destinationSpiffeId, /\/svc\/db$/);
    t.same(
      [db().endpoints.map((e) => e.id), db().failover, db().targets],
      [['db-1'], undefined, undefined],
    );
    await waitFor(
      'the others no longer watched',
      () => !watchers.has('db-next') && !watchers.has('db-dr'),
    );
  },
);

t.test(
  "service-defaults' permissive MutualTLSMode reaches the proxy only while the mesh allows it",
  async (t) => {
    const plans: TransparentPlan[] = [];
    const mesh = (allow: boolean) => [
      { Kind: 'mesh', Name: 'mesh', AllowEnablingPermissiveMutualTLS: allow },
    ];
    const { agent, watchers, snapshots, configEntries } = await transparentAgent(t, {
      upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
      manager: quietManager(plans),
      pid: 64_700,
      config: { derive_upstreams: false },
      configEntries: {
        mesh: mesh(true),
        'service-defaults': [
          { Kind: 'service-defaults', Name: 'web', MutualTLSMode: 'permissive' },
        ],
      },
    });
    await agent.start();
    await waitFor('the upstream watched', () => watchers.has('api'));
    watchers.get('api')!([entry('api-1', '10.0.0.12', 8080, 'http')]);
    await waitFor('a snapshot', () => snapshots.length > 0);
    t.equal(snapshots.at(-1)!.inbound.mutualTlsMode, 'permissive', 'the proxy takes plain callers');
    const web = () => agent.status().instances[0]!;
    t.same(web().mutualTls, { mode: 'permissive', source: 'service-defaults' });
    t.same(web().warnings, []);

    // the flag turned off while web is permissive: said, and strict applies at once
    const before = snapshots.length;
    configEntries.set('mesh', mesh(false));
    await waitFor('a new snapshot', () => snapshots.length > before);
    t.notOk('mutualTlsMode' in snapshots.at(-1)!.inbound, 'strict (the default) is left out');
    t.same(web().mutualTls, { mode: 'strict', source: 'service-defaults' });
    t.same(
      web().warnings.map((w) => w.code),
      ['REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_ALLOWED'],
    );
    t.match(web().warnings[0]!.message, /set AllowEnablingPermissiveMutualTLS = true in the mesh/);

    const again = snapshots.length;
    configEntries.set('mesh', mesh(true));
    await waitFor('permissive again', () => snapshots.length > again);
    t.equal(snapshots.at(-1)!.inbound.mutualTlsMode, 'permissive');
    t.same(web().warnings, [], 'and the warning goes');
  },
);
