import t from 'tap';
import { createHmac } from 'node:crypto';
import {
  claimMatches,
  findJwt,
  forwardedPayload,
  jwkProblem,
  verifyJwt,
  DEFAULT_JWT_LOCATIONS,
  type JwtProvider,
} from '../../../lib/jwt/index.ts';
import { makeKey, signToken, type TestKey } from '../../helpers/jwt.ts';

const NOW_MS = Date.UTC(2026, 10, 29, 12, 0, 0);
const NOW_S = NOW_MS / 1000;

function provider(keys: readonly TestKey[], more: Partial<JwtProvider> = {}): JwtProvider {
  return {
    name: 'okta',
    issuer: 'https://issuer.example',
    audiences: ['api'],
    keys: keys.map((k) => k.jwk),
    locations: [...DEFAULT_JWT_LOCATIONS],
    clockSkewSeconds: 30,
    cacheSize: 0,
    ...more,
  };
}

const good = { iss: 'https://issuer.example', aud: 'api', exp: NOW_S + 600, sub: 'alice' };

const rs = makeKey('RS256');

t.test('every accepted algorithm verifies a token its key signed', async (t) => {
  for (const alg of [
    'RS256',
    'RS384',
    'RS512',
    'PS256',
    'PS384',
    'PS512',
    'ES256',
    'ES384',
    'ES512',
    'EdDSA',
  ]) {
    const key = alg === 'RS256' ? rs : makeKey(alg);
    const r = verifyJwt(signToken(key, good), provider([key]), NOW_MS);
    t.equal(r.ok, true, `${alg} verifies`);
    if (r.ok) t.equal(r.payload.sub, 'alice', `${alg} gives the payload`);
  }
});

t.test('a token signed by another key has a bad signature', async (t) => {
  const other = makeKey('ES256', rs.kid);
  const es = makeKey('ES256', rs.kid);
  const r = verifyJwt(signToken(other, good), provider([es]), NOW_MS);
  t.match(r, { ok: false, failure: 'bad_signature' });
  const tampered = signToken(rs, good).split('.');
  tampered[1] = Buffer.from(JSON.stringify({ ...good, sub: 'mallory' })).toString('base64url');
  t.match(verifyJwt(tampered.join('.'), provider([rs]), NOW_MS), {
    ok: false,
    failure: 'bad_signature',
  });
});

t.test('alg none and HMAC are refused, whatever the key set holds', async (t) => {
  const body = Buffer.from(JSON.stringify(good)).toString('base64url');
  const none = `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${body}.`;
  const r = verifyJwt(none, provider([rs]), NOW_MS);
  t.match(r, { ok: false, failure: 'alg' });
  if (!r.ok) t.match(r.message, /never "none" or HMAC/);
  // HS256 keyed with the RSA public key's modulus: the classic confusion attack
  const h = Buffer.from(JSON.stringify({ alg: 'HS256', kid: rs.kid })).toString('base64url');
  const mac = createHmac('sha256', String(rs.jwk.n)).update(`${h}.${body}`).digest('base64url');
  t.match(verifyJwt(`${h}.${body}.${mac}`, provider([rs]), NOW_MS), { ok: false, failure: 'alg' });
});

t.test('a key is used only for its own algorithm family and alg', async (t) => {
  // an RS256 header on an EC key's signature: no RSA key to try
  const es = makeKey('ES256', 'k');
  const token = signToken(es, good, { alg: 'RS256' });
  t.match(verifyJwt(token, provider([es]), NOW_MS), { ok: false, failure: 'bad_signature' });
  const pinned = makeKey('RS256', 'pinned', true);
  t.match(verifyJwt(signToken(pinned, good, { alg: 'RS384' }), provider([pinned]), NOW_MS), {
    ok: false,
    failure: 'unknown_key',
  });
  t.match(verifyJwt(signToken(rs, good, { kid: 'nobody' }), provider([rs]), NOW_MS), {
    ok: false,
    failure: 'unknown_key',
    message: /key id \(kid\) "nobody"/,
  });
});

t.test('exp and nbf hold with the clock skew, and fail beyond it', async (t) => {
  const p = provider([rs]);
  t.equal(
    verifyJwt(signToken(rs, { ...good, exp: NOW_S - 20 }), p, NOW_MS).ok,
    true,
    'within skew',
  );
  const expired = verifyJwt(signToken(rs, { ...good, exp: NOW_S - 31 }), p, NOW_MS);
  t.match(expired, {
    ok: false,
    failure: 'expired',
    message: /expired at .*clock skew allowed: 30 s/,
  });
  t.equal(verifyJwt(signToken(rs, { ...good, nbf: NOW_S + 20 }), p, NOW_MS).ok, true);
  t.match(verifyJwt(signToken(rs, { ...good, nbf: NOW_S + 31 }), p, NOW_MS), {
    ok: false,
    failure: 'not_yet_valid',
  });
  const strict = provider([rs], { clockSkewSeconds: 0 });
  t.match(verifyJwt(signToken(rs, { ...good, exp: NOW_S - 1 }), strict, NOW_MS), {
    ok: false,
    failure: 'expired',
  });
  t.match(verifyJwt(signToken(rs, { ...good, exp: 'soon' }), p, NOW_MS), {
    ok: false,
    failure: 'malformed',
  });
});

t.test('issuer and audience must match the provider', async (t) => {
  const p = provider([rs]);
  t.match(verifyJwt(signToken(rs, { ...good, iss: 'https://evil.example' }), p, NOW_MS), {
    ok: false,
    failure: 'issuer',
  });
  t.match(verifyJwt(signToken(rs, { ...good, aud: 'billing' }), p, NOW_MS), {
    ok: false,
    failure: 'audience',
  });
  t.equal(verifyJwt(signToken(rs, { ...good, aud: ['billing', 'api'] }), p, NOW_MS).ok, true);
  const { aud: _aud, ...noAud } = good;
  t.match(verifyJwt(signToken(rs, noAud), p, NOW_MS), { ok: false, failure: 'audience' });
  const open = provider([rs], { audiences: [] });
  delete open.issuer;
  t.equal(verifyJwt(signToken(rs, { ...noAud, iss: 'x' }), open, NOW_MS).ok, true, 'no checks set');
});

t.test('a provider without keys says why', async (t) => {
  const r = verifyJwt(
    signToken(rs, good),
    provider([], { keysProblem: 'its key set could not be fetched yet' }),
    NOW_MS,
  );
  t.match(r, { ok: false, failure: 'no_keys', message: /could not be fetched yet/ });
});

t.test('garbage is malformed, and messages never carry the token', async (t) => {
  for (const bad of [
    'abc',
    'a.b',
    'a.b.c.d',
    '!!.!!.!!',
    `${Buffer.from('[]').toString('base64url')}.e30.`,
  ]) {
    const r = verifyJwt(bad, provider([rs]), NOW_MS);
    t.match(r, { ok: false, failure: 'malformed' }, bad);
  }
  const token = signToken(rs, { ...good, exp: NOW_S - 3600 });
  const r = verifyJwt(token, provider([rs]), NOW_MS);
  t.equal(r.ok, false);
  if (!r.ok) t.notOk(r.message.includes(token.split('.')[1]!), 'no payload in the message');
});

t.test('a cached token is still checked for expiry on each use', async (t) => {
  const p = provider([rs], { cacheSize: 2 });
  const token = signToken(rs, { ...good, exp: NOW_S + 10 });
  t.equal(verifyJwt(token, p, NOW_MS).ok, true);
  t.match(verifyJwt(token, p, NOW_MS + 60_000), { ok: false, failure: 'expired' });
});

t.test('claims match by nested path, exactly or as a list member', async (t) => {
  const payload = { role: 'admin', perms: { role: ['reader', 'writer'] }, n: 1 };
  t.equal(claimMatches(payload, ['role'], 'admin'), true);
  t.equal(claimMatches(payload, ['role'], 'Admin'), false);
  t.equal(claimMatches(payload, ['perms', 'role'], 'writer'), true);
  t.equal(claimMatches(payload, ['perms', 'role'], 'admin'), false);
  t.equal(claimMatches(payload, ['missing'], 'x'), false);
  t.equal(claimMatches(payload, ['n'], '1'), false, 'only strings compare');
  t.equal(claimMatches(payload, ['role', 'x'], 'admin'), false);
});

t.test('tokens are found where the locations say, the first that holds one', async (t) => {
  t.same(findJwt(DEFAULT_JWT_LOCATIONS, { authorization: 'Bearer abc.def.ghi' }, '/'), {
    token: 'abc.def.ghi',
    header: { name: 'Authorization', forward: false },
  });
  t.same(findJwt(DEFAULT_JWT_LOCATIONS, { authorization: 'bearer tok' }, '/')?.token, 'tok');
  t.equal(findJwt(DEFAULT_JWT_LOCATIONS, { authorization: 'Basic dXNlcg==' }, '/'), null);
  t.equal(findJwt(DEFAULT_JWT_LOCATIONS, {}, '/'), null);
  const locs = [
    { header: { name: 'X-Token', forward: true } },
    { queryParam: { name: 'access_token' } },
    { cookie: { name: 'session' } },
  ];
  t.same(findJwt(locs, { 'x-token': 'h' }, '/?access_token=q'), {
    token: 'h',
    header: { name: 'X-Token', forward: true },
  });
  t.same(findJwt(locs, {}, '/p?a=1&access_token=q'), { token: 'q' });
  t.same(findJwt(locs, { cookie: 'a=1; session=c; b=2' }, '/p'), { token: 'c' });
});

t.test('the forwarded payload is padded only when asked', async (t) => {
  t.equal(forwardedPayload('eyJhIjoxfQ', false), 'eyJhIjoxfQ');
  t.equal(forwardedPayload('eyJhIjoxfQ', true), 'eyJhIjoxfQ==');
  t.equal(forwardedPayload('abcd', true), 'abcd');
});

t.test('keys that cannot verify tokens are named', async (t) => {
  t.equal(jwkProblem(rs.jwk), null);
  t.match(jwkProblem({ kty: 'oct', k: 'c2VjcmV0' }), /HMAC "oct" keys are refused/);
  t.match(jwkProblem({ ...rs.jwk, use: 'enc' }), /use "enc"/);
  t.match(jwkProblem({ ...rs.jwk, d: 'x' }), /private key/);
  t.match(jwkProblem({ ...rs.jwk, alg: 'HS256' }), /alg "HS256"/);
  t.match(jwkProblem({ kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }), /not a usable key/);
  t.match(jwkProblem('x'), /not an object/);
});
