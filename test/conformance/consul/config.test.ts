/**
 * Conformance: configuration entries (`/v1/config`), the kinds the agent reads for a service's
 * protocol. Each case cites the Consul documentation page it derives from.
 */
import t, { type Test } from 'tap';
import { AGAINST_REAL_CONSUL, doc, openTarget } from './harness.ts';

const CONFIG_DOC = doc('api-docs/config.mdx');
const SERVICE_DEFAULTS_DOC = doc('docs/connect/config-entries/service-defaults.mdx');
const SERVICE_RESOLVER_DOC = doc('docs/reference/config-entry/service-resolver.mdx');
const SERVICE_SPLITTER_DOC = doc('docs/reference/config-entry/service-splitter.mdx');
const SERVICE_ROUTER_DOC = doc('docs/reference/config-entry/service-router.mdx');
const INGRESS_GATEWAY_DOC = doc('docs/connect/config-entries/ingress-gateway.mdx');

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- raw API bodies are probed field by field
type Json = Record<string, any>;

const target = await openTarget();
t.teardown(() => target.close());
const p = target.prefix;
const api = target.call;

/** `kind`/`name` was never stored: each refused write left nothing behind. */
async function nothingStored(t: Test, kind: string, name: string): Promise<void> {
  t.equal((await api('GET', `/v1/config/${kind}/${name}`)).status, 404, 'nothing stored');
}

/** Each body, written as `kind`/`name`, is refused with 400 (named by its `what`). */
async function refusesEach(
  t: Test,
  kind: string,
  name: string,
  cases: ReadonlyArray<readonly [string, Json]>,
): Promise<void> {
  for (const [what, body] of cases) {
    const r = await api('PUT', '/v1/config', { Kind: kind, Name: name, ...body });
    t.equal(r.status, 400, what);
  }
  await nothingStored(t, kind, name);
}

t.test(
  `PUT /v1/config answers true; GET returns the entry with indexes ${CONFIG_DOC}`,
  async (t) => {
    const name = `${p}-web`;
    t.teardown(() => api('DELETE', `/v1/config/service-defaults/${name}`));
    const put = await api('PUT', '/v1/config', {
      Kind: 'service-defaults',
      Name: name,
      Protocol: 'http',
    });
    t.equal(put.status, 200, put.text);
    t.equal(put.text.trim(), 'true');
    const r = await api('GET', `/v1/config/service-defaults/${name}`);
    t.equal(r.status, 200);
    const e = r.json<Json>();
    t.match(e, { Kind: 'service-defaults', Name: name, Protocol: 'http' });
    t.ok(e.CreateIndex > 0 && e.ModifyIndex >= e.CreateIndex, 'CreateIndex and ModifyIndex set');
    t.ok(Number(r.headers.get('x-consul-index')) > 0, 'X-Consul-Index set');
  },
);

t.test(`the protocol is stored lowercased ${SERVICE_DEFAULTS_DOC}`, async (t) => {
  const name = `${p}-upper`;
  t.teardown(() => api('DELETE', `/v1/config/service-defaults/${name}`));
  await api('PUT', '/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'HTTP' });
  t.equal((await api('GET', `/v1/config/service-defaults/${name}`)).json<Json>().Protocol, 'http');
});

t.test(`GET /v1/config/:kind lists the kind's entries by name ${CONFIG_DOC}`, async (t) => {
  const names = [`${p}-list-b`, `${p}-list-a`];
  t.teardown(async () => {
    for (const n of names) await api('DELETE', `/v1/config/service-defaults/${n}`);
  });
  for (const n of names)
    await api('PUT', '/v1/config', { Kind: 'service-defaults', Name: n, Protocol: 'grpc' });
  const list = (await api('GET', '/v1/config/service-defaults')).json<Json[]>();
  t.same(
    list.map((e) => e.Name).filter((n: string) => n.startsWith(`${p}-list-`)),
    [`${p}-list-a`, `${p}-list-b`],
  );
});

t.test(
  `cas: 0 creates only, a matching index updates, a stale one fails ${CONFIG_DOC}`,
  async (t) => {
    const name = `${p}-cas`;
    t.teardown(() => api('DELETE', `/v1/config/service-defaults/${name}`));
    const body = (protocol: string) => ({
      Kind: 'service-defaults',
      Name: name,
      Protocol: protocol,
    });
    t.equal((await api('PUT', '/v1/config?cas=0', body('tcp'))).text.trim(), 'true');
    t.equal((await api('PUT', '/v1/config?cas=0', body('http'))).text.trim(), 'false');
    const idx = (await api('GET', `/v1/config/service-defaults/${name}`)).json<Json>().ModifyIndex;
    t.equal((await api('PUT', `/v1/config?cas=${idx}`, body('http'))).text.trim(), 'true');
    t.equal((await api('PUT', `/v1/config?cas=${idx}`, body('grpc'))).text.trim(), 'false');
    t.equal(
      (await api('GET', `/v1/config/service-defaults/${name}`)).json<Json>().Protocol,
      'http',
    );
  },
);

t.test(`DELETE removes the entry; GET then answers 404 ${CONFIG_DOC}`, async (t) => {
  const name = `${p}-gone`;
  await api('PUT', '/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
  t.equal((await api('DELETE', `/v1/config/service-defaults/${name}`)).status, 200);
  t.equal((await api('GET', `/v1/config/service-defaults/${name}`)).status, 404);
});

t.test(`proxy-defaults has one entry, named global ${CONFIG_DOC}`, async (t) => {
  const bad = await api('PUT', '/v1/config', {
    Kind: 'proxy-defaults',
    Name: `${p}-other`,
    Config: { protocol: 'http' },
  });
  t.equal(bad.status, 400, 'a name other than global is refused');
  if (AGAINST_REAL_CONSUL) return; // never touch a real cluster's global defaults
  t.teardown(() => api('DELETE', '/v1/config/proxy-defaults/global'));
  const put = await api('PUT', '/v1/config', {
    Kind: 'proxy-defaults',
    Name: 'global',
    Config: { protocol: 'http' },
  });
  t.equal(put.text.trim(), 'true');
  const e = (await api('GET', '/v1/config/proxy-defaults/global')).json<Json>();
  t.match(e, { Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'http' } });
});

t.test(`a blocking list returns when an entry of its kind changes ${CONFIG_DOC}`, async (t) => {
  const name = `${p}-block`;
  t.teardown(() => api('DELETE', `/v1/config/service-defaults/${name}`));
  const first = await api('GET', '/v1/config/service-defaults');
  const idx = Number(first.headers.get('x-consul-index'));
  const started = Date.now();
  const waiting = api('GET', `/v1/config/service-defaults?index=${idx}&wait=10s`);
  setTimeout(() => {
    void api('PUT', '/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http2' });
  }, 200);
  const woke = await waiting;
  t.ok(Date.now() - started < 9_000, 'returned before the wait elapsed');
  t.ok(Number(woke.headers.get('x-consul-index')) > idx, 'with a higher index');
  t.ok(
    woke.json<Json[]>().some((e) => e.Name === name && e.Protocol === 'http2'),
    'listing the new entry',
  );
});

t.test(`a missing kind in the body is refused ${CONFIG_DOC}`, async (t) => {
  const r = await api('PUT', '/v1/config', { Name: `${p}-nokind`, Protocol: 'http' });
  t.equal(r.status, 400);
});

t.test(
  `a service-resolver keeps its timeouts and balancing policy ${SERVICE_RESOLVER_DOC}`,
  async (t) => {
    const name = `${p}-resolved`;
    t.teardown(() => api('DELETE', `/v1/config/service-resolver/${name}`));
    const put = await api('PUT', '/v1/config', {
      Kind: 'service-resolver',
      Name: name,
      ConnectTimeout: '15s',
      RequestTimeout: '45s',
      LoadBalancer: { Policy: 'least_request' },
    });
    t.equal(put.status, 200, put.text);
    const e = (await api('GET', `/v1/config/service-resolver/${name}`)).json<Json>();
    t.match(e, {
      Kind: 'service-resolver',
      Name: name,
      ConnectTimeout: '15s',
      RequestTimeout: '45s',
      LoadBalancer: { Policy: 'least_request' },
    });
  },
);

t.test(
  `a service-resolver with an unknown policy or a bad duration is refused ${SERVICE_RESOLVER_DOC}`,
  async (t) => {
    const name = `${p}-badresolver`;
    t.teardown(() => api('DELETE', `/v1/config/service-resolver/${name}`));
    const policy = await api('PUT', '/v1/config', {
      Kind: 'service-resolver',
      Name: name,
      LoadBalancer: { Policy: 'fastest' },
    });
    t.equal(policy.status, 400, 'unknown policy');
    const duration = await api('PUT', '/v1/config', {
      Kind: 'service-resolver',
      Name: name,
      ConnectTimeout: 'soon',
    });
    t.equal(duration.status, 400, 'not a duration');
    await nothingStored(t, 'service-resolver', name);
  },
);

t.test(
  `a service-resolver keeps its subsets and default subset ${SERVICE_RESOLVER_DOC}`,
  async (t) => {
    const name = `${p}-subsets`;
    t.teardown(() => api('DELETE', `/v1/config/service-resolver/${name}`));
    const subsets = {
      v1: { Filter: 'Service.Meta.version == v1' },
      v2: { Filter: 'Service.Meta.version == v2', OnlyPassing: true },
    };
    const put = await api('PUT', '/v1/config', {
      Kind: 'service-resolver',
      Name: name,
      DefaultSubset: 'v1',
      Subsets: subsets,
    });
    t.equal(put.status, 200, put.text);
    const e = (await api('GET', `/v1/config/service-resolver/${name}`)).json<Json>();
    t.match(e, { DefaultSubset: 'v1', Subsets: subsets });
  },
);

t.test(
  `a service-resolver with a bad subset name, filter or default subset is refused ${SERVICE_RESOLVER_DOC}`,
  async (t) => {
    const name = `${p}-badsubsets`;
    t.teardown(() => api('DELETE', `/v1/config/service-resolver/${name}`));
    const bad = [
      ['a name that is not a DNS label', { Subsets: { V_1: { Filter: '' } } }],
      ['a filter that does not parse', { Subsets: { v1: { Filter: 'Service.Meta.version ==' } } }],
      ['a default subset not defined', { DefaultSubset: 'v9', Subsets: { v1: { Filter: '' } } }],
    ] as const;
    await refusesEach(t, 'service-resolver', name, bad);
  },
);

t.test(
  `a service-resolver keeps a Redirect or a Failover, not both ${SERVICE_RESOLVER_DOC}`,
  async (t) => {
    const name = `${p}-chain`;
    t.teardown(() => api('DELETE', `/v1/config/service-resolver/${name}`));
    const kept = [
      { Redirect: { Service: `${p}-other` } },
      { Failover: { '*': { Service: `${p}-dr` } } },
      { Failover: { '*': { Targets: [{ Service: `${p}-dr` }, { Service: `${p}-dr2` }] } } },
    ];
    for (const body of kept) {
      const r = await api('PUT', '/v1/config', { Kind: 'service-resolver', Name: name, ...body });
      t.equal(r.status, 200, r.text);
      t.match((await api('GET', `/v1/config/service-resolver/${name}`)).json<Json>(), body);
    }
    await api('DELETE', `/v1/config/service-resolver/${name}`);
    const refused = [
      ['both', { Redirect: { Service: 'b' }, Failover: { '*': { Service: 'c' } } }],
      ['an empty redirect', { Redirect: {} }],
      ['an empty failover', { Failover: { '*': {} } }],
      ['a failover key naming no subset', { Failover: { v9: { Service: 'c' } } }],
    ] as const;
    await refusesEach(t, 'service-resolver', name, refused);
  },
);

t.test(
  `a service-splitter for an http service keeps its splits ${SERVICE_SPLITTER_DOC}`,
  async (t) => {
    const name = `${p}-split`;
    t.teardown(async () => {
      await api('DELETE', `/v1/config/service-splitter/${name}`);
      await api('DELETE', `/v1/config/service-defaults/${name}`);
    });
    const defaults = await api('PUT', '/v1/config', {
      Kind: 'service-defaults',
      Name: name,
      Protocol: 'http',
    });
    t.equal(defaults.status, 200, defaults.text);
    const splits = [{ Weight: 90 }, { Weight: 10, Service: `${name}-v2` }];
    const put = await api('PUT', '/v1/config', {
      Kind: 'service-splitter',
      Name: name,
      Splits: splits,
    });
    t.equal(put.status, 200, put.text);
    const e = (await api('GET', `/v1/config/service-splitter/${name}`)).json<Json>();
    t.match(e, { Kind: 'service-splitter', Name: name, Splits: splits });
  },
);

t.test(
  `a service-splitter whose weights do not add up to 100, or for a tcp service, is refused ${SERVICE_SPLITTER_DOC}`,
  async (t) => {
    const name = `${p}-badsplit`;
    t.teardown(async () => {
      await api('DELETE', `/v1/config/service-splitter/${name}`);
      await api('DELETE', `/v1/config/service-defaults/${name}`);
    });
    const tcp = await api('PUT', '/v1/config', {
      Kind: 'service-splitter',
      Name: name,
      Splits: [{ Weight: 100 }],
    });
    t.equal(tcp.status, 400, 'a service without an HTTP-based protocol');
    await api('PUT', '/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
    const sum = await api('PUT', '/v1/config', {
      Kind: 'service-splitter',
      Name: name,
      Splits: [{ Weight: 60 }, { Weight: 30, Service: `${name}-v2` }],
    });
    t.equal(sum.status, 400, 'weights adding up to 90');
    await nothingStored(t, 'service-splitter', name);
  },
);

t.test(`a service-router for an http service keeps its routes ${SERVICE_ROUTER_DOC}`, async (t) => {
  const name = `${p}-routed`;
  t.teardown(async () => {
    await api('DELETE', `/v1/config/service-router/${name}`);
    await api('DELETE', `/v1/config/service-defaults/${name}`);
  });
  await api('PUT', '/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
  const routes = [
    {
      Match: { HTTP: { PathPrefix: '/admin', Header: [{ Name: 'x-debug', Exact: '1' }] } },
      Destination: { Service: `${name}-admin`, PrefixRewrite: '/' },
    },
    { Match: { HTTP: { Methods: ['GET'] } }, Destination: { Service: `${name}-read` } },
  ];
  const put = await api('PUT', '/v1/config', {
    Kind: 'service-router',
    Name: name,
    Routes: routes,
  });
  t.equal(put.status, 200, put.text);
  const e = (await api('GET', `/v1/config/service-router/${name}`)).json<Json>();
  t.match(e, { Kind: 'service-router', Name: name, Routes: routes });
});

t.test(
  `a service-router with a path not starting with "/", a PrefixRewrite without a path match, or for a tcp service is refused ${SERVICE_ROUTER_DOC}`,
  async (t) => {
    const name = `${p}-badrouter`;
    t.teardown(async () => {
      await api('DELETE', `/v1/config/service-router/${name}`);
      await api('DELETE', `/v1/config/service-defaults/${name}`);
    });
    const route = (http: Json, destination: Json = {}) => ({
      Kind: 'service-router',
      Name: name,
      Routes: [{ Match: { HTTP: http }, Destination: destination }],
    });
    const tcp = await api('PUT', '/v1/config', route({ PathPrefix: '/x' }));
    t.equal(tcp.status, 400, 'a service without an HTTP-based protocol');
    await api('PUT', '/v1/config', { Kind: 'service-defaults', Name: name, Protocol: 'http' });
    const slash = await api('PUT', '/v1/config', route({ PathPrefix: 'admin' }));
    t.equal(slash.status, 400, 'a PathPrefix without a leading "/"');
    const rewrite = await api(
      'PUT',
      '/v1/config',
      route({ Methods: ['GET'] }, { PrefixRewrite: '/' }),
    );
    t.equal(rewrite.status, 400, 'a PrefixRewrite without PathPrefix or PathExact');
    await nothingStored(t, 'service-router', name);
  },
);

t.test(
  `an ingress-gateway keeps its listeners; its http services must speak http ${INGRESS_GATEWAY_DOC}`,
  async (t) => {
    const name = `${p}-ingress`;
    const svc = `${p}-ingress-api`;
    t.teardown(async () => {
      await api('DELETE', `/v1/config/ingress-gateway/${name}`);
      await api('DELETE', `/v1/config/service-defaults/${svc}`);
    });
    const listeners = [
      { Port: 18080, Protocol: 'http', Services: [{ Name: svc, Hosts: ['api.example.com'] }] },
    ];
    const tcp = await api('PUT', '/v1/config', {
      Kind: 'ingress-gateway',
      Name: name,
      Listeners: listeners,
    });
    t.equal(tcp.status, 400, 'a service that is tcp (no service-defaults) on an http listener');
    await api('PUT', '/v1/config', { Kind: 'service-defaults', Name: svc, Protocol: 'http' });
    const put = await api('PUT', '/v1/config', {
      Kind: 'ingress-gateway',
      Name: name,
      Listeners: listeners,
    });
    t.equal(put.status, 200, put.text);
    const e = (await api('GET', `/v1/config/ingress-gateway/${name}`)).json<Json>();
    t.match(e, { Kind: 'ingress-gateway', Name: name, Listeners: listeners });
  },
);

t.test(
  `an ingress-gateway listener Consul cannot serve is refused ${INGRESS_GATEWAY_DOC}`,
  async (t) => {
    const tcp = (services: Json[]) => ({ Listeners: [{ Port: 19000, Services: services }] });
    await refusesEach(t, 'ingress-gateway', `${p}-badingress`, [
      ['two services on a tcp listener', tcp([{ Name: 'a' }, { Name: 'b' }])],
      ['a wildcard on a tcp listener', tcp([{ Name: '*' }])],
      ['hosts on a tcp listener', tcp([{ Name: 'a', Hosts: ['a.example.com'] }])],
      ['a listener without services', tcp([])],
      [
        'two listeners on one port',
        {
          Listeners: [
            { Port: 19000, Services: [{ Name: 'a' }] },
            { Port: 19000, Services: [{ Name: 'b' }] },
          ],
        },
      ],
      [
        'a wildcard in the middle of a host',
        {
          Listeners: [
            { Port: 19002, Protocol: 'http', Services: [{ Name: 'a', Hosts: ['a.*.com'] }] },
          ],
        },
      ],
    ]);
  },
);
