import t from 'tap';
import fc from 'fast-check';
import { hasCode, RemoraError } from '../../../lib/errors/index.ts';
import {
  decodeCaRotateRequestV1,
  decodeIntentionsPolicyRequestV1,
  decodeEmptyRequestV1,
  decodeIntentionDeleteRequestV1,
  decodeIntentionUpsertRequestV1,
  decodeIntentionUpsertResponseV1,
  decodeIntentionsSnapshotV1,
  decodeRootsV1,
  decodeSignRequestV1,
  decodeSignResponseV1,
  decodeTokenCreateRequestV1,
  decodeTokenCreateResponseV1,
  encodeErrorReply,
  encodeMessage,
} from '../../../lib/nats/index.ts';

const enc = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
const goodSign = {
  v: 1,
  node: 'host-1.example',
  token: 'v1.abc.def',
  service: 'web',
  serviceId: 'web-1',
  csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
};

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return (err as RemoraError).code;
  }
}

const DECODERS = [
  decodeIntentionsPolicyRequestV1,
  decodeSignRequestV1,
  (d: Uint8Array) => decodeEmptyRequestV1(d),
  decodeIntentionUpsertRequestV1,
  decodeIntentionDeleteRequestV1,
  decodeTokenCreateRequestV1,
  decodeCaRotateRequestV1,
  decodeRootsV1,
  decodeSignResponseV1,
  decodeIntentionsSnapshotV1,
  decodeTokenCreateResponseV1,
  decodeIntentionUpsertResponseV1,
];

t.test('a well-formed sign request decodes to the same fields', async (t) => {
  t.same(decodeSignRequestV1(enc(goodSign)), goodSign);
  t.same(decodeSignRequestV1(JSON.stringify(goodSign)), goodSign);
});

t.test('sign request refusals carry a code and name the field', async (t) => {
  t.equal(
    codeOf(() => decodeSignRequestV1(new TextEncoder().encode('{nope'))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() => decodeSignRequestV1(enc([1, 2]))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() => decodeSignRequestV1(enc({ ...goodSign, v: 2 }))),
    'REMORA_E_NATS_VERSION_UNSUPPORTED',
  );
  t.equal(
    codeOf(() => decodeSignRequestV1(enc({ ...goodSign, v: '1' }))),
    'REMORA_E_NATS_VERSION_UNSUPPORTED',
  );
  for (const field of ['v', 'node', 'token', 'service', 'serviceId', 'csr']) {
    const o: Record<string, unknown> = { ...goodSign };
    delete o[field];
    try {
      decodeSignRequestV1(enc(o));
      t.fail(`missing ${field} accepted`);
    } catch (err) {
      t.ok(hasCode(err, 'REMORA_E_NATS_MESSAGE_INVALID'), `missing ${field} refused`);
      t.match((err as Error).message, field);
    }
  }
  t.equal(
    codeOf(() => decodeSignRequestV1(enc({ ...goodSign, extra: 1 }))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() => decodeSignRequestV1(enc({ ...goodSign, service: 'a b' }))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() => decodeSignRequestV1(enc({ ...goodSign, node: 5 }))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() => decodeSignRequestV1(enc({ ...goodSign, csr: 'x'.repeat(20000) }))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() => decodeSignRequestV1(new Uint8Array([0xff, 0xfe]))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
});

t.test('every decoder throws only coded errors for arbitrary bytes', async (t) => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 200 }),
      fc.integer({ min: 0, max: DECODERS.length - 1 }),
      (bytes, i) => {
        try {
          DECODERS[i]!(bytes);
        } catch (err) {
          return hasCode(err);
        }
        return true;
      },
    ),
    { numRuns: 2000 },
  );
  t.pass('no uncoded error escaped');
});

t.test('every decoder throws only coded errors for arbitrary JSON values', async (t) => {
  fc.assert(
    fc.property(fc.jsonValue(), fc.integer({ min: 0, max: DECODERS.length - 1 }), (value, i) => {
      try {
        DECODERS[i]!(enc(value));
      } catch (err) {
        return hasCode(err);
      }
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass('no uncoded error escaped');
});

t.test('sign requests with any one field mutated decode or fail with a coded error', async (t) => {
  const fields = Object.keys(goodSign);
  fc.assert(
    fc.property(fc.constantFrom(...fields), fc.jsonValue(), (field, value) => {
      const o = { ...goodSign, [field]: value };
      try {
        const d = decodeSignRequestV1(enc(o));
        return (
          typeof d[field as keyof typeof d] === typeof (goodSign as Record<string, unknown>)[field]
        );
      } catch (err) {
        return (
          hasCode(err, 'REMORA_E_NATS_MESSAGE_INVALID') ||
          hasCode(err, 'REMORA_E_NATS_VERSION_UNSUPPORTED')
        );
      }
    }),
    { numRuns: 1000 },
  );
  t.pass();
});

t.test('valid sign requests round-trip through encode and decode', async (t) => {
  const name = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/);
  fc.assert(
    fc.property(name, name, fc.string({ minLength: 1, maxLength: 100 }), (node, service, token) => {
      const req = { v: 1 as const, node, token, service, serviceId: `${service}-1`, csr: 'pem' };
      t.strictSame(decodeSignRequestV1(encodeMessage(req)), req);
    }),
    { numRuns: 200 },
  );
});

t.test('an error reply becomes a thrown error with the same code', async (t) => {
  const data = encodeErrorReply(new RemoraError('REMORA_E_CONTROL_TOKEN_EXPIRED', 'token expired'));
  t.same(JSON.parse(new TextDecoder().decode(data)), {
    v: 1,
    error: { code: 'REMORA_E_CONTROL_TOKEN_EXPIRED', message: 'token expired' },
  });
  t.equal(
    codeOf(() => decodeSignResponseV1(data)),
    'REMORA_E_CONTROL_TOKEN_EXPIRED',
  );
  t.equal(
    codeOf(() =>
      decodeRootsV1(enc({ v: 1, error: { code: 'REMORA_E_FROM_THE_FUTURE', message: 'x' } })),
    ),
    'REMORA_E_NATS_REMOTE_ERROR',
  );
});

t.test(
  'roots replies must name an active root that is in the list, and tolerate new fields',
  async (t) => {
    const id = 'a'.repeat(64);
    const ok = {
      v: 1,
      trustDomain: 'x.remora',
      activeRootId: id,
      roots: [{ id, pem: 'P', notAfter: '2030-01-01T00:00:00.000Z' }],
      future: true,
    };
    t.equal(decodeRootsV1(enc(ok)).activeRootId, id);
    t.equal(
      codeOf(() => decodeRootsV1(enc({ ...ok, activeRootId: 'b'.repeat(64) }))),
      'REMORA_E_NATS_MESSAGE_INVALID',
    );
    t.equal(
      codeOf(() => decodeRootsV1(enc({ ...ok, roots: [] }))),
      'REMORA_E_NATS_MESSAGE_INVALID',
    );
  },
);

t.test('intention upserts are validated with the intentions rules', async (t) => {
  const base = { v: 1, operatorToken: 'op' };
  t.same(
    decodeIntentionUpsertRequestV1(
      enc({ ...base, intention: { source: 'web', destination: 'api', action: 'allow' } }),
    ).intention,
    {
      source: 'web',
      destination: 'api',
      action: 'allow',
    },
  );
  t.equal(
    codeOf(() =>
      decodeIntentionUpsertRequestV1(
        enc({ ...base, intention: { source: 'web', destination: 'api' } }),
      ),
    ),
    'REMORA_E_INTENTIONS_INVALID',
  );
  t.equal(
    codeOf(() => decodeIntentionUpsertRequestV1(enc({ ...base }))),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
});

t.test('token create requests accept globs and refuse bad ones', async (t) => {
  const r = decodeTokenCreateRequestV1(
    enc({ v: 1, operatorToken: 'op', node: 'n1', services: ['web', 'api-*'], ttlSeconds: 3600 }),
  );
  t.same(r.services, ['web', 'api-*']);
  t.equal(
    codeOf(() =>
      decodeTokenCreateRequestV1(enc({ v: 1, operatorToken: 'op', node: 'n1', services: [] })),
    ),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() =>
      decodeTokenCreateRequestV1(enc({ v: 1, operatorToken: 'op', node: 'n1', services: ['a.b'] })),
    ),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() =>
      decodeTokenCreateRequestV1(
        enc({ v: 1, operatorToken: 'op', node: 'n1', services: ['a'], ttlSeconds: -1 }),
      ),
    ),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
});

t.test('an upsert reply may carry warnings; bad ones are refused with a code', async (t) => {
  const intention = { source: 'web', destination: 'api', action: 'allow' };
  const plain = decodeIntentionUpsertResponseV1(enc({ v: 1, revision: 3, intention }));
  t.equal(plain.warnings, undefined, 'a reply from a control without the field');
  const warned = decodeIntentionUpsertResponseV1(
    enc({ v: 1, revision: 3, intention, warnings: ['api serves tcp'] }),
  );
  t.same(warned.warnings, ['api serves tcp']);
  t.equal(
    codeOf(() =>
      decodeIntentionUpsertResponseV1(enc({ v: 1, revision: 3, intention, warnings: [7] })),
    ),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
  t.equal(
    codeOf(() =>
      decodeIntentionUpsertResponseV1(enc({ v: 1, revision: 3, intention, warnings: 'x' })),
    ),
    'REMORA_E_NATS_MESSAGE_INVALID',
  );
});
