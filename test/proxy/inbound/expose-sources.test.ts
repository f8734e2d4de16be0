// Who an exposed check listener serves: loopback in any spelling, and the listed addresses.
import t from 'tap';
import { sourceAllowed } from '../../../proxy/inbound/expose.ts';

t.test('loopback is always served, in IPv4, IPv6 and IPv4-mapped form', async (t) => {
  for (const a of ['127.0.0.1', '127.0.0.53', '::1', '::ffff:127.0.0.1'])
    t.ok(sourceAllowed(a, []), a);
});

t.test("the Consul agent's address is served in either form; others are not", async (t) => {
  t.ok(sourceAllowed('10.0.0.5', ['10.0.0.5']));
  t.ok(sourceAllowed('::ffff:10.0.0.5', ['10.0.0.5']), 'a dual-stack listener sees it mapped');
  t.ok(sourceAllowed('FD00::5', ['fd00::5']), 'IPv6 compared without case');
  t.notOk(sourceAllowed('10.0.0.6', ['10.0.0.5']));
  t.notOk(sourceAllowed('10.0.0.50', ['10.0.0.5']), 'no prefix match');
  t.notOk(sourceAllowed('10.0.0.5', []), 'an empty list serves loopback only');
  t.notOk(sourceAllowed(undefined, ['10.0.0.5']), 'a socket already gone has no address');
});
