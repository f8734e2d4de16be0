import t from 'tap';
import { hasCode } from '../../../lib/errors/index.ts';
import {
  CONTROL_QUEUE_GROUP,
  headersWithTraceContext,
  subjects,
  traceContextFromHeaders,
} from '../../../lib/nats/index.ts';

t.test('subjects follow remora.v1.<dc>.… for every contract row', async (t) => {
  t.same(subjects('dc1'), {
    caRoots: 'remora.v1.dc1.ca.roots',
    caRootsChanged: 'remora.v1.dc1.ca.roots.changed',
    caSign: 'remora.v1.dc1.ca.sign',
    caRotate: 'remora.v1.dc1.ca.rotate',
    intentionsGet: 'remora.v1.dc1.intentions.get',
    intentionsChanged: 'remora.v1.dc1.intentions.changed',
    intentionsUpsert: 'remora.v1.dc1.intentions.upsert',
    intentionsDelete: 'remora.v1.dc1.intentions.delete',
    intentionsPolicy: 'remora.v1.dc1.intentions.policy',
    tokensCreate: 'remora.v1.dc1.tokens.create',
  });
  t.equal(CONTROL_QUEUE_GROUP, 'remora-control');
});

t.test('a datacenter name that would break the subject is refused', async (t) => {
  for (const dc of ['a.b', 'a*', '>', '', 'a b']) {
    t.throws(() => subjects(dc));
    try {
      subjects(dc);
    } catch (err) {
      t.ok(hasCode(err, 'REMORA_E_IDENTITY_INVALID'));
    }
  }
});

t.test(
  'trace context round-trips through NATS headers and malformed traceparents are dropped',
  async (t) => {
    const carrier = {
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      tracestate: 'congo=t61rcWkgMzE',
    };
    t.same(traceContextFromHeaders(headersWithTraceContext(carrier)), carrier);
    t.same(traceContextFromHeaders(headersWithTraceContext({ traceparent: 'garbage' })), {});
    t.same(traceContextFromHeaders(undefined), {});
  },
);
