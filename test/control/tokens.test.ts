import t from 'tap';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { createNodeToken, serviceMatchesGlobs, verifyNodeToken } from '../../control/index.ts';
import { hasCode } from '../../lib/errors/index.ts';

const secret = randomBytes(32);
const now = 1_800_000_000_000;

t.test('a token verifies for its node and carries its globs and expiry', async (t) => {
  const token = createNodeToken(secret, {
    node: 'n1',
    services: ['web', 'api-*'],
    expiresAt: now + 1000,
    issuedAt: now,
  });
  t.same(verifyNodeToken(secret, token, 'n1', now), {
    node: 'n1',
    services: ['web', 'api-*'],
    expiresAt: now + 1000,
    issuedAt: now,
  });
  t.ok(
    hasCode(
      catchIt(() => verifyNodeToken(secret, token, 'n1', now + 1000)),
      'REMORA_E_CONTROL_TOKEN_EXPIRED',
    ),
  );
  t.ok(
    hasCode(
      catchIt(() => verifyNodeToken(secret, token, 'n2', now)),
      'REMORA_E_CONTROL_TOKEN_INVALID',
    ),
  );
  t.ok(
    hasCode(
      catchIt(() => verifyNodeToken(randomBytes(32), token, 'n1', now)),
      'REMORA_E_CONTROL_TOKEN_INVALID',
    ),
  );
});

t.test('any change to a token makes it invalid', async (t) => {
  const token = createNodeToken(secret, {
    node: 'n1',
    services: ['web'],
    expiresAt: null,
    issuedAt: now,
  });
  fc.assert(
    fc.property(
      fc.nat({ max: token.length - 1 }),
      fc.string({ minLength: 1, maxLength: 1 }),
      (pos, ch) => {
        const mutated = token.slice(0, pos) + ch + token.slice(pos + 1);
        if (mutated === token) return true;
        const err = catchIt(() => verifyNodeToken(secret, mutated, 'n1', now));
        // base64url may decode two spellings of the last character to the same bytes
        return err === undefined
          ? Buffer.from(mutated.split('.')[2] ?? '', 'base64url').equals(
              Buffer.from(token.split('.')[2]!, 'base64url'),
            )
          : hasCode(err, 'REMORA_E_CONTROL_TOKEN_INVALID');
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});

t.test('service globs match whole names with * as a wildcard', async (t) => {
  t.ok(serviceMatchesGlobs('web', ['web']));
  t.notOk(serviceMatchesGlobs('web2', ['web']));
  t.ok(serviceMatchesGlobs('api-v2', ['api-*']));
  t.notOk(serviceMatchesGlobs('xapi-v2', ['api-*']));
  t.ok(serviceMatchesGlobs('anything', ['*']));
  t.notOk(serviceMatchesGlobs('web', []));
});

function catchIt(fn: () => unknown): unknown {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err;
  }
}
