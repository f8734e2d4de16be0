// Consul's filter language (lib/consul/filter.ts) over health entries: what an expression selects,
// go-bexpr v0.1.2's semantics for absent keys and lists of structs, and the errors for what
// Consul would refuse.
import t, { type Test } from 'tap';
import {
  checkFilterSyntax,
  compileFilter,
  FilterError,
  HEALTH_ENTRY_SCHEMA,
  type FilterSchema,
} from '../../../lib/consul/filter.ts';

const entry = {
  Node: {
    ID: 'b4f6',
    Node: 'node-a',
    Address: '10.0.0.1',
    Datacenter: 'dc1',
    TaggedAddresses: null,
    Meta: { zone: 'a' },
  },
  Service: {
    ID: 'api-1-sidecar-proxy',
    Service: 'api-sidecar-proxy',
    Kind: 'connect-proxy',
    Tags: ['canary', 'v2'],
    Address: '',
    TaggedAddresses: { lan: { Address: '10.0.0.1', Port: 21000 } },
    Port: 21000,
    Meta: { version: 'v2', 'remora-node': 'node-a', 'a.b': 'dotted' },
    Weights: { Passing: 1, Warning: 1 },
    EnableTagOverride: false,
    Proxy: {
      DestinationServiceName: 'api',
      LocalServicePort: 8080,
      Upstreams: [
        { DestinationName: 'db', LocalBindPort: 5432 },
        { DestinationName: 'cache', LocalBindPort: 6379 },
      ],
    },
    Connect: {},
  },
  Checks: [
    { CheckID: 'serfHealth', Status: 'passing', ServiceTags: [] },
    { CheckID: 'service:api-1', Status: 'critical', ServiceTags: ['canary'] },
  ],
};

const run = (expr: string, e: unknown = entry) => compileFilter(expr, HEALTH_ENTRY_SCHEMA)(e);

/** Each case: the expression and what it makes of `entry` (or of the given entry). */
function table(t: Test, cases: [string, boolean, unknown?][]): void {
  for (const [expr, want, e] of cases) t.equal(run(expr, e ?? entry), want, expr);
  t.end();
}

t.test('each operator, true and false', (t) =>
  table(t, [
    ['Service.Meta.version == v2', true],
    ['Service.Meta.version == "v1"', false],
    ['Service.Meta.version != v1', true],
    ['Service.Meta.version != `v2`', false],
    ['Service.Meta.version=="v2"', true],
    ['Service.ID contains "-sidecar"', true],
    ['Service.ID contains web', false],
    ['Service.ID not contains web', true],
    ['"sidecar" in Service.ID', true],
    ['"web" not in Service.ID', true],
    ['Service.ID matches "^api-[0-9]+"', true],
    ['Service.ID matches "^web"', false],
    ['Service.ID not matches "^web"', true],
    ['Service.ID not matches "proxy"', false],
    ['Service.Port == 21000', true],
    ['Service.Port != 21000', false],
    ['Service.Proxy.LocalServicePort == 8080', true],
    ['Service.Weights.Passing == 1', true],
    ['Service.EnableTagOverride == false', true],
    ['Service.Connect.Native == true', false],
    ['Node.Address == "10.0.0.1"', true],
    ['Node.Node == "node-a"', true],
    ['Node.Meta.zone == a', true],
    ['Node.Meta is empty', false],
    ['Node.Meta is not empty', true],
    ['Node.TaggedAddresses is empty', true],
    ['zone in Node.Meta', true],
    ['region in Node.Meta', false],
    ['Node.Meta contains zone', true],
    ['Node.Meta not contains zone', false],
    ['lan in Service.TaggedAddresses', true],
    ['Service.TaggedAddresses.lan.Port == 21000', true],
    ['Service.TaggedAddresses.lan.Address == "10.0.0.2"', false],
    ['Service.Tags is empty', false],
    ['Service.Tags is not empty', true],
    ['Checks is empty', false],
    ['Checks is not empty', true],
  ]),
);

t.test('tags: membership in the list, in every spelling Consul takes', (t) =>
  table(t, [
    ['"canary" in Service.Tags', true],
    ['canary in Service.Tags', true],
    ['`canary` in Service.Tags', true],
    ['stable in Service.Tags', false],
    ['stable not in Service.Tags', true],
    ['canary not in Service.Tags', false],
    ['Service.Tags contains v2', true],
    ['Service.Tags contains v', false],
    ['Service.Tags not contains v2', false],
    ['"canary" in Service.Tags', false, { Service: { Tags: null } }],
    ['"canary" not in Service.Tags', true, { Service: {} }],
    ['Service.Tags is empty', true, { Service: { Tags: null } }],
  ]),
);

t.test('and binds tighter than or; not binds tightest; parentheses group', (t) =>
  table(t, [
    ['Service.Port == 1 and Service.Port == 1 or Service.Port == 21000', true],
    ['Service.Port == 21000 or Service.Port == 1 and Service.Port == 1', true],
    ['(Service.Port == 21000 or Service.Port == 1) and Service.Port == 1', false],
    ['not Service.Port == 1', true],
    ['not Service.Port == 21000 or v2 in Service.Tags', true],
    ['not (Service.Port == 21000 or v2 in Service.Tags)', false],
    ['not (Service.Port == 21000 and v2 in Service.Tags)', false],
    ['not not Node.Meta.zone == a', true],
    ['( Service.Port == 21000 )', true],
    ['((Service.Port == 21000) and (canary in Service.Tags))', true],
    ['Service.Port == 1 or Service.Port == 2 or Service.Port == 21000', true],
    ['Service.Port == 21000 and Service.Port == 21000 and Service.Port == 1', false],
    // a `not` before an operator is a word, as go-bexpr reads it
    ['not in Service.Tags', false],
    ['not in Service.Tags', true, { Service: { Tags: ['not'] } }],
  ]),
);

t.test('an absent map key: what go-bexpr answers for each operator', (t) =>
  table(t, [
    ['Service.Meta.colour == ""', false],
    ['Service.Meta.colour == red', false],
    ['Service.Meta.colour != red', true],
    ['Service.Meta.colour != ""', true],
    ['Service.Meta.colour contains r', false],
    ['Service.Meta.colour not contains r', true],
    ['r in Service.Meta.colour', false],
    ['r not in Service.Meta.colour', true],
    // evaluate.go answers true for every operator its map branch does not name as false
    ['Service.Meta.colour matches "^red$"', true],
    ['Service.Meta.colour not matches "^red$"', true],
    ['Service.TaggedAddresses.wan.Port == 1', false],
    ['Service.TaggedAddresses.wan.Port != 1', true],
    ['not Service.Meta.colour == red', true],
    ['Service.Meta.version == v2', false, { Node: {}, Service: { Meta: null } }],
    ['Service.Meta.version != v2', true, { Service: {} }],
    ['Service.Meta is empty', true, {}],
  ]),
);

t.test('a selector through a list of structs holds when it holds for any element', (t) =>
  table(t, [
    ['Checks.Status == critical', true],
    ['Checks.Status == warning', false],
    ['Checks.Status != passing', true],
    ['Checks.Status != passing', false, { Checks: [{ Status: 'passing' }] }],
    ['Checks.Status != passing', false, { Checks: [] }],
    ['not Checks.Status == critical', false],
    ['not Checks.Status == critical', true, { Checks: null }],
    ['Checks.CheckID matches "^service:"', true],
    ['Checks.ServiceTags contains canary', true],
    ['Checks.ServiceTags is empty', true],
    ['Checks.ServiceTags is empty', false, { Checks: [{ ServiceTags: ['x'] }] }],
    ['Service.Proxy.Upstreams.DestinationName == cache', true],
    ['Service.Proxy.Upstreams.LocalBindPort == 5432', true],
    ['Service.Proxy.Upstreams.LocalBindPort == 1', false],
    ['Service.Proxy.Upstreams is empty', false],
  ]),
);

t.test('values are coerced to the field type, as Go parses them', (t) =>
  table(t, [
    ['Service.Port == "21000"', true],
    ['Service.Port == "0x5208"', true],
    ['Service.Port == "0o51010"', true],
    ['Service.Port == "051010"', true],
    ['Service.Port == "21_000"', true],
    ['Service.Port == "+21000"', true],
    ['Service.Port == -1', false],
    ['Service.Port == 0', true, { Service: {} }],
    ['Service.Connect.Native == F', true],
    ['Service.Connect.Native == 0', true],
    ['Service.Connect.Native == "TRUE"', false],
    ['Service.Connect.Native == true', true, { Service: { Connect: { Native: true } } }],
    ['Service.Meta.n == 1.5', true, { Service: { Meta: { n: '1.5' } } }],
    ['Service.Meta.n == -1', true, { Service: { Meta: { n: '-1' } } }],
  ]),
);

t.test('selectors: dotted names, bracketed keys, keywords as names', (t) =>
  table(t, [
    ['Service.Meta["remora-node"] == "node-a"', true],
    ['Service.Meta[ "remora-node" ] == "node-a"', true],
    ['Service.Meta[`a.b`] == dotted', true],
    ['Service["Meta"]["version"] == v2', true],
    ['Service.Meta.in == x', true, { Service: { Meta: { in: 'x' } } }],
    ['Service.ID == and', true, { Service: { ID: 'and' } }],
  ]),
);

t.test('strings: Go escapes, raw strings, bytes decoded as UTF-8', (t) =>
  table(t, [
    ['Service.Meta.s == "a\\tb"', true, { Service: { Meta: { s: 'a\tb' } } }],
    ['Service.Meta.s == `a\\tb`', true, { Service: { Meta: { s: 'a\\tb' } } }],
    ['Service.Meta.s == `say "hi"`', true, { Service: { Meta: { s: 'say "hi"' } } }],
    ['Service.Meta.s == "\\u00e9\\xc3\\xa9\\303\\251"', true, { Service: { Meta: { s: 'ééé' } } }],
    ['Service.Meta.s == "\\U0001F600"', true, { Service: { Meta: { s: '😀' } } }],
    ['Service.Meta.s == "\\\\"', true, { Service: { Meta: { s: '\\' } } }],
  ]),
);

t.test('regular expressions: unanchored RE2, run as JS', (t) =>
  table(t, [
    ['Service.ID matches "sidecar"', true],
    ['Service.ID matches "^sidecar"', false],
    ['Service.ID matches `proxy$`', true],
    ['Service.ID matches "(?i)^API"', true],
    ['Service.ID matches `\\Aapi`', true],
    ['Service.ID matches `1\\-sidecar`', true],
    ['Service.ID matches `\\x{61}pi`', true],
    ['Service.ID matches `(?P<n>api)-`', true],
    ['Service.Meta.s matches `^a{$`', true, { Service: { Meta: { s: 'a{' } } }],
    ['Service.Meta.s matches `^[]x]+$`', true, { Service: { Meta: { s: ']x]' } } }],
    ['Service.Meta.s matches `^\\pL+$`', true, { Service: { Meta: { s: 'été' } } }],
    ['Service.Meta.s matches `^.$`', true, { Service: { Meta: { s: '😀' } } }],
  ]),
);

t.test('what Consul refuses is a FilterError naming the problem and where', (t) => {
  const cases: [string, RegExp][] = [
    // syntax
    ['', /column 1: the expression is empty/],
    ['  ', /the expression is empty/],
    [
      'Service.Meta.version = v1',
      /column 22: expected an operator \(==, !=, in, not in, contains, not contains, matches, not matches, is empty, is not empty\), got "="/,
    ],
    ['Service.Meta.version ==', /column 24: expected a value .*got the end/],
    ['Service.Meta.version', /expected an operator .* after Service.Meta.version, got the end/],
    ['Service.ID is full', /column 15: expected "empty" after "is", got "full"/],
    ['Service.ID is not full', /expected "empty" after "is not"/],
    ['(Service.Port == 1', /expected "\)", got the end/],
    ['Service.Port == 1)', /expected "and", "or" or the end, got "\)"/],
    ['Service.ID == a b', /column 17: expected "and", "or" or the end, got "b"/],
    ['Service.ID == x AND Service.Port == 1', /got "AND"/],
    ['Service.ID == x and', /expected a selector .*got the end/],
    ['"v1" Service.Tags', /expected "in" or "not in" after a value/],
    ['1 == Service.Port', /expected "in" or "not in" after a value, got "=="/],
    ['v1 not Service.Tags', /expected an operator .* after v1, got "not"/],
    ['"v1" in', /expected a selector .*got the end/],
    ['Service.ID == "open', /column 15: a string not closed with "/],
    ['Service.ID == `open', /a string not closed with `/],
    ['Service.ID == "\\q"', /an unknown escape \\q/],
    ['Service.ID == "\\x4"', /\\x needs 2 hex digits/],
    ['Service.ID == "\\uD800"', /is not a Unicode code point/],
    ['Service.ID == "a\\"b"', /cannot hold " \(not even as \\"\); use a `raw string`/],
    ['Service.ID == "a\nb"', /cannot span lines/],
    ['Service.ID == x ; rm', /an unexpected character ";"/],
    ['Service.ID == x; rm', /unexpected ";" in x;/],
    [
      'Service.Meta.version == v2.0',
      /column 28: expected a field name right after "\.", got "0" \(quote a value such as "v2\.0"\)/,
    ],
    ['Service.ID == x & y', /an unexpected character "&"/],
    ['Service.ID ! x', /expected an operator .*got "!"/],
    // spacing and bare words, as go-bexpr's grammar has them
    ['Service.Port == 1 and(Service.Port == 1)', /column 22: expected a space after "and"/],
    ['(Service.Port == 1)and Service.Port == 1', /expected a space before "and"/],
    ['not(Service.Port == 1)', /expected a space after "not"/],
    ['Service.Tags contains"x"', /expected a space before the string/],
    ['"x"in Service.Tags', /expected a space after the string "x"/],
    [
      'Node.Node == node-a',
      /column 18: unexpected "-" in node-a: a bare word is letters, digits and underscores; quote a value such as "node-a"/,
    ],
    ['Service.Meta.remora-node == x', /select a map key such as that with \["remora-node"\]/],
    [
      'Node.Address == 10.0.0.1',
      /10\.0\.0\.1 is not a number .*quote a value such as "10\.0\.0\.1"/,
    ],
    ['Service.Port == 007', /007 is not a number/],
    ['Service.Port == 1e3', /1e3 is not a number/],
    ['Service .Port == 1', /after Service, got "\."/],
    ['Service. Port == 1', /expected a field name right after "\."/],
    ['Service.1 == 1', /expected a field name right after "\.", got "1"/],
    ['Service.Meta ["x"] == 1', /after Service.Meta, got "\["/],
    ['Service.Meta[x] == 1', /expected a quoted key after "\[", got "x"/],
    ['Service.Meta["x" == 1', /expected "\]" after the key, got "=="/],
    ['_x == 1', /an unexpected character "_"/],
    ['"/Service/Port" == 1', /JSON-pointer selectors are not in the filter language Consul speaks/],
    ['"x" in "/Service/Tags"', /JSON-pointer selectors/],
    // the schema
    [
      'Service.Colour == red',
      /column 1: Service\.Colour is not a field of a health entry; fields: Service\.Kind, .*Service\.Meta, Service\.Meta\.<key>, .*Service\.Proxy\.Upstreams\.DestinationName/,
    ],
    [
      'Colour == red',
      /Colour is not a field of a health entry; fields: Node\.ID, .*Checks\.Status/,
    ],
    [
      'Checks.Colour == red',
      /Checks\.Colour is not a field of a health entry; fields: Checks\.Node/,
    ],
    ['service.ID == x', /service is not a field/],
    ['Service.$list == x', /Service\.\$list|unexpected character "\$"/],
    ['Service == x', /Service is a group of fields; select one: Service\.Kind/],
    ['Service.TaggedAddresses.lan == x', /lan is a group of fields/],
    ['Service.Port.Number == 1', /column 1: Service\.Port is a number; it has no field "Number"/],
    ['Node.Meta.zone.x == 1', /Node\.Meta\.zone is a string; it has no field "x"/],
    ['Service.Port == eighty', /column 17: Service\.Port is a number, and "eighty" is not one/],
    ['Service.Port == 1.5', /Service\.Port is a number, and "1\.5" is not one/],
    ['Service.Port == "9223372036854775808"', /is not one/],
    ['Service.Connect.Native == maybe', /Service\.Connect\.Native is true or false, not "maybe"/],
    [
      'Service.Tags == canary',
      /Service\.Tags is a list of strings: "==" does not apply to it \(in, not in, contains, not contains, is empty, is not empty do\)/,
    ],
    [
      'Service.Port matches "1"',
      /Service\.Port is a number: "matches" does not apply to it \(==, != do\)/,
    ],
    ['"1" in Service.Port', /column 8: Service\.Port is a number: "in" does not apply/],
    [
      'Service.ID is empty',
      /Service\.ID is a string: "is empty" does not apply .*compare with == "" instead/,
    ],
    ['Service.ID is not empty', /compare with != "" instead/],
    ['Service.Meta == x', /Service\.Meta is a map: "==" does not apply/],
    ['Service.Meta.version is empty', /Service\.Meta\.version is a string: "is empty"/],
    [
      'Checks == x',
      /Checks is a list: "==" does not apply to it \(is empty, is not empty do\); or select a field of its elements: Checks\.Node, Checks\.CheckID/,
    ],
    ['Service.Meta["a-b"].x == 1', /Service\.Meta\["a-b"\] is a string; it has no field "x"/],
    // regular expressions
    [
      'Service.ID matches "("',
      /column 20: "\(" is not a regular expression Remora can run: .*Unterminated group/,
    ],
    ['Service.ID matches "(?=x)"', /lookahead and lookbehind are not supported \(RE2\)/],
    ['Service.ID matches `(?<!x)y`', /lookahead and lookbehind are not supported/],
    ['Service.ID matches `(a)\\1`', /backreferences are not supported/],
    ['Service.ID matches "[[:alpha:]]"', /POSIX classes such as \[\[:alpha:\]\] are not supported/],
    ['Service.ID matches "(?U)a"', /the flags \(\?U\) are not supported/],
    ['Service.ID matches `\\Qa\\E`', /is not a regular expression Remora can run/],
  ];
  for (const [expr, want] of cases) {
    t.throws(() => compileFilter(expr, HEALTH_ENTRY_SCHEMA), FilterError, expr);
    try {
      compileFilter(expr, HEALTH_ENTRY_SCHEMA);
    } catch (err) {
      t.match((err as Error).message, want, expr);
      t.ok(
        (err as Error).message.startsWith(`filter ${JSON.stringify(expr)}: at column `),
        `the message quotes ${JSON.stringify(expr)} and says where`,
      );
    }
  }
  t.end();
});

t.test('the syntax check alone, as Consul checks a resolver subset on write', (t) => {
  for (const expr of [
    'Service.Colour == red',
    'Service.Port == eighty',
    'Service.ID matches "("',
    'Service.ID is empty',
    'a.b.c contains x',
  ])
    t.doesNotThrow(() => checkFilterSyntax(expr), `${expr}: parses (its fields meet it later)`);
  for (const expr of ['Service.Meta.version ==', 'Node.Node == node-a', '', 'x = 1'])
    t.throws(() => checkFilterSyntax(expr), FilterError, `${expr}: does not parse`);
  t.end();
});

t.test('a schema is data: another entry shape takes the same language', (t) => {
  const catalogService: FilterSchema = {
    name: 'a catalog service',
    fields: {
      Node: 'string',
      ServiceName: 'string',
      ServiceTags: 'strings',
      ServicePort: 'number',
      ServiceMeta: 'map',
      ServiceProxy: { Upstreams: { $list: { DestinationName: 'string' } } },
    },
  };
  const f = compileFilter(
    'ServiceMeta.env == qa and "tag" in ServiceTags and ServiceProxy.Upstreams.DestinationName == db',
    catalogService,
  );
  t.equal(
    f({
      ServiceMeta: { env: 'qa' },
      ServiceTags: ['tag'],
      ServiceProxy: { Upstreams: [{ DestinationName: 'db' }] },
    }),
    true,
  );
  t.equal(f({ ServiceMeta: { env: 'prod' }, ServiceTags: ['tag'] }), false);
  t.throws(
    () => compileFilter('Service.ID == x', catalogService),
    /Service is not a field of a catalog service; fields: Node, ServiceName/,
  );
  t.end();
});

t.test('a compiled filter never throws on entries of another shape', (t) => {
  const odd = [
    null,
    42,
    'x',
    [],
    { Service: 'x', Node: [], Checks: {} },
    { Service: { Tags: 'canary', Meta: [], Port: '21000', Proxy: null }, Checks: [null, 1] },
  ];
  const exprs = [
    'canary in Service.Tags',
    'Service.Meta.version != v2',
    'Service.Port == 0',
    'Checks.Status != passing',
    'Service.Proxy.Upstreams is empty',
    'Service.ID matches "."',
  ];
  for (const expr of exprs) for (const e of odd) t.doesNotThrow(() => run(expr, e), expr);
  t.equal(run('Service.Port == 0', odd[5]), true, 'a field of the wrong type reads as its zero');
  t.end();
});
