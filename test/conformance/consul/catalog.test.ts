/**
 * Conformance: health, catalog, KV, blocking queries and status endpoints. Each case cites the
 * Consul documentation page it derives from.
 */
import t from 'tap';
import { doc, openTarget } from './harness.ts';

const HEALTH_DOC = doc('api-docs/health.mdx');
const CATALOG_DOC = doc('api-docs/catalog.mdx');
const KV_DOC = doc('api-docs/kv.mdx');
const BLOCKING_DOC = doc('api-docs/features/blocking.mdx');

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- raw API bodies are probed field by field
type Json = Record<string, any>;

const target = await openTarget();
t.teardown(() => target.close());
const p = target.prefix;
const api = target.call;

/** Registers `name` instances with a sidecar each; `ready` instances pass their TTL checks. */
async function mesh(name: string, ids: string[], ready: string[], tags: string[][] = []) {
  for (const [i, id] of ids.entries()) {
    const r = await api('PUT', '/v1/agent/service/register', {
      name,
      id,
      port: 7000 + i,
      tags: tags[i] ?? [],
      check: { CheckID: `${id}-app`, ttl: '60s' },
      connect: {
        sidecar_service: { port: 21100 + i, checks: [{ CheckID: `${id}-proxy`, ttl: '60s' }] },
      },
    });
    if (r.status !== 200) throw new Error(r.text);
    if (ready.includes(id)) {
      await api('PUT', `/v1/agent/check/pass/${id}-app`);
      await api('PUT', `/v1/agent/check/pass/${id}-proxy`);
    }
  }
  return async () => {
    for (const id of ids) await api('PUT', `/v1/agent/service/deregister/${id}`);
  };
}

t.test(`health/service lists instances with Node, Service and Checks ${HEALTH_DOC}`, async (t) => {
  const name = `${p}-h1`;
  t.teardown(await mesh(name, [`${name}-a`], []));
  const r = await api('GET', `/v1/health/service/${name}`);
  t.equal(r.status, 200);
  const [e] = r.json<Json[]>();
  t.equal(e?.Service.ID, `${name}-a`);
  t.type(e?.Node.Node, 'string');
  t.type(e?.Node.Address, 'string');
  t.ok(
    e?.Checks.some((c: Json) => c.CheckID === 'serfHealth'),
    'node-level serfHealth check included',
  );
  t.ok(e?.Checks.some((c: Json) => c.CheckID === `${name}-a-app`));
});

t.test(`?passing keeps only instances whose checks all pass ${HEALTH_DOC}`, async (t) => {
  const name = `${p}-h2`;
  t.teardown(await mesh(name, [`${name}-a`, `${name}-b`], [`${name}-a`]));
  const all = (await api('GET', `/v1/health/service/${name}`)).json<Json[]>();
  t.equal(all.length, 2);
  const passing = (await api('GET', `/v1/health/service/${name}?passing`)).json<Json[]>();
  t.same(
    passing.map((e) => e.Service.ID),
    [`${name}-a`],
  );
  const explicit = (await api('GET', `/v1/health/service/${name}?passing=true`)).json<Json[]>();
  t.equal(explicit.length, 1);
  const bad = await api('GET', `/v1/health/service/${name}?passing=maybe`);
  t.equal(bad.status, 400);
  t.equal(bad.text, 'Invalid value for ?passing');
});

t.test(`?tag filters by service tag ${HEALTH_DOC}`, async (t) => {
  const name = `${p}-h3`;
  t.teardown(await mesh(name, [`${name}-a`, `${name}-b`], [], [['blue'], ['green']]));
  const blue = (await api('GET', `/v1/health/service/${name}?tag=blue`)).json<Json[]>();
  t.same(
    blue.map((e) => e.Service.ID),
    [`${name}-a`],
  );
});

t.test(`health/connect returns the sidecar proxies of a destination ${HEALTH_DOC}`, async (t) => {
  const name = `${p}-h4`;
  t.teardown(await mesh(name, [`${name}-a`, `${name}-b`], [`${name}-b`]));
  const all = (await api('GET', `/v1/health/connect/${name}`)).json<Json[]>();
  t.same(all.map((e) => e.Service.ID).sort(), [
    `${name}-a-sidecar-proxy`,
    `${name}-b-sidecar-proxy`,
  ]);
  t.ok(all.every((e) => e.Service.Kind === 'connect-proxy'));
  t.ok(all.every((e) => e.Service.Proxy.DestinationServiceName === name));
  const passing = (await api('GET', `/v1/health/connect/${name}?passing`)).json<Json[]>();
  t.same(
    passing.map((e) => e.Service.ID),
    [`${name}-b-sidecar-proxy`],
  );
  const none = await api('GET', `/v1/health/connect/${p}-nothing`);
  t.equal(none.status, 200);
  t.same(none.json(), []);
});

t.test(
  `health/connect of a service a terminating gateway links returns the gateway ${doc('docs/connect/gateways/terminating-gateway.mdx')}`,
  async (t) => {
    const name = `${p}-tg`;
    const gw = `${p}-tgw`;
    t.teardown(async () => {
      await api('DELETE', `/v1/config/terminating-gateway/${gw}`);
      await api('PUT', `/v1/agent/service/deregister/${name}-1`);
      await api('PUT', `/v1/agent/service/deregister/${gw}-1`);
    });
    // a service registered without a sidecar, and the gateway, as a gateway's agent registers it
    t.equal(
      (await api('PUT', '/v1/agent/service/register', { Name: name, ID: `${name}-1`, Port: 5432 }))
        .status,
      200,
    );
    const reg = await api('PUT', '/v1/agent/service/register', {
      Kind: 'terminating-gateway',
      Name: gw,
      ID: `${gw}-1`,
      Port: 8443,
    });
    t.equal(reg.status, 200);
    t.same((await api('GET', `/v1/health/connect/${name}`)).json(), [], 'not linked yet');
    const put = await api('PUT', '/v1/config', {
      Kind: 'terminating-gateway',
      Name: gw,
      Services: [{ Name: name }],
    });
    t.equal(put.status, 200);
    const linked = (await api('GET', `/v1/health/connect/${name}`)).json<Json[]>();
    t.same(
      linked.map((e) => [e.Service.ID, e.Service.Kind, e.Service.Service, e.Service.Port]),
      [[`${gw}-1`, 'terminating-gateway', gw, 8443]],
    );
    t.same(
      (await api('GET', `/v1/health/service/${name}`)).json<Json[]>().map((e) => e.Service.ID),
      [`${name}-1`],
      'health/service still lists the service itself',
    );
  },
);

t.test(
  `blocking endpoints send X-Consul-Index (never 0) and leader headers ${BLOCKING_DOC}`,
  async (t) => {
    const r = await api('GET', `/v1/health/service/${p}-nothing`);
    const idx = Number(r.headers.get('x-consul-index'));
    t.ok(idx > 0, `index ${idx} > 0 for a service that does not exist`);
    t.equal(r.headers.get('x-consul-knownleader'), 'true');
    t.ok(r.headers.has('x-consul-lastcontact'));
    const kv = await api('GET', `/v1/kv/${p}/missing`);
    t.ok(Number(kv.headers.get('x-consul-index')) > 0, 'KV 404 carries an index too');
  },
);

t.test(`a blocking query returns when the result changes ${BLOCKING_DOC}`, async (t) => {
  const name = `${p}-b1`;
  t.teardown(await mesh(name, [`${name}-a`], []));
  const first = await api('GET', `/v1/health/connect/${name}?passing`);
  const idx = Number(first.headers.get('x-consul-index'));
  t.same(first.json(), []);
  const blocked = api('GET', `/v1/health/connect/${name}?passing&index=${idx}&wait=30s`);
  await api('PUT', `/v1/agent/check/pass/${name}-a-app`);
  await api('PUT', `/v1/agent/check/pass/${name}-a-proxy`);
  let woke = await blocked;
  if (woke.json<Json[]>().length === 0) {
    // The first pass woke it; one more round sees the second.
    const again = Number(woke.headers.get('x-consul-index'));
    woke = await api('GET', `/v1/health/connect/${name}?passing&index=${again}&wait=30s`);
  }
  t.ok(Number(woke.headers.get('x-consul-index')) > idx, 'index moved forward');
  t.equal(woke.json<Json[]>().length, 1);
});

t.test(`a blocking query without a change returns after its wait ${BLOCKING_DOC}`, async (t) => {
  const name = `${p}-b2`;
  t.teardown(await mesh(name, [`${name}-a`], []));
  const first = await api('GET', `/v1/health/service/${name}`);
  const idx = first.headers.get('x-consul-index');
  const r = await api('GET', `/v1/health/service/${name}?index=${idx}&wait=1s`);
  t.equal(r.status, 200);
  t.equal(r.headers.get('x-consul-index'), idx, 'same index: no change is no guarantee of one');
});

t.test(`bad index and wait parameters are 400 ${BLOCKING_DOC}`, async (t) => {
  const i = await api('GET', `/v1/health/service/x?index=abc`);
  t.equal(i.status, 400);
  t.equal(i.text, 'Invalid index');
  const w = await api('GET', `/v1/health/service/x?index=1&wait=soon`);
  t.equal(w.status, 400);
  t.equal(w.text, 'Invalid wait time');
});

t.test(`catalog/services maps names to tags and includes consul ${CATALOG_DOC}`, async (t) => {
  const name = `${p}-c1`;
  t.teardown(await mesh(name, [`${name}-a`], [], [['v2']]));
  const r = await api('GET', '/v1/catalog/services');
  t.ok(Number(r.headers.get('x-consul-index')) > 0);
  const services = r.json<Json>();
  t.same(services.consul, []);
  t.same(services[name], ['v2']);
  t.ok(services[`${name}-sidecar-proxy`], 'the sidecar is a catalog service too');
});

t.test(`catalog/service returns Service* fields and honours ?tag ${CATALOG_DOC}`, async (t) => {
  const name = `${p}-c2`;
  t.teardown(await mesh(name, [`${name}-a`, `${name}-b`], [], [['x'], ['y']]));
  const all = (await api('GET', `/v1/catalog/service/${name}`)).json<Json[]>();
  t.equal(all.length, 2);
  t.match(
    all.find((s) => s.ServiceID === `${name}-a`),
    {
      ServiceName: name,
      ServicePort: 7000,
      ServiceTags: ['x'],
    },
  );
  t.type(all[0]?.Node, 'string');
  const y = (await api('GET', `/v1/catalog/service/${name}?tag=y`)).json<Json[]>();
  t.same(
    y.map((s) => s.ServiceID),
    [`${name}-b`],
  );
});

t.test(`KV put answers true; get returns base64 values and indexes ${KV_DOC}`, async (t) => {
  const key = `${p}/kv/a`;
  t.teardown(() => api('DELETE', `/v1/kv/${p}/kv?recurse`));
  const put = await api('PUT', `/v1/kv/${key}?flags=42`, 'hello');
  t.equal(put.status, 200);
  t.equal(put.text.trim(), 'true');
  const r = await api('GET', `/v1/kv/${key}`);
  const [e] = r.json<Json[]>();
  t.match(e, { Key: key, Flags: 42, Value: Buffer.from('hello').toString('base64') });
  t.ok(e?.CreateIndex > 0 && e?.ModifyIndex >= e?.CreateIndex);
  t.equal(r.headers.get('x-consul-index'), String(e?.ModifyIndex), 'index is the key ModifyIndex');
  const raw = await api('GET', `/v1/kv/${key}?raw`);
  t.equal(raw.text, 'hello', '?raw returns the bytes');
});

t.test(`KV get of a missing key is 404 with an empty body ${KV_DOC}`, async (t) => {
  const r = await api('GET', `/v1/kv/${p}/none/here`);
  t.equal(r.status, 404);
  t.equal(r.text, '');
});

t.test(
  `KV recurse lists a prefix in key order; keys with separator groups ${KV_DOC}`,
  async (t) => {
    t.teardown(() => api('DELETE', `/v1/kv/${p}/tree?recurse`));
    for (const k of ['b/2', 'a', 'b/1', 'c/d/e']) await api('PUT', `/v1/kv/${p}/tree/${k}`, k);
    const list = (await api('GET', `/v1/kv/${p}/tree/?recurse`)).json<Json[]>();
    t.same(
      list.map((e) => e.Key),
      ['a', 'b/1', 'b/2', 'c/d/e'].map((k) => `${p}/tree/${k}`),
    );
    const keys = (await api('GET', `/v1/kv/${p}/tree/?keys&separator=/`)).json<string[]>();
    t.same(keys, [`${p}/tree/a`, `${p}/tree/b/`, `${p}/tree/c/`]);
    const none = await api('GET', `/v1/kv/${p}/empty/?keys`);
    t.equal(none.status, 404);
  },
);

t.test(
  `KV cas: 0 creates only, a matching index updates, a stale one fails ${KV_DOC}`,
  async (t) => {
    const key = `${p}/cas/k`;
    t.teardown(() => api('DELETE', `/v1/kv/${key}`));
    t.equal((await api('PUT', `/v1/kv/${key}?cas=0`, 'one')).text.trim(), 'true');
    t.equal((await api('PUT', `/v1/kv/${key}?cas=0`, 'two')).text.trim(), 'false');
    const idx = (await api('GET', `/v1/kv/${key}`)).json<Json[]>()[0]?.ModifyIndex;
    t.equal((await api('PUT', `/v1/kv/${key}?cas=${idx}`, 'two')).text.trim(), 'true');
    t.equal((await api('PUT', `/v1/kv/${key}?cas=${idx}`, 'three')).text.trim(), 'false');
    t.equal((await api('DELETE', `/v1/kv/${key}?cas=${idx}`)).text.trim(), 'false', 'stale delete');
    const now = (await api('GET', `/v1/kv/${key}`)).json<Json[]>()[0]?.ModifyIndex;
    t.equal((await api('DELETE', `/v1/kv/${key}?cas=${now}`)).text.trim(), 'true');
    t.equal((await api('GET', `/v1/kv/${key}`)).status, 404);
  },
);

t.test(`KV delete with recurse removes the whole prefix ${KV_DOC}`, async (t) => {
  for (const k of ['x', 'y/z']) await api('PUT', `/v1/kv/${p}/del/${k}`, 'v');
  t.equal((await api('DELETE', `/v1/kv/${p}/del/?recurse`)).text.trim(), 'true');
  t.equal((await api('GET', `/v1/kv/${p}/del/?recurse`)).status, 404);
});

t.test(`KV refuses a missing key name and conflicting flags ${KV_DOC}`, async (t) => {
  const put = await api('PUT', '/v1/kv/', 'v');
  t.equal(put.status, 400);
  t.equal(put.text, 'Missing key name');
  const conflict = await api('DELETE', `/v1/kv/${p}/k?recurse&cas=1`);
  t.equal(conflict.status, 400);
  t.match(conflict.text, /^Conflicting flags: /);
  const method = await api('POST', `/v1/kv/${p}/k`, 'v');
  t.equal(method.status, 405);
});

t.test(`a blocking KV get wakes when the key is written ${BLOCKING_DOC}`, async (t) => {
  const key = `${p}/watch/k`;
  t.teardown(() => api('DELETE', `/v1/kv/${key}`));
  await api('PUT', `/v1/kv/${key}`, 'v1');
  const first = await api('GET', `/v1/kv/${key}`);
  const idx = first.headers.get('x-consul-index');
  const blocked = api('GET', `/v1/kv/${key}?index=${idx}&wait=30s`);
  await api('PUT', `/v1/kv/${key}`, 'v2');
  const woke = await blocked;
  t.ok(Number(woke.headers.get('x-consul-index')) > Number(idx));
  t.equal(Buffer.from(woke.json<Json[]>()[0]?.Value, 'base64').toString(), 'v2');
});

t.test(`status/leader answers a JSON host:port string ${doc('api-docs/status.mdx')}`, async (t) => {
  const r = await api('GET', '/v1/status/leader');
  t.equal(r.status, 200);
  t.match(r.json<string>(), /^.+:\d+$/);
});

t.test(`an unknown /v1 path is 404 ${doc('api-docs/index.mdx')}`, async (t) => {
  const r = await api('GET', '/v1/no/such/endpoint');
  t.equal(r.status, 404);
});

t.test(
  `consistency modes are reported and ?stale with ?consistent is refused ${doc('api-docs/features/consistency.mdx')}`,
  async (t) => {
    const dflt = await api('GET', '/v1/catalog/services');
    t.equal(dflt.headers.get('x-consul-effective-consistency'), 'leader');
    const stale = await api('GET', '/v1/catalog/services?stale');
    t.equal(stale.headers.get('x-consul-effective-consistency'), 'stale');
    const both = await api('GET', '/v1/catalog/services?stale&consistent');
    t.equal(both.status, 400);
    t.equal(both.text, 'Cannot specify ?stale with ?consistent, conflicting semantics.');
  },
);

t.test(`an unknown datacenter has no path ${doc('api-docs/api-structure.mdx')}`, async (t) => {
  const r = await api('GET', `/v1/health/service/x?dc=${p}-nowhere`);
  t.equal(r.status, 500);
  t.match(r.text, /No path to datacenter/);
});

t.test(`health/service without a name is 400 ${HEALTH_DOC}`, async (t) => {
  const r = await api('GET', '/v1/health/service/');
  t.equal(r.status, 400);
  t.equal(r.text, 'Missing service name');
});
