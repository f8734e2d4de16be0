// Certificate signing on one core, without the network: lib/pki `issueLeaf` (CSR parse and
// self-signature check, leaf build, native RSA signature) in a loop for a bounded time, over a
// few CSRs made beforehand (CSRs are the agent's work). Prints one JSON line.
//   node bench/control/sign-worker.ts '{"seconds":3}'
import { performance } from 'node:perf_hooks';
import { createTrustDomain } from '../../lib/identity/index.ts';
import { createCsr, createRootCa, generateKeyPair, issueLeaf } from '../../lib/pki/index.ts';
import { spiffeFor } from '../lib/certs.ts';
import { reportChildError } from '../lib/child.ts';

const { seconds } = {
  seconds: 3,
  ...(JSON.parse(process.argv[2] ?? '{}') as { seconds?: number }),
};
try {
  const trustDomain = createTrustDomain();
  const now = Date.now();
  const ca = createRootCa({ trustDomain, ttlMs: 3600_000, now });
  const csrs = Array.from({ length: 8 }, (_, i) => {
    const k = generateKeyPair();
    const spiffeId = spiffeFor(trustDomain, `svc-${i}`);
    return {
      spiffeId,
      csrPem: createCsr({ keyPem: k.keyPem, publicKeyPem: k.publicKeyPem, spiffeId }),
    };
  });
  // warm-up (JIT), not recorded
  for (let i = 0; i < 20; i++) issueLeaf({ ca, ...csrs[i % csrs.length]!, ttlMs: 3600_000, now });
  const lat: number[] = [];
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let n = 0;
  while (performance.now() < end && n < 1_000_000) {
    const s = performance.now();
    issueLeaf({ ca, ...csrs[n % csrs.length]!, ttlMs: 3600_000, now });
    lat.push(performance.now() - s);
    n++;
  }
  const elapsed = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const p = (q: number): number =>
    lat[Math.min(lat.length - 1, Math.ceil(q * lat.length) - 1)] ?? Number.NaN;
  process.stdout.write(
    `${JSON.stringify({ certs: n, seconds: elapsed, perSecond: n / elapsed, p50Ms: p(0.5), p99Ms: p(0.99) })}\n`,
  );
} catch (err) {
  reportChildError(err);
}
