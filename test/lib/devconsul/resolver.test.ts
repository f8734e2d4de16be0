// What the embedded catalog refuses in a service-resolver's Redirect and Failover, with Consul's
// messages (agent/structs/config_entry_discoverychain.go), and what it keeps as written.
import t from 'tap';
import { startTestConsul } from '../../helpers/devconsul.ts';

type Json = Record<string, unknown>;

async function put(url: string, body: Json): Promise<{ status: number; text: string }> {
  const res = await fetch(`${url}/v1/config`, {
    method: 'PUT',
    body: JSON.stringify({ Kind: 'service-resolver', Name: 'api', ...body }),
  });
  return { status: res.status, text: await res.text() };
}

const subsets = { v1: { Filter: 'Service.Meta.version == v1' }, v2: {} };

t.test('a bad Redirect or Failover is refused with Consul’s message', async (t) => {
  const dc = await startTestConsul(t);
  const cases: [string, Json, string][] = [
    [
      'both',
      { Redirect: { Service: 'b' }, Failover: { '*': { Service: 'c' } } },
      'Redirect and Failover cannot both be set',
    ],
    ['an empty redirect', { Redirect: {} }, 'Redirect is empty'],
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
      'an undefined subset of its own service',
      { Redirect: { Service: 'api', ServiceSubset: 'v9' }, Subsets: subsets },
      'Redirect.ServiceSubset "v9" is not a valid subset of "api"',
    ],
    [
      'a failover key that is not a subset',
      { Failover: { v9: { Service: 'b' } }, Subsets: subsets },
      'Bad Failover["v9"]: not a valid subset subset',
    ],
    [
      'an empty failover',
      { Failover: { '*': {} } },
      'Bad Failover["*"]: one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required',
    ],
    [
      'a failover to an undefined subset of its own service',
      { Failover: { '*': { ServiceSubset: 'v9' } }, Subsets: subsets },
      'Bad Failover["*"]: ServiceSubset "v9" is not a valid subset of ""',
    ],
    [
      'targets with datacenters',
      { Failover: { '*': { Datacenters: ['dc2'], Targets: [{ Service: 'b' }] } } },
      'Bad Failover["*"]: Targets cannot be set with Datacenters',
    ],
    [
      'targets with a service',
      { Failover: { '*': { Service: 'b', Targets: [{ Service: 'c' }] } } },
      'Bad Failover["*"]: Targets cannot be set with Service',
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
      'a target naming an undefined subset',
      { Failover: { '*': { Targets: [{ ServiceSubset: 'v9' }] } }, Subsets: subsets },
      'Bad Failover["*"].Targets[0]: ServiceSubset "v9" is not a valid subset of "api"',
    ],
    [
      'an empty datacenter',
      { Failover: { '*': { Datacenters: ['dc2', ''] } } },
      'Bad Failover["*"].Datacenters: found empty datacenter',
    ],
    [
      'a redirect that is not an object',
      { Redirect: 'b' },
      'Request decoding failed: Redirect must be an object',
    ],
    [
      'targets that are not a list',
      { Failover: { '*': { Targets: { Service: 'b' } } } },
      'Request decoding failed: Failover[*].Targets must be a list of objects',
    ],
  ];
  for (const [what, body, want] of cases) {
    const r = await put(dc.url, body);
    t.same([r.status, r.text], [400, want], what);
  }
  const get = await fetch(`${dc.url}/v1/config/service-resolver/api`);
  t.equal(get.status, 404, 'nothing stored');
});

t.test('a good Redirect or Failover is stored as written', async (t) => {
  const dc = await startTestConsul(t);
  const good: Json[] = [
    { Redirect: { Service: 'api-v2', ServiceSubset: 'canary' } },
    { Redirect: { Service: 'api', ServiceSubset: 'v1' }, Subsets: subsets },
    {
      Subsets: subsets,
      Failover: {
        '*': { Service: 'api-dr' },
        v1: { Targets: [{ ServiceSubset: 'v2' }, { Service: 'api-dr', Datacenter: 'dc2' }] },
        v2: { Datacenters: ['dc2', 'dc3'] },
      },
    },
  ];
  for (const body of good) {
    const r = await put(dc.url, body);
    t.same([r.status, r.text], [200, 'true']);
    const stored = (await (await fetch(`${dc.url}/v1/config/service-resolver/api`)).json()) as Json;
    t.match(stored, body, 'read back as written');
  }
});
