// Route matching, shared by the proxy (which routes requests) and `remora explain` (which shows
// the route a request would meet): the route's HTTP match on the path without its query, its
// query parameter tests on the query.
import {
  compileFullMatch,
  compileHttpMatch,
  stripQuery,
  type RequestFacts,
} from '../intentions/index.ts';
import type { HttpRoute, QueryMatch } from './types.ts';

function compileQuery(q: QueryMatch): (params: URLSearchParams) => boolean {
  if (q.exact !== undefined) {
    const x = q.exact;
    return (p) => p.getAll(q.name).includes(x);
  }
  if (q.regex !== undefined) {
    const re = compileFullMatch(q.regex, `query ${q.name}`);
    return (p) => p.getAll(q.name).some((v) => re.test(v));
  }
  const want = q.present ?? true;
  return (p) => p.has(q.name) === want;
}

/** A test of whether a request meets `route` (its `match` and its `query` tests). */
export function compileRoute(
  route: Pick<HttpRoute, 'match' | 'query'>,
): (r: RequestFacts) => boolean {
  const http = compileHttpMatch(route.match);
  const queries = (route.query ?? []).map(compileQuery);
  if (queries.length === 0) return (r) => http(r, stripQuery(r.path));
  return (r) => {
    if (!http(r, stripQuery(r.path))) return false;
    const at = r.path.indexOf('?');
    const params = new URLSearchParams(at === -1 ? '' : r.path.slice(at + 1));
    return queries.every((f) => f(params));
  };
}
