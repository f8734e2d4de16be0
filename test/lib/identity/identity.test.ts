import t from 'tap';
import {
  createTrustDomain,
  formatSpiffeId,
  parseSpiffeId,
  spiffeIdFromSubjectAltName,
  urisFromSubjectAltName,
} from '../../../lib/identity/index.ts';

const td = createTrustDomain('0f3a8b2c-1d4e-4f5a-9b6c-7d8e9f0a1b2c');

t.test('a workload SPIFFE ID has Consul Connect shape and round-trips', async (t) => {
  t.equal(td, '0f3a8b2c-1d4e-4f5a-9b6c-7d8e9f0a1b2c.remora');
  const id = formatSpiffeId({ trustDomain: td, datacenter: 'dc1', service: 'api' });
  t.equal(id, `spiffe://${td}/ns/default/dc/dc1/svc/api`);
  t.same(parseSpiffeId(id), {
    trustDomain: td,
    namespace: 'default',
    datacenter: 'dc1',
    service: 'api',
  });
});

t.test('malformed IDs and names are refused with REMORA_E_IDENTITY_INVALID', async (t) => {
  for (const bad of [
    'http://x/ns/default/dc/dc1/svc/api',
    `spiffe://${td}/ns/default/dc/dc1/svc/`,
    `spiffe://${td}/ns/default/dc/dc1/svc/api/extra`,
    `spiffe://${td}/ns/default/dc/dc1/svc/a%2Fb`,
    'spiffe://UPPER.remora/ns/default/dc/dc1/svc/api',
  ]) {
    t.throws(() => parseSpiffeId(bad), { code: 'REMORA_E_IDENTITY_INVALID' }, bad);
  }
  t.throws(() => formatSpiffeId({ trustDomain: td, datacenter: 'dc1', service: '../etc' }), {
    code: 'REMORA_E_IDENTITY_INVALID',
  });
  t.throws(() => formatSpiffeId({ trustDomain: 'a b', datacenter: 'dc1', service: 'api' }), {
    code: 'REMORA_E_IDENTITY_INVALID',
  });
});

t.test('URI SANs are read from Node subjectaltname strings', async (t) => {
  const san = `DNS:api.local, URI:spiffe://${td}/ns/default/dc/dc1/svc/api`;
  t.same(urisFromSubjectAltName(san), [`spiffe://${td}/ns/default/dc/dc1/svc/api`]);
  t.equal(spiffeIdFromSubjectAltName(san), `spiffe://${td}/ns/default/dc/dc1/svc/api`);
  t.equal(
    spiffeIdFromSubjectAltName(`URI:spiffe://a/x, URI:spiffe://b/y`),
    undefined,
    'two IDs is no identity',
  );
  t.equal(spiffeIdFromSubjectAltName(undefined), undefined);
});
