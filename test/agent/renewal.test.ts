import t from 'tap';
import fc from 'fast-check';
import { renewalTime, signRetryDelay } from '../../agent/renewal.ts';

t.test('renewal falls between 60 % and 90 % of the lifetime for any random draw', async (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 2 ** 40 }),
      fc.integer({ min: 1, max: 2 ** 33 }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      (nb, life, r) => {
        const at = renewalTime(nb, nb + life, r);
        return at >= nb + Math.floor(life * 0.6) && at <= nb + Math.ceil(life * 0.9);
      },
    ),
  );
  t.equal(renewalTime(0, 1000, 0), 600);
  t.equal(renewalTime(0, 1000, 0.999999), 899);
});

t.test('sign retries back off and stay bounded', async (t) => {
  const delays = [0, 1, 2, 5, 20, 50].map((a) => signRetryDelay(a, () => 0.999));
  t.ok(delays.every((d, i) => i === 0 || d >= delays[i - 1]!));
  t.ok(delays.every((d) => d <= 30_000 && d >= 250));
});
