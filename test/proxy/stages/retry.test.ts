import t from 'tap';
import { RemoraError } from '../../../lib/errors/index.ts';
import { RetryBudget, createRetryStage } from '../../../proxy/stages/retry.ts';
import { BodyStream } from '../../../proxy/http/body.ts';
import {
  newRequestContext,
  type ProxyRequest,
  type ProxyResponse,
} from '../../../proxy/stages/types.ts';

let now = 0;
const clock = { now: () => now, setTimeout, clearTimeout };

function req(method: string, body: ProxyRequest['body'] = null, bodyLength = -1): ProxyRequest {
  return {
    method,
    target: '/',
    host: 'x',
    versionMinor: 1,
    headers: [],
    body,
    bodyLength,
    upgrade: null,
    ctx: newRequestContext('outbound', 'web', 'api'),
  };
}

const ok: ProxyResponse = { status: 200, reason: 'OK', headers: [], body: null, bodyLength: 0 };
const bad: ProxyResponse = { status: 503, reason: 'x', headers: [], body: null, bodyLength: 0 };

function stage(budget = new RetryBudget(0.2, 10), maxRetries = 2) {
  const reasons: string[] = [];
  return {
    reasons,
    s: createRetryStage({
      clock,
      budget,
      maxRetries: () => maxRetries,
      maxBufferedBodyBytes: () => 1024,
      onRetry: (r) => reasons.push(r),
    }),
  };
}

t.test('connect failures are retried for any method', async (t) => {
  const { s, reasons } = stage();
  let n = 0;
  const h = s(async () => {
    if (n++ === 0) throw new RemoraError('REMORA_E_PROXY_CONNECT_FAILED', 'refused');
    return ok;
  });
  const r = req('POST', Buffer.from('x'), 1);
  t.equal((await h(r)).status, 200);
  t.same(reasons, ['connect']);
  t.equal(r.ctx.retries, 1);
});

t.test('resets and 5xx are retried only for idempotent methods', async (t) => {
  const { s } = stage();
  let n = 0;
  const reset = s(async () => {
    n++;
    throw new RemoraError('REMORA_E_PROXY_UPSTREAM_RESET', 'reset');
  });
  await t.rejects(reset(req('POST')), { code: 'REMORA_E_PROXY_UPSTREAM_RESET' });
  t.equal(n, 1, 'POST not retried after a reset');
  n = 0;
  const fiveHundred = s(async () => (n++ === 0 ? bad : ok));
  t.equal((await fiveHundred(req('GET'))).status, 200);
  n = 0;
  t.equal((await fiveHundred(req('POST'))).status, 503, 'POST gets the 503');
});

t.test("a route's statuses are retried too, for idempotent methods only", async (t) => {
  const { s, reasons } = stage();
  const busy: ProxyResponse = { ...bad, status: 429 };
  let n = 0;
  const h = s(async () => (n++ === 0 ? busy : ok));
  const routed = (method: string) => {
    const r = req(method);
    r.ctx.route = { retryOn: [429] };
    return r;
  };
  t.equal((await h(routed('GET'))).status, 200, 'a GET answered 429 is retried');
  t.same(reasons, ['status_route']);
  n = 0;
  t.equal((await h(routed('POST'))).status, 429, 'a POST is not');
  n = 0;
  t.equal((await h(req('GET'))).status, 429, 'nor a GET without the route');
  n = 0;
  const notImpl = s(async () => (n++ === 0 ? { ...bad, status: 501 } : ok));
  t.equal((await notImpl(req('GET'))).status, 501, '501 is an answer, never retried');
});

t.test('a small streaming body is buffered so it can be replayed', async (t) => {
  const { s } = stage();
  const bodies: string[] = [];
  let n = 0;
  const h = s(async (r) => {
    bodies.push(Buffer.isBuffer(r.body) ? r.body.toString() : 'stream');
    return n++ === 0 ? bad : ok;
  });
  const body = new BodyStream();
  const r = req('PUT', body, 5);
  const p = h(r);
  body.push(Buffer.from('hel'));
  body.push(Buffer.from('lo'));
  body.end(null);
  t.equal((await p).status, 200);
  t.same(bodies, ['hello', 'hello']);
});

t.test('the budget caps retries at ratio × requests + minimum per second', async (t) => {
  const budget = new RetryBudget(0.5, 1);
  now = 10_000;
  for (let i = 0; i < 4; i++) budget.recordRequest(now);
  let granted = 0;
  while (budget.tryRetry(now)) granted++;
  t.equal(granted, 3, '1 + 0.5 × 4');
  now += 1500; // the window moved on
  t.ok(budget.tryRetry(now));
});
