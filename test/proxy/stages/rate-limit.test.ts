// The inbound's token buckets (docs/proxy.md, "Rate limits"), on a clock the test moves.
import t from 'tap';
import type { RateLimitConfig } from '../../../lib/proxy-api/index.ts';
import { createRateLimiter } from '../../../proxy/stages/rate-limit.ts';

function limiter(initial: RateLimitConfig | undefined) {
  const box = { config: initial };
  const l = createRateLimiter(
    () => box.config,
    () => 'api',
  );
  /** Which of `n` requests at `now` are admitted ('+') or limited ('-'). */
  const run = (path: string, n: number, now: number): string =>
    Array.from({ length: n }, () => (l.admit(path, now) === null ? '+' : '-')).join('');
  return { l, box, run };
}

t.test('a bucket admits its burst, then refills at its rate', async (t) => {
  const { l, run } = limiter({ instance: { requestsPerSecond: 2, burst: 4 } });
  t.equal(run('/', 6, 0), '++++--', 'the burst');
  t.equal(run('/', 2, 400), '--', 'less than a token after 0.4 s');
  t.equal(run('/', 2, 500), '+-', 'one token after 0.5 s');
  t.equal(run('/', 6, 10_000), '++++--', 'never more than the burst');
  const err = l.admit('/', 10_000)!;
  t.equal(err.code, 'REMORA_E_PROXY_RATE_LIMITED');
  t.equal(err.details.retryAfterS, 1, 'half a second away: rounded up to 1 s');
  t.equal(
    err.message,
    'api admits 2 requests per second (burst 4; its service-defaults RateLimits); retry after 1 s',
  );
  const slow = limiter({ instance: { requestsPerSecond: 0.1, burst: 1 } });
  t.equal(slow.run('/', 1, 0), '+');
  t.equal(slow.l.admit('/', 2_500)!.details.retryAfterS, 8, '7.5 s to the next token');
});

t.test(
  'the first route that matches has its own bucket; the rest take the instance one',
  async (t) => {
    const { l, run } = limiter({
      instance: { requestsPerSecond: 1, burst: 2 },
      routes: [
        { pathExact: '/login', requestsPerSecond: 1, burst: 1 },
        { pathPrefix: '/api/', requestsPerSecond: 1, burst: 3 },
        { pathRegex: '/items/[0-9]+', requestsPerSecond: 1, burst: 1 },
        { pathPrefix: '/api/admin', requestsPerSecond: 1, burst: 100 },
      ],
    });
    t.equal(run('/login?next=/', 2, 0), '+-', 'exact, without the query');
    t.equal(run('/login/x', 1, 0), '+', 'exact is exact: the instance bucket');
    t.equal(run('/api/admin/users', 4, 0), '+++-', 'the first match wins over a later one');
    t.equal(run('/items/42', 2, 0), '+-', 'a regex of the whole path');
    t.equal(run('/items/42/parts', 2, 0), '+-', 'not a whole match: the instance bucket (1 left)');
    t.equal(l.admit('/api/x', 0)!.details.scope, '/api/*');
    t.equal(
      l.admit('/login', 0)!.message.includes('on /login'),
      true,
      'the message names the route',
    );
  },
);

t.test('routes alone limit only what they match', async (t) => {
  const { run } = limiter({ routes: [{ pathPrefix: '/slow', requestsPerSecond: 1, burst: 1 }] });
  t.equal(run('/fast', 50, 0), '+'.repeat(50));
  t.equal(run('/slow', 2, 0), '+-');
});

t.test('the same limits in a new snapshot keep their buckets; new limits start full', async (t) => {
  const { box, run } = limiter({ instance: { requestsPerSecond: 1, burst: 2 } });
  t.equal(run('/', 3, 0), '++-');
  box.config = { instance: { requestsPerSecond: 1, burst: 2 } };
  t.equal(run('/', 1, 0), '-', 'an equal config: still empty');
  box.config = { instance: { requestsPerSecond: 1, burst: 3 } };
  t.equal(run('/', 4, 0), '+++-', 'a changed one: a full new bucket');
  box.config = undefined;
  t.equal(run('/', 10, 0), '+'.repeat(10), 'none: nothing limited');
});
