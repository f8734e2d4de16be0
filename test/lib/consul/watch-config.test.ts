import t from 'tap';
import {
  createConsulClient,
  watchConfigEntries,
  type ConfigEntry,
} from '../../../lib/consul/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import { startTestConsul } from '../../helpers/devconsul.ts';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const protocols = (entries: ConfigEntry[] | undefined): Record<string, unknown> =>
  Object.fromEntries((entries ?? []).map((e) => [e.Name, e.Protocol]));

t.test('service-defaults writes and deletes are delivered; rewrites are not', async (t) => {
  const dc = await startTestConsul(t);
  const c = createConsulClient({ address: dc.url, timeoutMs: 2000 });
  t.teardown(() => c.close());
  const seen: ConfigEntry[][] = [];
  const w = watchConfigEntries(c, 'service-defaults', {
    waitSeconds: 30,
    rateRefillMs: 20,
    onChange: (e) => seen.push(e),
  });
  t.teardown(() => w.stop());
  await w.ready;
  t.same(w.current(), [], 'no entries at first');

  t.equal(await c.config.put({ Kind: 'service-defaults', Name: 'api', Protocol: 'http' }), true);
  await waitFor('api to be delivered', () => protocols(w.current()).api === 'http');
  await c.config.put({ Kind: 'service-defaults', Name: 'billing', Protocol: 'grpc' });
  await waitFor('billing', () => protocols(w.current()).billing === 'grpc');
  t.same(protocols(w.current()), { api: 'http', billing: 'grpc' });

  // the same content again moves the index, not the value
  const before = seen.length;
  await c.config.put({ Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
  await c.config.put({ Kind: 'service-defaults', Name: 'api', Protocol: 'http2' });
  await waitFor('the change', () => protocols(w.current()).api === 'http2');
  t.equal(seen.length, before + 1, 'only the real change was delivered');

  await c.config.delete('service-defaults', 'api');
  await waitFor('api to go', () => !('api' in protocols(w.current())));
  t.same(protocols(w.current()), { billing: 'grpc' });
  t.equal(
    await c.config.put({ Kind: 'service-defaults', Name: 'billing', Protocol: 'tcp' }, { cas: 0 }),
    false,
    'cas 0 does not overwrite',
  );
});

t.test('a malformed config list is a coded error', async (t) => {
  let body = '[{"Kind":"service-defaults","Name":"api","Protocol":"http"}]';
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-consul-index': '7' });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const c = createConsulClient({
    address: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    timeoutMs: 2000,
  });
  t.teardown(() => c.close());
  t.same(protocols((await c.config.list('service-defaults')).entries), { api: 'http' });
  body = '{"api":"http"}';
  t.ok(
    hasCode(
      await c.config.list('service-defaults').catch((e: unknown) => e),
      'REMORA_E_CONSUL_BAD_RESPONSE',
    ),
    `refused: ${body}`,
  );
  body = '[{"Name":"api"}]';
  t.ok(
    hasCode(
      await c.config.list('service-defaults').catch((e: unknown) => e),
      'REMORA_E_CONSUL_BAD_RESPONSE',
    ),
    `refused: ${body}`,
  );
  body = 'null';
  t.same((await c.config.list('service-defaults')).entries, [], 'null is an empty list');
});
