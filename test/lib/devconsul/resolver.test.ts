// What the embedded catalog refuses in a service-resolver's Redirect and Failover, with Consul's
// messages and in Consul's order (agent/structs/config_entry_discoverychain.go,
// ServiceResolverConfigEntry.Validate), and what it keeps as written.
import t from 'tap';
import { startTestConsul } from '../../helpers/devconsul.ts';

type Json = Record<string, unknown>;

async function put(url: string, name: string, body: Json) {
  const res = await fetch(`${url}/v1/config`, {
    method: 'PUT',
    body: JSON.stringify({ Kind: 'service-resolver', Name: name, ...body }),
  });
  return { status: res.status, text: await res.text() };
}

async function get(url: string, name: string) {
  const res = await fetch(`${url}/v1/config/service-resolver/${name}`);
  const text = await res.text();
  return { status: res.status, entry: res.ok ? (JSON.parse(text) as Json) : undefined };
}

const subsets = { v1: { Filter: 'Service.Meta.version == v1' }, v2: {} };

/** [what, body, Consul's message]: each refused with a 400 and that message. */
type Case = [string, Json, string];

const redirectCases: Case[] = [
  [
    'a redirect with a failover',
    { Redirect: { Service: 'b' }, Failover: { '*': { Service: 'c' } } },
    'Redirect and Failover cannot both be set',
  ],
  ['an empty redirect', { Redirect: {} }, 'Redirect is empty'],
  [
    'a redirect of empty and null fields',
    { Redirect: { Service: '', Datacenter: null } },
    'Redirect is empty',
  ],
  [
    'a peer with a subset',
    { Redirect: { Service: 'b', Peer: 'p', ServiceSubset: 'v1' } },
    'Redirect.Peer cannot be set with Redirect.ServiceSubset',
  ],
  [
    'a peer with a partition',
    { Redirect: { Service: 'b', Peer: 'p', Partition: 'x' } },
    'Redirect.Partition cannot be set with Redirect.Peer',
  ],
  [
    'a peer with a datacenter',
    { Redirect: { Service: 'b', Peer: 'p', Datacenter: 'dc2' } },
    'Redirect.Peer cannot be set with Redirect.Datacenter',
  ],
  [
    'a subset without a service',
    { Redirect: { ServiceSubset: 'v1' }, Subsets: subsets },
    'Redirect.ServiceSubset defined without Redirect.Service',
  ],
  [
    'a namespace without a service',
    { Redirect: { Namespace: 'ops' } },
    'Redirect.Namespace defined without Redirect.Service',
  ],
  [
    'a partition without a service',
    { Redirect: { Partition: 'x' } },
    'Redirect.Partition defined without Redirect.Service',
  ],
  [
    'a peer without a service',
    { Redirect: { Peer: 'p' } },
    'Redirect.Peer defined without Redirect.Service',
  ],
  [
    'an undefined subset of its own service',
    { Redirect: { Service: 'api', ServiceSubset: 'v9' }, Subsets: subsets },
    'Redirect.ServiceSubset "v9" is not a valid subset of "api"',
  ],
];

const failoverCases: Case[] = [
  [
    'a failover key that is not a subset',
    { Failover: { v9: { Service: 'b' } }, Subsets: subsets },
    'Bad Failover["v9"]: not a valid subset subset',
  ],
  [
    'a failover key when there are no subsets',
    { Failover: { v1: { Service: 'b' } } },
    'Bad Failover["v1"]: not a valid subset subset',
  ],
  [
    'an empty failover',
    { Failover: { '*': {} } },
    'Bad Failover["*"]: one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required',
  ],
  [
    'a null failover (Consul decodes it as an empty one)',
    { Failover: { '*': null } },
    'Bad Failover["*"]: one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required',
  ],
  [
    'a failover with empty lists',
    { Failover: { '*': { Datacenters: [], Targets: [] } } },
    'Bad Failover["*"]: one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required',
  ],
  [
    'a failover to an undefined subset of its own service, no service named',
    { Failover: { '*': { ServiceSubset: 'v9' } }, Subsets: subsets },
    'Bad Failover["*"]: ServiceSubset "v9" is not a valid subset of ""',
  ],
  [
    'a failover to an undefined subset of its own service, named',
    { Failover: { '*': { Service: 'api', ServiceSubset: 'v9' } } },
    'Bad Failover["*"]: ServiceSubset "v9" is not a valid subset of "api"',
  ],
  [
    'targets with datacenters',
    { Failover: { '*': { Datacenters: ['dc2'], Targets: [{ Service: 'b' }] } } },
    'Bad Failover["*"]: Targets cannot be set with Datacenters',
  ],
  [
    'targets with a subset',
    { Failover: { '*': { ServiceSubset: 'v2', Targets: [{ Service: 'c' }] } }, Subsets: subsets },
    'Bad Failover["*"]: Targets cannot be set with ServiceSubset',
  ],
  [
    'targets with a service',
    { Failover: { '*': { Service: 'b', Targets: [{ Service: 'c' }] } } },
    'Bad Failover["*"]: Targets cannot be set with Service',
  ],
  [
    'a target with a peer and a subset',
    { Failover: { '*': { Targets: [{ Service: 'b', Peer: 'p', ServiceSubset: 'v1' }] } } },
    'Bad Failover["*"].Targets[0]: Peer cannot be set with ServiceSubset',
  ],
  [
    'a target with a peer and a partition',
    { Failover: { '*': { Targets: [{ Peer: 'p', Partition: 'x' }] } } },
    'Bad Failover["*"].Targets[0]: Partition cannot be set with Peer',
  ],
  [
    'a target with a peer and a datacenter',
    { Failover: { '*': { Targets: [{ Service: 'b' }, { Peer: 'p', Datacenter: 'dc2' }] } } },
    'Bad Failover["*"].Targets[1]: Peer cannot be set with Datacenter',
  ],
  [
    'a target with a partition and a datacenter',
    { Failover: { '*': { Targets: [{ Partition: 'x', Datacenter: 'dc2' }] } } },
    'Bad Failover["*"].Targets[0]: Partition cannot be set with Datacenter',
  ],
  [
    'a target naming an undefined subset of its own service',
    { Failover: { '*': { Targets: [{ ServiceSubset: 'v9' }] } }, Subsets: subsets },
    'Bad Failover["*"].Targets[0]: ServiceSubset "v9" is not a valid subset of "api"',
  ],
  [
    'a target naming its own service and an undefined subset',
    { Failover: { v1: { Targets: [{ Service: 'api', ServiceSubset: 'v3' }] } }, Subsets: subsets },
    'Bad Failover["v1"].Targets[0]: ServiceSubset "v3" is not a valid subset of "api"',
  ],
  [
    'an empty datacenter',
    { Failover: { '*': { Datacenters: ['dc2', ''] } } },
    'Bad Failover["*"].Datacenters: found empty datacenter',
  ],
  [
    'a null datacenter',
    { Failover: { '*': { Datacenters: [null] } } },
    'Bad Failover["*"].Datacenters: found empty datacenter',
  ],
  [
    'two bad failovers: the first key in sorted order is reported',
    { Failover: { v2: {}, '*': { Service: 'b' }, v1: {} }, Subsets: subsets },
    'Bad Failover["v1"]: one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required',
  ],
  [
    'a key quoted as Go quotes it',
    { Failover: { 'a"\n\x01': { Service: 'b' } } },
    'Bad Failover["a\\"\\n\\x01"]: not a valid subset subset',
  ],
];

const decodingCases: Case[] = [
  [
    'a redirect that is not an object',
    { Redirect: 'b' },
    'Request decoding failed: Redirect must be an object',
  ],
  [
    'a redirect field that is not a string',
    { Redirect: { Service: 5 } },
    'Request decoding failed: Redirect.Service must be a string',
  ],
  [
    'a failover that is not a map',
    { Failover: [{ Service: 'b' }] },
    'Request decoding failed: Failover must be a map of subset names to failovers',
  ],
  [
    'a failover entry that is not an object',
    { Failover: { '*': 'b' } },
    'Request decoding failed: Failover[*] must be an object',
  ],
  [
    'a failover field that is not a string',
    { Failover: { '*': { ServiceSubset: true } } },
    'Request decoding failed: Failover[*].ServiceSubset must be a string',
  ],
  [
    'targets that are not a list',
    { Failover: { '*': { Targets: { Service: 'b' } } } },
    'Request decoding failed: Failover[*].Targets must be a list of objects',
  ],
  [
    'a target that is not an object',
    { Failover: { '*': { Targets: ['b'] } } },
    'Request decoding failed: Failover[*].Targets must be a list of objects',
  ],
  [
    'a target field that is not a string',
    { Failover: { '*': { Targets: [{ Peer: ['p'] }] } } },
    'Request decoding failed: Failover[*].Targets[0].Peer must be a string',
  ],
  [
    'datacenters that are not a list of names',
    { Failover: { '*': { Datacenters: 'dc2' } } },
    'Request decoding failed: Failover[*].Datacenters must be a list of names',
  ],
  [
    'a type error is refused before any check, as Consul decodes before it validates',
    { Redirect: {}, Failover: 'x', Subsets: { V_1: {} } },
    'Request decoding failed: Failover must be a map of subset names to failovers',
  ],
];

const cookieCases: Case[] = [
  [
    'a CookieConfig on a header policy',
    {
      LoadBalancer: {
        Policy: 'ring_hash',
        HashPolicies: [
          { Field: 'cookie', FieldValue: 'a' },
          { Field: 'header', FieldValue: 'x', CookieConfig: { TTL: '1m' } },
        ],
      },
    },
    'Bad LoadBalancer HashPolicy[1]: cookie_config provided for "header"',
  ],
  [
    'a session cookie with a TTL',
    {
      LoadBalancer: {
        Policy: 'maglev',
        HashPolicies: [
          { Field: 'cookie', FieldValue: 'sid', CookieConfig: { Session: true, TTL: '10s' } },
        ],
      },
    },
    'Bad LoadBalancer HashPolicy[0]: a session cookie cannot have an associated TTL',
  ],
];

t.test('a bad Redirect, Failover or CookieConfig is refused with Consul’s message', async (t) => {
  const dc = await startTestConsul(t);
  const all = [...redirectCases, ...failoverCases, ...decodingCases, ...cookieCases];
  for (const [what, body, want] of all) {
    const r = await put(dc.url, 'api', body);
    t.same([r.status, r.text], [400, want], what);
  }
  t.equal((await get(dc.url, 'api')).status, 404, 'nothing stored');
});

t.test('a refused write leaves the stored entry as it was', async (t) => {
  const dc = await startTestConsul(t);
  const first = await put(dc.url, 'api', { Redirect: { Service: 'api-v2' } });
  t.equal(first.status, 200, first.text);
  const before = await get(dc.url, 'api');
  for (const [what, body] of [...redirectCases, ...failoverCases, ...decodingCases]) {
    t.equal((await put(dc.url, 'api', body)).status, 400, what);
  }
  t.same(await get(dc.url, 'api'), before, 'same entry, same indexes');
});

t.test('a subset check runs before the Redirect and Failover checks', async (t) => {
  const dc = await startTestConsul(t);
  const r = await put(dc.url, 'api', {
    DefaultSubset: 'v9',
    Subsets: subsets,
    Redirect: {},
  });
  t.same([r.status, r.text], [400, 'DefaultSubset "v9" is not a valid subset']);
});

t.test('a good Redirect or Failover is stored and read back as written', async (t) => {
  const dc = await startTestConsul(t);
  const good: [string, Json][] = [
    ['a redirect to another service', { Redirect: { Service: 'api-v2' } }],
    [
      'cookies made up by the proxies, with a TTL or for the session',
      {
        LoadBalancer: {
          Policy: 'ring_hash',
          HashPolicies: [
            { Field: 'cookie', FieldValue: 'sid', CookieConfig: { TTL: '10s', Path: '/oven' } },
            { Field: 'cookie', FieldValue: 'tab', CookieConfig: { Session: true, TTL: '0s' } },
          ],
        },
      },
    ],
    [
      'a redirect to a subset of another service (not checked here)',
      { Redirect: { Service: 'api-v2', ServiceSubset: 'canary' } },
    ],
    [
      'a redirect to a subset of its own service',
      { Redirect: { Service: 'api', ServiceSubset: 'v1' }, Subsets: subsets },
    ],
    ['a redirect to another datacenter', { Redirect: { Datacenter: 'dc2' } }],
    ['a redirect to a peer', { Redirect: { Service: 'api', Peer: 'east' } }],
    ['a redirect with an empty failover map', { Redirect: { Service: 'b' }, Failover: {} }],
    ['a failover to another service', { Failover: { '*': { Service: 'api-dr' } } }],
    [
      'a failover to a subset of its own service',
      { Failover: { '*': { ServiceSubset: 'v2' } }, Subsets: subsets },
    ],
    [
      'a failover to a subset of another service',
      { Failover: { '*': { Service: 'api-dr', ServiceSubset: 'anything' } } },
    ],
    [
      'a failover through a list of targets',
      {
        Failover: {
          '*': {
            Targets: [
              { Service: 'api-dr' },
              { Service: 'api-dr', Datacenter: 'dc2' },
              { Peer: 'east' },
              { Service: 'other', ServiceSubset: 'v7' },
            ],
          },
        },
      },
    ],
    [
      'failovers per subset',
      {
        Subsets: subsets,
        DefaultSubset: 'v1',
        Failover: {
          '*': { Service: 'api-dr' },
          v1: { Targets: [{ ServiceSubset: 'v2' }, { Service: 'api-dr', Datacenter: 'dc2' }] },
          v2: { Datacenters: ['dc2', 'dc3'] },
        },
      },
    ],
  ];
  for (const [what, body] of good) {
    const r = await put(dc.url, 'api', body);
    t.same([r.status, r.text], [200, 'true'], what);
    const { entry } = await get(dc.url, 'api');
    const { CreateIndex, ModifyIndex, ...rest } = entry ?? {};
    t.ok(typeof CreateIndex === 'number' && typeof ModifyIndex === 'number', `${what}: indexes`);
    t.same(rest, { Kind: 'service-resolver', Name: 'api', ...body }, `${what}: read back`);
  }
});

t.test('a body key named like an Object property is a key, not a prototype', async (t) => {
  const dc = await startTestConsul(t);
  const res = await fetch(`${dc.url}/v1/config`, {
    method: 'PUT',
    body: '{"Kind":"service-resolver","Name":"api","__proto__":{"Redirect":{}},"toString":1}',
  });
  t.same([res.status, await res.text()], [200, 'true'], 'neither is refused as given twice');
  const { entry } = await get(dc.url, 'api');
  t.notOk(entry && 'Redirect' in entry, 'no Redirect came through a prototype');
});
