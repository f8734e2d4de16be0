import t from 'tap';
import {
  compileRoute,
  headerNameProblem,
  headerValueProblem,
  modifyH1Headers,
  modifyH2Headers,
} from '../../../lib/proxy-api/index.ts';
import { rewritePath } from '../../../proxy/outbound/index.ts';

const req = (path: string, method = 'GET', headers: Record<string, string> = {}) => ({
  method,
  path,
  headers,
});

t.test('a route matches its path on the path without the query', async (t) => {
  const m = compileRoute({ match: { pathExact: '/users' } });
  t.ok(m(req('/users')));
  t.ok(m(req('/users?page=2')), 'the query is not part of the path');
  t.notOk(m(req('/users/1')));
});

t.test(
  'query tests: exact (decoded, any of repeated values), regex, present, absent',
  async (t) => {
    const exact = compileRoute({
      match: { pathPrefix: '/' },
      query: [{ name: 'v', exact: 'a b' }],
    });
    t.ok(exact(req('/x?v=a%20b')), 'compared URL-decoded');
    t.ok(exact(req('/x?v=1&v=a+b')), 'any of the repeated values');
    t.notOk(exact(req('/x?v=ab')));
    t.notOk(exact(req('/x')));
    const regex = compileRoute({
      match: { pathPrefix: '/' },
      query: [{ name: 'v', regex: '2|3' }],
    });
    t.ok(regex(req('/?v=3')));
    t.notOk(regex(req('/?v=23')), 'a full match');
    const present = compileRoute({ match: { pathPrefix: '/' }, query: [{ name: 'debug' }] });
    t.ok(present(req('/?debug')), 'present without a value');
    t.notOk(present(req('/?debugx=1')));
    const absent = compileRoute({
      match: { pathPrefix: '/' },
      query: [{ name: 'debug', present: false }],
    });
    t.ok(absent(req('/')));
    t.notOk(absent(req('/?debug=0')));
  },
);

t.test('every part of a route must hold', async (t) => {
  const m = compileRoute({
    match: { pathPrefix: '/api/', methods: ['POST'], header: [{ name: 'x-canary', exact: '1' }] },
    query: [{ name: 'v', exact: '2' }],
  });
  t.ok(m(req('/api/x?v=2', 'POST', { 'x-canary': '1' })));
  t.notOk(m(req('/api/x?v=2', 'GET', { 'x-canary': '1' })), 'method');
  t.notOk(m(req('/api/x?v=2', 'POST')), 'header');
  t.notOk(m(req('/api/x', 'POST', { 'x-canary': '1' })), 'query');
});

t.test('header changes: remove, then set, then add; HTTP/1.1 names in any case', async (t) => {
  const h1 = ['Host', 'api', 'X-Drop', 'a', 'x-route', 'old', 'X-Route', 'older', 'x-keep', 'k'];
  modifyH1Headers(h1, { remove: ['x-drop'], set: { 'x-route': 'new' }, add: { 'x-keep': 'k2' } });
  t.same(h1, ['Host', 'api', 'x-keep', 'k', 'x-route', 'new', 'x-keep', 'k2']);
  const h2: Record<string, string | string[] | undefined> = {
    ':path': '/',
    'x-drop': 'a',
    'x-route': ['old', 'older'],
    'x-keep': 'k',
  };
  modifyH2Headers(h2, { remove: ['x-drop'], set: { 'x-route': 'new' }, add: { 'x-keep': 'k2' } });
  t.same(h2, { ':path': '/', 'x-route': 'new', 'x-keep': ['k', 'k2'] });
});

t.test('fields a route may not change, values it may not send', async (t) => {
  for (const name of ['Content-Length', 'transfer-encoding', 'host', 'x-remora-error', ':path'])
    t.not(headerNameProblem(name), null, name);
  t.equal(headerNameProblem('x-canary'), null);
  t.not(headerValueProblem('a\r\nb'), null, 'a line break');
  t.not(headerValueProblem('a\u0000b'), null, 'a NUL');
  t.equal(headerValueProblem('v2; canary=yes'), null);
});

t.test('a prefix rewrite keeps the query and always leaves a path', async (t) => {
  const route = (pathPrefix: string, prefixRewrite: string) => ({
    match: { pathPrefix },
    splits: [],
    prefixRewrite,
  });
  t.equal(rewritePath('/api/users?x=1', route('/api/', '/')), '/users?x=1');
  t.equal(rewritePath('/api/users', route('/api', '/')), '//users', "Envoy's double slash");
  t.equal(rewritePath('/api/users', route('/api/', '')), '/users', 'never a path-less target');
  t.equal(rewritePath('/other', route('/api/', '/')), '/other', 'no match, no change');
});
