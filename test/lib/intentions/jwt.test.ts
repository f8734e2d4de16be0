import t from 'tap';
import {
  evaluateIntentions,
  intentionJwtProviders,
  validateIntention,
  validateSnapshot,
  type Intention,
  type IntentionsSnapshot,
  type JwtCheck,
} from '../../../lib/intentions/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';

function snap(
  intentions: Intention[],
  defaultPolicy: 'allow' | 'deny' = 'deny',
): IntentionsSnapshot {
  return { revision: 1, defaultPolicy, auditMode: false, intentions };
}

/** A check that answers as the test says for each provider named. */
function tokens(state: Record<string, 'ok' | 'missing' | 'invalid' | { role: string }>): JwtCheck {
  return (req) => {
    for (const p of req.providers) {
      const s = state[p.name] ?? 'missing';
      if (s === 'missing')
        return { met: false, kind: 'missing', provider: p.name, reason: 'no token' };
      if (s === 'invalid')
        return { met: false, kind: 'invalid', provider: p.name, reason: 'the token expired' };
      const role = s === 'ok' ? undefined : s.role;
      for (const c of p.verifyClaims ?? [])
        if (c.path.join('.') === 'role' && role !== c.value)
          return { met: false, kind: 'claims', provider: p.name, reason: `role is not ${c.value}` };
    }
    return { met: true };
  };
}

const req = (path: string, jwt?: JwtCheck, method = 'GET') => ({
  method,
  path,
  headers: {},
  ...(jwt ? { jwt } : {}),
});

t.test("validation accepts Consul's JWT shape at the intention and on permissions", async (t) => {
  const i = validateIntention({
    source: 'web',
    destination: 'api',
    jwt: {
      providers: [{ name: 'okta', verifyClaims: [{ path: ['perms', 'role'], value: 'admin' }] }],
    },
    permissions: [
      { action: 'allow', http: { pathPrefix: '/admin' }, jwt: { providers: [{ name: 'auth0' }] } },
      { action: 'deny', http: { pathPrefix: '/' } },
    ],
  });
  t.same(i.jwt, {
    providers: [{ name: 'okta', verifyClaims: [{ path: ['perms', 'role'], value: 'admin' }] }],
  });
  t.same(i.permissions?.[0]?.jwt, { providers: [{ name: 'auth0' }] });
  t.same(intentionJwtProviders(i), ['okta', 'auth0']);
  t.same(
    validateIntention({
      source: 'web',
      destination: 'api',
      action: 'allow',
      jwt: { providers: [{ name: 'okta' }] },
    }).jwt,
    { providers: [{ name: 'okta' }] },
    'an L4 allow may require a token (HTTP destinations)',
  );
});

t.test('validation refuses JWT requirements that cannot work, naming the field', async (t) => {
  const base = { source: 'web', destination: 'api', action: 'allow' };
  const cases: Array<[unknown, RegExp]> = [
    [{ ...base, jwt: {} }, /intention\.jwt: "providers" must be a list of 1 to 8/],
    [{ ...base, jwt: { providers: [] } }, /"providers" must be a list/],
    [{ ...base, jwt: { providers: [{}] } }, /jwt\.providers\[0\]: "name" must name a jwt-provider/],
    [{ ...base, jwt: { providers: [{ name: 'a b' }] } }, /"name" must name a jwt-provider/],
    [{ ...base, jwt: { providers: [{ name: 'okta', extra: 1 }] } }, /unknown field "extra"/],
    [{ ...base, jwt: { providers: [{ name: 'okta' }, { name: 'okta' }] } }, /listed twice/],
    [
      { ...base, jwt: { providers: [{ name: 'okta', verifyClaims: [{ path: [], value: 'x' }] }] } },
      /verifyClaims\[0\]: "path" must be a list of 1 to 16 claim names/,
    ],
    [
      {
        ...base,
        jwt: { providers: [{ name: 'okta', verifyClaims: [{ path: 'role', value: 'x' }] }] },
      },
      /"path" must be a list/,
    ],
    [
      {
        ...base,
        jwt: { providers: [{ name: 'okta', verifyClaims: [{ path: ['role'], value: 1 }] }] },
      },
      /"value" must be a string/,
    ],
    [
      { ...base, action: 'deny', jwt: { providers: [{ name: 'okta' }] } },
      /"jwt" is set on a deny intention/,
    ],
    [
      {
        source: 'web',
        destination: 'api',
        permissions: [
          { action: 'deny', http: { pathPrefix: '/' }, jwt: { providers: [{ name: 'okta' }] } },
        ],
      },
      /permissions\[0\]: "jwt" is set on a deny permission/,
    ],
  ];
  for (const [value, message] of cases) {
    const err = t.throws(() => validateIntention(value)) as Error;
    t.ok(hasCode(err, 'REMORA_E_INTENTIONS_INVALID'), String(message));
    t.match(err.message, message);
  }
});

t.test('snapshots keep JWT requirements', async (t) => {
  const s = validateSnapshot({
    revision: 3,
    defaultPolicy: 'deny',
    auditMode: false,
    intentions: [
      {
        source: 'web',
        destination: 'api',
        action: 'allow',
        jwt: { providers: [{ name: 'okta' }] },
      },
    ],
  });
  t.same(s.intentions[0]?.jwt, { providers: [{ name: 'okta' }] });
});

t.test('an intention requiring a JWT is decided per request', async (t) => {
  const s = snap([
    { source: 'web', destination: 'api', action: 'allow', jwt: { providers: [{ name: 'okta' }] } },
  ]);
  const l4 = evaluateIntentions(s, { source: 'web', destination: 'api' });
  t.equal(l4.needsRequest, true);
  t.match(l4.reason, /requires a JWT/);
  const ok = evaluateIntentions(s, {
    source: 'web',
    destination: 'api',
    request: req('/', tokens({ okta: 'ok' })),
  });
  t.equal(ok.allowed, true);
  t.equal(ok.jwt, undefined);
  const missing = evaluateIntentions(s, {
    source: 'web',
    destination: 'api',
    request: req('/', tokens({})),
  });
  t.equal(
    missing.allowed,
    false,
    'without a token the intention does not match; the default denies',
  );
  t.same(missing.jwt, { kind: 'missing', provider: 'okta', reason: 'no token' });
  t.match(
    missing.reason,
    /does not match: it requires a JWT from provider okta .*default policy deny/,
  );
  const invalid = evaluateIntentions(s, {
    source: 'web',
    destination: 'api',
    request: req('/', tokens({ okta: 'invalid' })),
  });
  t.equal(invalid.allowed, false);
  t.same(invalid.jwt, { kind: 'invalid', provider: 'okta', reason: 'the token expired' });
  const noVerifier = evaluateIntentions(s, {
    source: 'web',
    destination: 'api',
    request: req('/'),
  });
  t.equal(noVerifier.allowed, false, 'no verifier: every requirement is unmet');
});

t.test(
  'with default allow, a missing token falls to the default and is not a JWT denial',
  async (t) => {
    const s = snap(
      [
        {
          source: 'web',
          destination: 'api',
          action: 'allow',
          jwt: { providers: [{ name: 'okta' }] },
        },
      ],
      'allow',
    );
    const d = evaluateIntentions(s, {
      source: 'web',
      destination: 'api',
      request: req('/', tokens({})),
    });
    t.equal(d.allowed, true);
    t.equal(d.jwt, undefined);
    const bad = evaluateIntentions(s, {
      source: 'web',
      destination: 'api',
      request: req('/', tokens({ okta: 'invalid' })),
    });
    t.equal(bad.allowed, false, 'a token that does not verify is refused even then');
  },
);

t.test(
  'claims decide L7 permissions; a permission whose token is missing is skipped',
  async (t) => {
    const s = snap([
      {
        source: 'web',
        destination: 'api',
        permissions: [
          {
            action: 'allow',
            http: { pathPrefix: '/admin' },
            jwt: {
              providers: [{ name: 'okta', verifyClaims: [{ path: ['role'], value: 'admin' }] }],
            },
          },
          { action: 'allow', http: { pathPrefix: '/public' } },
        ],
      },
    ]);
    const at = (path: string, jwt: JwtCheck) =>
      evaluateIntentions(s, { source: 'web', destination: 'api', request: req(path, jwt) });
    t.equal(at('/admin/x', tokens({ okta: { role: 'admin' } })).allowed, true);
    const reader = at('/admin/x', tokens({ okta: { role: 'reader' } }));
    t.equal(reader.allowed, false, 'a valid token without the claim: no permission matches');
    t.equal(reader.jwt, undefined, 'a claim not met is a 403, not a 401');
    t.match(reader.reason, /permission #1 requires a JWT from provider okta \(role is not admin\)/);
    const none = at('/admin/x', tokens({}));
    t.same(none.jwt?.kind, 'missing');
    t.equal(at('/public/x', tokens({})).allowed, true, 'a permission without jwt needs no token');
    t.same(at('/admin/x', tokens({ okta: 'invalid' })).jwt?.kind, 'invalid');
  },
);
