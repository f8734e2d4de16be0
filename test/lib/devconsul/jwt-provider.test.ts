// jwt-provider entries in the embedded catalog: stored as given, refused where Consul refuses them.
import t from 'tap';
import { configKind, decodeConfigEntry } from '../../../lib/devconsul/config-entries.ts';
import { HttpError } from '../../../lib/devconsul/http-error.ts';

const decode = (entry: Record<string, unknown>) =>
  decodeConfigEntry(JSON.stringify({ Kind: 'jwt-provider', Name: 'okta', ...entry }));

t.test('the embedded catalog stores jwt-provider entries', async (t) => {
  t.equal(configKind('jwt-provider'), 'jwt-provider');
  const entry = {
    Issuer: 'https://issuer.example',
    Audiences: ['api'],
    JSONWebKeySet: { Remote: { URI: 'https://issuer.example/jwks', CacheDuration: '10m' } },
    Locations: [
      { Header: { Name: 'Authorization', ValuePrefix: 'Bearer ' } },
      { Cookie: { Name: 'c' } },
    ],
    Forwarding: { HeaderName: 'x-jwt' },
    ClockSkewSeconds: 45,
  };
  t.same(decode(entry), { Kind: 'jwt-provider', Name: 'okta', ...entry });
  t.same(decode({ JSONWebKeySet: { Local: { JWKS: 'e30=' } } }).JSONWebKeySet, {
    Local: { JWKS: 'e30=' },
  });
});

t.test('what Consul refuses in a jwt-provider entry is refused', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{}, 'JSONWebKeySet is required'],
    [{ JSONWebKeySet: {} }, 'set exactly one of JSONWebKeySet.Local and JSONWebKeySet.Remote'],
    [
      { JSONWebKeySet: { Local: {} } },
      'set exactly one of JSONWebKeySet.Local.JWKS and Local.Filename',
    ],
    [{ JSONWebKeySet: { Remote: {} } }, 'JSONWebKeySet.Remote.URI is required'],
    [
      { JSONWebKeySet: { Local: { JWKS: 'e30=' } }, Locations: [{}] },
      'Locations[0] must set exactly one of Header, QueryParam and Cookie',
    ],
    [
      { JSONWebKeySet: { Local: { JWKS: 'e30=' } }, Locations: [{ QueryParam: {} }] },
      'Locations[0].QueryParam.Name is required',
    ],
    [
      { JSONWebKeySet: { Local: { JWKS: 'e30=' } }, Forwarding: {} },
      'Forwarding.HeaderName is required',
    ],
    [
      { JSONWebKeySet: { Local: { JWKS: 'e30=' } }, ClockSkewSeconds: -5 },
      'ClockSkewSeconds must be a whole number ≥ 0',
    ],
  ];
  for (const [given, message] of cases)
    t.throws(
      () => decode(given),
      new HttpError(400, `invalid jwt-provider "okta": ${message}`),
      message,
    );
});
