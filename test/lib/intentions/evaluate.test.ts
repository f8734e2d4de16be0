import t from 'tap';
import fc from 'fast-check';
import {
  evaluateIntentions,
  precedenceOf,
  sortIntentions,
  validateIntention,
  validateSnapshot,
  type Intention,
  type IntentionsSnapshot,
} from '../../../lib/intentions/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';

function snap(
  intentions: Intention[],
  defaultPolicy: 'allow' | 'deny' = 'deny',
  auditMode = false,
): IntentionsSnapshot {
  return { revision: 1, defaultPolicy, auditMode, intentions };
}

t.test("precedence follows Consul's table for the default namespace", async (t) => {
  t.equal(precedenceOf({ source: 'web', destination: 'api' }), 9);
  t.equal(precedenceOf({ source: '*', destination: 'api' }), 8);
  t.equal(precedenceOf({ source: 'web', destination: '*' }), 6);
  t.equal(precedenceOf({ source: '*', destination: '*' }), 5);
});

t.test('sortIntentions orders by precedence, highest first, and fills precedence in', async (t) => {
  const sorted = sortIntentions([
    { source: '*', destination: '*', action: 'deny' },
    { source: 'web', destination: '*', action: 'allow' },
    { source: 'web', destination: 'api', action: 'allow' },
    { source: '*', destination: 'api', action: 'deny' },
  ]);
  t.same(
    sorted.map((i) => [i.source, i.destination, i.precedence]),
    [
      ['web', 'api', 9],
      ['*', 'api', 8],
      ['web', '*', 6],
      ['*', '*', 5],
    ],
  );
});

t.test('the most precise matching intention decides, whatever the list order', async (t) => {
  const all: Intention[] = [
    { source: '*', destination: '*', action: 'allow' },
    { source: 'web', destination: '*', action: 'deny' },
    { source: '*', destination: 'api', action: 'deny' },
    { source: 'web', destination: 'api', action: 'allow' },
  ];
  const s = snap(all);
  t.equal(
    evaluateIntentions(s, { source: 'web', destination: 'api' }).allowed,
    true,
    'exact → exact (9) allows',
  );
  const star = evaluateIntentions(s, { source: 'billing', destination: 'api' });
  t.equal(star.allowed, false, '* → api (8) denies other sources');
  t.equal(star.reason, 'intention "*" → api deny (precedence 8)');
  t.equal(
    evaluateIntentions(s, { source: 'web', destination: 'db' }).allowed,
    false,
    'web → * (6) denies',
  );
  t.equal(
    evaluateIntentions(s, { source: 'billing', destination: 'db' }).allowed,
    true,
    '* → * (5) allows',
  );
  // any permutation gives the same decisions
  fc.assert(
    fc.property(fc.shuffledSubarray(all, { minLength: 4, maxLength: 4 }), (perm) => {
      const p = snap(perm);
      return (
        evaluateIntentions(p, { source: 'web', destination: 'api' }).allowed &&
        !evaluateIntentions(p, { source: 'x', destination: 'api' }).allowed &&
        !evaluateIntentions(p, { source: 'web', destination: 'x' }).allowed &&
        evaluateIntentions(p, { source: 'x', destination: 'y' }).allowed
      );
    }),
  );
});

t.test('with no matching intention the default policy decides and decidedBy is null', async (t) => {
  const d = evaluateIntentions(snap([], 'deny'), { source: 'web', destination: 'api' });
  t.same(
    { allowed: d.allowed, decidedBy: d.decidedBy, enforced: d.enforced },
    { allowed: false, decidedBy: null, enforced: true },
  );
  t.match(d.reason, /default policy deny/);
  t.equal(
    evaluateIntentions(snap([], 'allow'), { source: 'web', destination: 'api' }).allowed,
    true,
  );
});

t.test('audit mode reports the decision but marks it not enforced', async (t) => {
  const d = evaluateIntentions(
    snap([{ source: 'web', destination: 'api', action: 'deny' }], 'deny', true),
    {
      source: 'web',
      destination: 'api',
    },
  );
  t.equal(d.allowed, false);
  t.equal(d.enforced, false);
});

const l7: Intention = {
  source: 'web',
  destination: 'api',
  permissions: [
    { action: 'deny', http: { pathPrefix: '/admin' } },
    { action: 'allow', http: { pathExact: '/health', methods: ['GET', 'HEAD'] } },
    { action: 'allow', http: { pathRegex: '/v[0-9]+/items/[a-z]+' } },
    { action: 'allow', http: { pathPrefix: '/beta', header: [{ name: 'X-Beta', exact: 'yes' }] } },
    {
      action: 'allow',
      http: { pathPrefix: '/internal', header: [{ name: 'x-debug', present: true, invert: true }] },
    },
    {
      action: 'allow',
      http: {
        methods: ['POST'],
        header: [
          { name: 'content-type', prefix: 'application/json' },
          { name: 'x-tenant', suffix: '-eu' },
        ],
      },
    },
  ],
};

t.test('L7 intentions ask for a per-request decision at connection time', async (t) => {
  const d = evaluateIntentions(snap([l7]), { source: 'web', destination: 'api' });
  t.equal(d.needsRequest, true);
  t.equal(d.allowed, true);
});

t.test(
  'L7 permissions: first match wins, unmatched requests fall to the default policy',
  async (t) => {
    const s = snap([l7], 'deny');
    const check = (method: string, path: string, headers: Record<string, string> = {}) =>
      evaluateIntentions(s, {
        source: 'web',
        destination: 'api',
        request: { method, path, headers },
      });
    t.equal(check('GET', '/admin/users').allowed, false, 'prefix deny');
    t.match(check('GET', '/admin/users').reason, 'permission #1 deny');
    t.equal(check('GET', '/health').allowed, true, 'exact path and method');
    t.equal(check('GET', '/health?x=1').allowed, true, 'query string ignored');
    t.equal(check('DELETE', '/health').allowed, false, 'method not listed');
    t.equal(check('GET', '/healthz').allowed, false, 'exact is exact');
    t.equal(check('GET', '/v2/items/abc').allowed, true, 'regex full match');
    t.equal(check('GET', '/v2/items/abc/x').allowed, false, 'regex is anchored');
    t.equal(
      check('GET', '/beta/x', { 'x-beta': 'yes' }).allowed,
      true,
      'header exact, names case-insensitive',
    );
    t.equal(check('GET', '/beta/x', { 'x-beta': 'no' }).allowed, false);
    t.equal(check('GET', '/internal/x').allowed, true, 'inverted presence: absent header matches');
    t.equal(check('GET', '/internal/x', { 'x-debug': '1' }).allowed, false);
    t.equal(
      check('POST', '/any', {
        'content-type': 'application/json; charset=utf-8',
        'x-tenant': 'acme-eu',
      }).allowed,
      true,
      'prefix and suffix',
    );
    const fallthrough = check('PUT', '/other');
    t.equal(fallthrough.allowed, false);
    t.equal(fallthrough.decidedBy, null);
    t.match(fallthrough.reason, /no permission matches PUT \/other; default policy deny/);
    t.equal(
      evaluateIntentions(snap([l7], 'allow'), {
        source: 'web',
        destination: 'api',
        request: { method: 'PUT', path: '/other', headers: {} },
      }).allowed,
      true,
    );
  },
);

t.test('invalid intentions are refused with REMORA_E_INTENTIONS_INVALID', async (t) => {
  const bad: unknown[] = [
    { source: 'web', destination: 'api' },
    { source: 'web', destination: 'api', action: 'allow', permissions: [] },
    { source: 'web', destination: 'api', action: 'maybe' },
    { source: 'we b', destination: 'api', action: 'allow' },
    { source: 'web', destination: 'api', permissions: [{ action: 'allow', http: {} }] },
    {
      source: 'web',
      destination: 'api',
      permissions: [{ action: 'allow', http: { pathExact: '/a', pathPrefix: '/b' } }],
    },
    {
      source: 'web',
      destination: 'api',
      permissions: [{ action: 'allow', http: { pathRegex: '(' } }],
    },
    {
      source: 'web',
      destination: 'api',
      permissions: [{ action: 'allow', http: { pathExact: 'no-slash' } }],
    },
    {
      source: 'web',
      destination: 'api',
      permissions: [{ action: 'allow', http: { methods: ['get'] } }],
    },
    {
      source: 'web',
      destination: 'api',
      permissions: [
        { action: 'allow', http: { header: [{ name: 'a', exact: 'x', prefix: 'y' }] } },
      ],
    },
    { source: 'web', destination: 'api', action: 'allow', extra: true },
  ];
  for (const b of bad) {
    try {
      validateIntention(b);
      t.fail(`accepted ${JSON.stringify(b)}`);
    } catch (err) {
      t.ok(hasCode(err, 'REMORA_E_INTENTIONS_INVALID'), JSON.stringify(b));
    }
  }
  t.throws(() =>
    validateSnapshot({
      revision: 1,
      defaultPolicy: 'deny',
      auditMode: false,
      intentions: [
        { source: 'a', destination: 'b', action: 'allow' },
        { source: 'a', destination: 'b', action: 'deny' },
      ],
    }),
  );
});

t.test('validation throws only coded errors for arbitrary input', async (t) => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      try {
        validateIntention(v);
        validateSnapshot(v);
      } catch (err) {
        return hasCode(err);
      }
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

t.test(
  'decisions are cached per snapshot and pair but stay correct for a new snapshot',
  async (t) => {
    const a = snap([{ source: 'web', destination: 'api', action: 'allow' }]);
    const b = snap([{ source: 'web', destination: 'api', action: 'deny' }]);
    t.equal(
      evaluateIntentions(a, { source: 'web', destination: 'api' }),
      evaluateIntentions(a, { source: 'web', destination: 'api' }),
    );
    t.equal(evaluateIntentions(b, { source: 'web', destination: 'api' }).allowed, false);
  },
);
