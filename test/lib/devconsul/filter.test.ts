// The embedded catalog and Consul's filter language: `?filter` on the health endpoints (with the
// other parameters and blocking queries), its refusal elsewhere, and what a service-resolver's
// subsets must be to be stored.
import t, { type Test } from 'tap';
import { startTestConsul } from '../../helpers/devconsul.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function call(url: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return {
    status: res.status,
    text,
    index: Number(res.headers.get('x-consul-index')),
    json: () => JSON.parse(text) as Json[],
  };
}

/** `path` with `filter` URL-encoded into its query. */
const filtered = (path: string, filter: string) =>
  `${path}${path.includes('?') ? '&' : '?'}filter=${encodeURIComponent(filter)}`;

/** Three instances of api with sidecars (which carry their tags and meta); api-1 and api-2 pass. */
async function startMesh(t: Test) {
  const dc = await startTestConsul(t);
  const instances = [
    { id: 'api-1', port: 8001, tags: ['v1'], meta: { version: 'v1' } },
    { id: 'api-2', port: 8002, tags: ['v2', 'canary'], meta: { version: 'v2' } },
    { id: 'api-3', port: 8003, tags: ['v2'], meta: { version: 'v2', zone: 'b' } },
  ];
  for (const i of instances) {
    const r = await call(dc.url, 'PUT', '/v1/agent/service/register', {
      name: 'api',
      ...i,
      check: { CheckID: `${i.id}-ttl`, ttl: '60s' },
      connect: { sidecar_service: {} },
    });
    t.equal(r.status, 200, r.text);
  }
  await call(dc.url, 'PUT', '/v1/agent/check/pass/api-1-ttl');
  await call(dc.url, 'PUT', '/v1/agent/check/pass/api-2-ttl');
  return dc;
}

const ids = (entries: Json[]) => entries.map((e) => e.Service.ID as string).sort();

t.test('?filter keeps the health entries it selects', async (t) => {
  const dc = await startMesh(t);
  const cases: [string, string, string[]][] = [
    ['/v1/health/service/api', 'Service.Meta.version == v2', ['api-2', 'api-3']],
    ['/v1/health/service/api', '"canary" in Service.Tags', ['api-2']],
    [
      '/v1/health/service/api',
      'Service.Meta.version == v2 and "canary" not in Service.Tags',
      ['api-3'],
    ],
    [
      '/v1/health/service/api',
      'Service.Port == 8001 or Service.Meta.zone == b',
      ['api-1', 'api-3'],
    ],
    ['/v1/health/service/api', 'Service.Meta.zone != b', ['api-1', 'api-2']],
    ['/v1/health/service/api', 'Checks.Status == critical', ['api-3']],
    ['/v1/health/service/api', 'not Checks.Status == critical', ['api-1', 'api-2']],
    [
      '/v1/health/service/api',
      'Node.Datacenter == dc1 and Node.Node != ""',
      ['api-1', 'api-2', 'api-3'],
    ],
    ['/v1/health/service/api', 'Node.Datacenter == dc2 or Node.Node == ""', []],
    ['/v1/health/service/api', 'Service.ID matches "-[23]$"', ['api-2', 'api-3']],
    ['/v1/health/service/api?tag=v2', 'Service.Meta.zone == b', ['api-3']],
    ['/v1/health/service/api?passing', 'Service.Meta.version == v2', ['api-2']],
    ['/v1/health/service/api', '', ['api-1', 'api-2', 'api-3']],
    ['/v1/health/connect/api', 'Service.Meta.version == v1', ['api-1-sidecar-proxy']],
    [
      '/v1/health/connect/api',
      'Service.Proxy.DestinationServiceName == api and canary in Service.Tags',
      ['api-2-sidecar-proxy'],
    ],
    ['/v1/health/connect/api', 'Service.Kind != "connect-proxy"', []],
  ];
  for (const [path, filter, want] of cases) {
    const r = await call(dc.url, 'GET', filtered(path, filter));
    t.equal(r.status, 200, `${path} ${filter}: ${r.text}`);
    t.same(ids(r.json()), want, `${path} ?filter=${filter}`);
  }
  // a node's name is a word Consul wants quoted
  const node = (await call(dc.url, 'GET', '/v1/health/service/api')).json()[0]!.Node.Node;
  const byNode = await call(
    dc.url,
    'GET',
    filtered('/v1/health/service/api', `Node.Node == ${JSON.stringify(node)}`),
  );
  t.equal(byNode.json().length, 3, 'Node.Node == "<the node>"');
});

t.test('a bad ?filter is answered as Consul answers it: a 500 naming the problem', async (t) => {
  const dc = await startMesh(t);
  const cases: [string, RegExp][] = [
    ['Service.Meta.version = v1', /at column 22: expected an operator \(==, !=, in/],
    ['Service.Colour == red', /Service\.Colour is not a field of a health entry; fields: /],
    ['Service.Port == eighty', /Service\.Port is a number, and "eighty" is not one/],
    ['Node.Node == node-a', /unexpected "-" in node-a/],
    ['Service.ID matches "("', /is not a regular expression Remora can run/],
    ['Service.ID is empty', /compare with == "" instead/],
  ];
  for (const path of ['/v1/health/service/api', '/v1/health/connect/api'])
    for (const [filter, want] of cases) {
      const r = await call(dc.url, 'GET', filtered(path, filter));
      t.equal(r.status, 500, `${path} ${filter}`);
      t.ok(
        r.text.startsWith(
          `Failed to create boolean expression evaluator: filter ${JSON.stringify(filter)}: at column `,
        ),
        r.text,
      );
      t.match(r.text, want, filter);
    }
  const index = await call(dc.url, 'GET', filtered('/v1/health/service/api?index=x', 'x = 1'));
  t.equal(index.status, 400, 'the query options are read first');
  t.equal(index.text, 'Invalid index');
});

t.test('?filter on the endpoints that do not implement it is refused with a 400', async (t) => {
  const dc = await startMesh(t);
  for (const path of [
    '/v1/catalog/service/api',
    '/v1/catalog/connect/api',
    '/v1/agent/services',
    '/v1/agent/checks',
    '/v1/health/checks/api',
    '/v1/health/state/any',
    '/v1/catalog/nodes',
  ]) {
    const r = await call(dc.url, 'GET', filtered(path, 'Service == api'));
    t.equal(r.status, 400, path);
    t.match(
      r.text,
      /^the embedded catalog \(remora devconsul\) implements \?filter only on \/v1\/health\/service\/:name and \/v1\/health\/connect\/:name; use real Consul or drop the parameter$/,
      path,
    );
    t.equal((await call(dc.url, 'GET', `${path}?filter=`)).status, 200, `${path}: an empty filter`);
  }
});

t.test('a blocking query with ?filter wakes on a change and answers filtered', async (t) => {
  const dc = await startMesh(t);
  const path = filtered('/v1/health/service/api', 'Service.Meta.version == v3');
  const first = await call(dc.url, 'GET', path);
  t.same(first.json(), []);
  const blocked = call(dc.url, 'GET', `${path}&index=${first.index}&wait=20s`);
  await call(dc.url, 'PUT', '/v1/agent/service/register', {
    name: 'api',
    id: 'api-4',
    port: 8004,
    meta: { version: 'v3' },
  });
  const after = await blocked;
  t.equal(after.status, 200);
  t.same(ids(after.json()), ['api-4']);
  t.ok(after.index > first.index, 'a later index');

  // a bad filter fails at once, without waiting for the index
  const started = Date.now();
  const bad = await call(
    dc.url,
    'GET',
    filtered(`/v1/health/service/api?index=${after.index}&wait=20s`, 'Service.Foo == x'),
  );
  t.equal(bad.status, 500);
  t.ok(Date.now() - started < 5000, 'answered without blocking');
});

t.test('a service-resolver with a bad subset is refused with Consul’s message', async (t) => {
  const dc = await startTestConsul(t);
  const dnsLabel =
    "must be 63 characters or fewer, begin or end with lower case alphanumeric characters, and contain lower case alphanumeric characters or '-' in between";
  const cases: [string, Json, string | RegExp][] = [
    ['an upper-case name', { Subsets: { V1: {} } }, `Subset "V1" is invalid: ${dnsLabel}`],
    ['an underscore', { Subsets: { v_1: {} } }, `Subset "v_1" is invalid: ${dnsLabel}`],
    ['a leading dash', { Subsets: { '-v1': {} } }, `Subset "-v1" is invalid: ${dnsLabel}`],
    ['a trailing dash', { Subsets: { 'v1-': {} } }, `Subset "v1-" is invalid: ${dnsLabel}`],
    ['a dot', { Subsets: { 'v1.2': {} } }, `Subset "v1.2" is invalid: ${dnsLabel}`],
    [
      'a name of 64 characters',
      { Subsets: { ['a'.repeat(64)]: {} } },
      `Subset "${'a'.repeat(64)}" is invalid: must be non-empty and 63 characters or fewer`,
    ],
    ['an empty name', { Subsets: { '': {} } }, 'Subset defined with empty name'],
    [
      'a filter that does not parse',
      { Subsets: { v1: { Filter: 'Service.Meta.version ==' } } },
      /^Filter for subset "v1" is not a valid expression: filter "Service\.Meta\.version ==": at column 24: expected a value/,
    ],
    [
      'a bare word Consul cannot read',
      { Subsets: { v1: { Filter: 'Node.Node == node-a' } } },
      /^Filter for subset "v1" is not a valid expression: .*unexpected "-" in node-a/,
    ],
    [
      'a default subset not defined',
      { DefaultSubset: 'v9', Subsets: { v1: { Filter: 'Service.Meta.version == v1' } } },
      'DefaultSubset "v9" is not a valid subset',
    ],
    [
      'a default subset without subsets',
      { DefaultSubset: 'v1' },
      'DefaultSubset "v1" is not a valid subset',
    ],
    [
      'a filter that is not a string',
      { Subsets: { v1: { Filter: 42 } } },
      /^Request decoding failed: Subsets\[v1\]\.Filter must be a string/,
    ],
  ];
  for (const [what, body, want] of cases) {
    const r = await call(dc.url, 'PUT', '/v1/config', {
      Kind: 'service-resolver',
      Name: 'api',
      ...body,
    });
    t.equal(r.status, 400, what);
    if (typeof want === 'string') t.equal(r.text, want, what);
    else t.match(r.text, want, what);
  }
  t.equal(
    (await call(dc.url, 'GET', '/v1/config/service-resolver/api')).status,
    404,
    'nothing stored',
  );

  // Consul checks only the syntax on write: fields, values and patterns meet the entries later
  const subsets = {
    v1: { Filter: 'Service.Meta.version == v1' },
    'v-2': { Filter: 'Service.Colour == red', OnlyPassing: true },
    ['a'.repeat(63)]: { Filter: 'Service.Port == eighty' },
    '3': { Filter: 'Service.ID matches "("' },
    all: { Filter: '' },
    none: {},
  };
  const ok = await call(dc.url, 'PUT', '/v1/config', {
    Kind: 'service-resolver',
    Name: 'api',
    DefaultSubset: 'v-2',
    Subsets: subsets,
  });
  t.equal(ok.status, 200, ok.text);
  const stored = (await call(dc.url, 'GET', '/v1/config/service-resolver/api')).json() as Json;
  t.match(stored, { DefaultSubset: 'v-2', Subsets: subsets });
});
