import t from 'tap';
import { newEndpointState, type EndpointState } from '../../../proxy/balance/endpoints.ts';
import {
  cookieValue,
  createHashRing,
  hash32,
  newHashCookie,
  queryValue,
  requestHash,
  type HashInputs,
} from '../../../proxy/balance/hash.ts';

const eps = (n: number, weight = 1): EndpointState[] =>
  Array.from({ length: n }, (_, i) =>
    newEndpointState({
      id: `api-${i + 1}`,
      address: '10.0.0.1',
      port: 21000 + i,
      weight,
      node: 'n',
    }),
  );

/** Which endpoint each of `keys` lands on. */
function placement(all: EndpointState[], eligible = all, keys = 3000): string[] {
  const ring = createHashRing();
  return Array.from({ length: keys }, (_, k) => ring(all, eligible, hash32(`user-${k}`))!.id);
}

t.test('the same value reaches the same endpoint, and values spread by weight', async (t) => {
  const all = eps(3);
  const a = placement(all);
  t.same(placement(all), a, 'the same on a ring built again (every proxy builds the same ring)');
  const count = (ids: string[], id: string) => ids.filter((x) => x === id).length;
  for (const e of all)
    t.ok(count(a, e.id) > 600, `${e.id} takes its share (${count(a, e.id)} of 3000)`);
  const weighted = eps(2);
  weighted[0]!.weight = 3;
  const w = placement(weighted);
  t.ok(count(w, 'api-1') > count(w, 'api-2') * 2, 'a weight of 3 takes about three times as much');
});

t.test('an endpoint leaving moves only its own values', async (t) => {
  const all = eps(4);
  const before = placement(all);
  const left = all.filter((e) => e.id !== 'api-2');
  const after = placement(all, left);
  const moved = before.filter((id, k) => id !== after[k]);
  t.ok(moved.length > 0);
  t.ok(
    moved.every((id) => id === 'api-2'),
    'every value that moved was on the endpoint that left; the others stay where they were',
  );
  t.same(placement(left), after, 'the same once the ring is rebuilt without it');
});

t.test('a request is hashed on what its policies find, combined in order', async (t) => {
  const inputs = (
    o: Partial<Record<'header' | 'cookie' | 'query' | 'ip', string>>,
  ): HashInputs => ({
    header: (n) => (n === 'x-user' ? o.header : undefined),
    cookie: (n) => (n === 'session' ? o.cookie : undefined),
    query: (n) => (n === 'tenant' ? o.query : undefined),
    sourceIp: () => o.ip,
  });
  const header = { field: 'header' as const, fieldValue: 'X-User' };
  const cookie = { field: 'cookie' as const, fieldValue: 'session' };
  t.equal(
    requestHash([header], inputs({ header: 'ann' })),
    hash32('ann'),
    'header names in any case',
  );
  t.equal(requestHash([header], inputs({})), undefined, 'nothing found: no hash (a random pick)');
  t.equal(
    requestHash([{ field: 'query_parameter', fieldValue: 'tenant' }], inputs({ query: 't1' })),
    hash32('t1'),
  );
  t.equal(requestHash([{ sourceIp: true }], inputs({ ip: '10.1.1.1' })), hash32('10.1.1.1'));
  const both = requestHash([header, cookie], inputs({ header: 'ann', cookie: 's1' }));
  t.equal(both, (((hash32('ann') << 1) | (hash32('ann') >>> 31)) ^ hash32('s1')) >>> 0);
  t.equal(
    requestHash([{ ...header, terminal: true }, cookie], inputs({ header: 'ann', cookie: 's1' })),
    hash32('ann'),
    'a terminal policy that found a value ends the list',
  );
  t.equal(
    requestHash([{ ...header, terminal: true }, cookie], inputs({ cookie: 's1' })),
    hash32('s1'),
    'one that found nothing does not',
  );
});

t.test('a cookie policy with cookie settings makes one up for a request without it', async (t) => {
  const made: string[] = [];
  const policy = {
    field: 'cookie' as const,
    fieldValue: 'sid',
    cookie: { ttlSeconds: 60, path: '/' },
  };
  const inputs = (sent?: string): HashInputs => ({
    header: () => undefined,
    cookie: () => sent,
    query: () => undefined,
    sourceIp: () => undefined,
    newCookie: (p) => {
      const c = newHashCookie(p);
      made.push(c.setCookie);
      return c.value;
    },
  });
  t.equal(requestHash([policy], inputs('abc')), hash32('abc'), 'a sent cookie is hashed');
  t.same(made, [], 'and none is made');
  const h = requestHash([policy], inputs());
  t.equal(made.length, 1, 'one made up');
  const value = /^sid=([0-9a-f]{16}); Max-Age=60; Path=\/; HttpOnly$/.exec(made[0]!)?.[1];
  t.ok(value, made[0]!);
  t.equal(h, hash32(value!), 'the request is hashed on the value it will send next time');
  const { cookie: _, ...plain } = policy;
  t.equal(requestHash([plain], inputs()), undefined, 'without cookie settings: no cookie, no hash');
  t.equal(made.length, 1);
  t.equal(
    newHashCookie({
      field: 'cookie',
      fieldValue: 'tab',
      cookie: { ttlSeconds: 0 },
    }).setCookie.replace(/=[0-9a-f]+;/, '=…;'),
    'tab=…; HttpOnly',
    'a session cookie has no Max-Age',
  );
  t.not(newHashCookie(policy).value, newHashCookie(policy).value, 'each caller gets its own');
});

t.test('cookies and query parameters are read as browsers and servers write them', async (t) => {
  t.equal(cookieValue('a=1; session=abc=; b=2', 'session'), 'abc=');
  t.equal(cookieValue('a=1', 'session'), undefined);
  t.equal(cookieValue(undefined, 'session'), undefined);
  t.equal(queryValue('/p?tenant=t%201&x=2', 'tenant'), 't 1');
  t.equal(queryValue('/p', 'tenant'), undefined);
});
