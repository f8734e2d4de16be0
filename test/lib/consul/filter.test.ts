// Consul's filter language (lib/consul/filter.ts) over health entries: what a subset's Filter
// selects, and the errors for what Consul would refuse.
import t from 'tap';
import { compileFilter, FilterError, HEALTH_ENTRY_SCHEMA } from '../../../lib/consul/filter.ts';

const entry = {
  Node: { Node: 'node-a', Address: '10.0.0.1', Datacenter: 'dc1', Meta: { zone: 'a' } },
  Service: {
    ID: 'api-1-sidecar-proxy',
    Service: 'api-sidecar-proxy',
    Kind: 'connect-proxy',
    Tags: ['canary', 'v2'],
    Port: 21000,
    Meta: { version: 'v2', 'remora-node': 'node-a' },
    Weights: { Passing: 1, Warning: 1 },
    Proxy: { DestinationServiceName: 'api', LocalServicePort: 8080 },
  },
  Checks: [{ CheckID: 'ready', Status: 'passing' }],
};

const run = (expr: string, e: unknown = entry) => compileFilter(expr, HEALTH_ENTRY_SCHEMA)(e);

t.test('each operator, true and false', (t) => {
  const cases: [string, boolean][] = [
    ['Service.Meta.version == v2', true],
    ['Service.Meta.version == "v1"', false],
    ['Service.Meta.version != v1', true],
    ['Service.Meta.version != `v2`', false],
    ['"canary" in Service.Tags', true],
    ['stable in Service.Tags', false],
    ['stable not in Service.Tags', true],
    ['Service.Tags contains v2', true],
    ['Service.Tags not contains v2', false],
    ['version in Service.Meta', true],
    ['colour in Service.Meta', false],
    ['api in Service.Proxy.DestinationServiceName', true],
    ['Service.ID contains "-sidecar"', true],
    ['Service.ID matches "^api-[0-9]+"', true],
    ['Service.ID matches "^web"', false],
    ['Service.ID not matches "^web"', true],
    ['Service.Port == 21000', true],
    ['Service.Port != 21000', false],
    ['Service.Proxy.LocalServicePort == 8080', true],
    ['Service.Weights.Passing == 1', true],
    ['Node.Address == 10.0.0.1', true],
    ['Node.Meta.zone == a', true],
    ['Node.Meta is empty', false],
    ['Node.TaggedAddresses is empty', true],
    ['Service.Tags is not empty', true],
    ['Checks is empty', false],
    ['Service.Meta["remora-node"] == node-a', true],
    ['Service.Meta.remora-node == node-a', true],
    ['Service.Connect.Native == false', true],
  ];
  for (const [expr, want] of cases) t.equal(run(expr), want, expr);
  t.end();
});

t.test('and binds tighter than or; not and parentheses', (t) => {
  const cases: [string, boolean][] = [
    ['Service.Port == 1 and Service.Port == 1 or Service.Port == 21000', true],
    ['Service.Port == 21000 or Service.Port == 1 and Service.Port == 1', true],
    ['(Service.Port == 21000 or Service.Port == 1) and Service.Port == 1', false],
    ['not Service.Port == 1', true],
    ['not (Service.Port == 21000 and v2 in Service.Tags)', false],
    ['not not Node.Meta.zone == a', true],
  ];
  for (const [expr, want] of cases) t.equal(run(expr), want, expr);
  t.end();
});

t.test('an absent map key reads as empty, and meets no matches', (t) => {
  const cases: [string, boolean][] = [
    ['Service.Meta.colour == ""', true],
    ['Service.Meta.colour == red', false],
    ['Service.Meta.colour != red', true],
    ['Service.Meta.colour is empty', true],
    ['Service.Meta.colour matches ".*"', false],
    ['Service.Meta.colour not matches ".*"', true],
  ];
  for (const [expr, want] of cases) t.equal(run(expr), want, expr);
  t.equal(run('Service.Meta.version == v2', { Node: {}, Service: {} }), false, 'no meta at all');
  t.equal(run('Service.Tags is empty', {}), true, 'an entry without the field');
  t.end();
});

t.test('what Consul refuses is a FilterError naming the problem and where', (t) => {
  const cases: [string, RegExp][] = [
    ['', /the expression is empty/],
    ['Service.Meta.version = v1', /column 22: expected an operator \(==, !=, in/],
    ['Service.Meta.version ==', /expected a value/],
    [
      'Service.Colour == red',
      /Service\.Colour is not a field of the entry; fields: Node\.ID, .*Service\.Meta\.<key>/,
    ],
    ['Service.Port == eighty', /Service\.Port is a number, and "eighty" is not one/],
    ['Service.Connect.Native == maybe', /is true or false/],
    ['Service.Tags == canary', /Service\.Tags is a list of strings, which == does not apply/],
    ['Service.Port matches "1"', /Service\.Port is a number, which matches does not apply/],
    ['Checks.Status == passing', /selects a field through a list/],
    ['Service.Meta == x', /Service\.Meta is a map/],
    ['Service == x', /is a group of fields/],
    ['Service.Port.Number == 1', /goes past a number field/],
    ['(Service.Port == 1', /expected "\)", got the end/],
    ['Service.ID == "open', /a string not closed with "/],
    ['Service.ID == "\\q"', /an unknown escape/],
    ['Service.ID matches "("', /a regular expression that does not compile/],
    ['Service.ID == a b', /column 17: expected "and", "or" or the end, got "b"/],
    ['Service.ID is full', /expected "empty" after "is"/],
    ['"v1" not Service.Tags', /expected "in" after a value/],
    ['v1 not Service.Tags', /expected an operator .* after v1, got "not"/],
    ['Service.ID == x; rm', /an unexpected character ";"/],
  ];
  for (const [expr, want] of cases) {
    t.throws(() => compileFilter(expr, HEALTH_ENTRY_SCHEMA), FilterError, expr);
    try {
      compileFilter(expr, HEALTH_ENTRY_SCHEMA);
    } catch (err) {
      t.match((err as Error).message, want, expr);
      t.match((err as Error).message, `filter ${JSON.stringify(expr)}`, 'the message quotes it');
    }
  }
  t.end();
});
