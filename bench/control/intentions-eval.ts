// Cost of one intention decision as the proxy makes it: per connection (L4) and per HTTP request
// (L7 permissions), over a snapshot of 500 L4 intentions plus one L7 intention. Bounded loops.
//   node bench/control/intentions-eval.ts
import { performance } from 'node:perf_hooks';
import { evaluateIntentions, type IntentionsSnapshot } from '../../lib/intentions/index.ts';

const snapshot: IntentionsSnapshot = {
  revision: 1,
  defaultPolicy: 'deny',
  auditMode: false,
  intentions: [
    ...Array.from({ length: 500 }, (_, i) => ({
      source: `svc-${i}`,
      destination: 'api',
      action: 'allow' as const,
    })),
    {
      source: 'web',
      destination: 'api',
      permissions: [
        { action: 'deny', http: { pathPrefix: '/admin' } },
        { action: 'allow', http: { pathRegex: '/v[0-9]+/items/[a-z]+', methods: ['GET'] } },
        { action: 'allow', http: { pathPrefix: '/', header: [{ name: 'x-user', present: true }] } },
      ],
    },
  ],
};
const request = { method: 'GET', path: '/v2/items/abc?x=1', headers: { 'x-user': 'a' } };
const N = 1_000_000;

function nsPer(fn: () => unknown): number {
  for (let i = 0; i < 100_000; i++) fn();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) fn();
  return ((performance.now() - t0) * 1e6) / N;
}

const l7 = nsPer(() =>
  evaluateIntentions(snapshot, { source: 'web', destination: 'api', request }),
);
const l4 = nsPer(() => evaluateIntentions(snapshot, { source: 'svc-7', destination: 'api' }));
process.stdout.write(
  `${JSON.stringify({ intentions: snapshot.intentions.length, l7NsPerRequest: Math.round(l7), l4NsPerConnection: Math.round(l4) })}\n`,
);
