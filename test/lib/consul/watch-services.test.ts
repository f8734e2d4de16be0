import t from 'tap';
import {
  createConsulClient,
  watchServices,
  type BlockingOptions,
  type ConsulClient,
} from '../../../lib/consul/index.ts';
import { createLogger } from '../../../lib/log/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import { startDevConsul } from '../../../lib/devconsul/index.ts';
import { startTestConsul } from '../../helpers/devconsul.ts';
import { freePort } from '../../helpers/nats.ts';

/** The client, with every catalog.servicesBlocking call recorded and its outcome tracked. */
function countingClient(c: ConsulClient): {
  client: ConsulClient;
  calls: Array<{ index: number | undefined; settled: boolean }>;
} {
  const calls: Array<{ index: number | undefined; settled: boolean }> = [];
  const client: ConsulClient = {
    ...c,
    catalog: {
      ...c.catalog,
      servicesBlocking(o?: BlockingOptions) {
        const call = { index: o?.index, settled: false };
        calls.push(call);
        const p = c.catalog.servicesBlocking(o);
        const settle = (): void => void (call.settled = true);
        p.then(settle, settle);
        return p;
      },
    },
  };
  return { client, calls };
}

const names = (s: Record<string, string[]> | undefined): string[] => Object.keys(s ?? {}).sort();

t.test('registrations and deregistrations are delivered; unchanged answers are not', async (t) => {
  const dc = await startTestConsul(t);
  const c = createConsulClient({ address: dc.url, timeoutMs: 2000 });
  t.teardown(() => c.close());
  const { client, calls } = countingClient(c);
  const seen: Array<Record<string, string[]>> = [];
  const w = watchServices(client, {
    waitSeconds: 30,
    rateRefillMs: 20,
    onChange: (s) => seen.push(s),
  });
  t.teardown(() => w.stop());
  await w.ready;
  t.same(w.current(), { consul: [] }, 'first answer');
  await waitFor('the watch to block', () => calls.length >= 2);
  t.ok((calls[1]?.index ?? 0) > 0, 'the second query blocks on the answer index');

  await c.agent.registerService({ name: 'web', id: 'web-1', port: 8080, tags: ['v1'] });
  await waitFor('web to be delivered', () => names(w.current()).includes('web'));
  t.same(w.current(), { consul: [], web: ['v1'] }, 'a new service arrives with its tags');

  // A second instance with the same tags moves the index but not the list.
  const before = { calls: calls.length, seen: seen.length };
  await c.agent.registerService({ name: 'web', id: 'web-2', port: 8081, tags: ['v1'] });
  await waitFor('the blocking query to wake', () => calls.length > before.calls);
  await waitFor('the next query to block', () => calls.at(-1)?.settled === false);
  t.equal(seen.length, before.seen, 'an unchanged answer is not re-delivered');

  await c.agent.registerService({ name: 'web', id: 'web-2', port: 8081, tags: ['v2'] });
  await waitFor('the new tag', () => (w.current()?.web ?? []).includes('v2'));
  t.same([...(w.current()?.web ?? [])].sort(), ['v1', 'v2'], 'a tag change is delivered');

  await c.agent.deregisterService('web-1');
  await waitFor('v1 to go', () => !(w.current()?.web ?? []).includes('v1'));
  t.same(w.current(), { consul: [], web: ['v2'] }, 'removing an instance drops its tags');
  await c.agent.deregisterService('web-2');
  await waitFor('web to leave', () => !names(w.current()).includes('web'));
  t.same(w.current(), { consul: [] }, 'a deregistration is delivered');
  const sorted = (s: Record<string, string[]>): Record<string, string[]> =>
    Object.fromEntries(Object.entries(s).map(([k, v]) => [k, [...v].sort()]));
  t.same(
    seen.map(sorted),
    [
      { consul: [] },
      { consul: [], web: ['v1'] },
      { consul: [], web: ['v1', 'v2'] },
      { consul: [], web: ['v2'] },
      { consul: [] },
    ],
    'each change delivered once',
  );
});

t.test('an outage keeps the last list with coded errors, and the watch resumes', async (t) => {
  const port = await freePort();
  let consul = await startDevConsul({ port });
  t.teardown(() => consul.close());
  const c = createConsulClient({ address: consul.url, timeoutMs: 2000 });
  t.teardown(() => c.close());
  await c.agent.registerService({ name: 'api', id: 'api-1', port: 7000 });
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    component: 'agent',
    level: 'warn',
    destination: {
      write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>),
    },
  });
  const errors: string[] = [];
  const w = watchServices(c, {
    waitSeconds: 30,
    random: () => 0,
    rateRefillMs: 50,
    logger,
    onChange: () => {},
    onError: (err) => {
      errors.push(err.code);
      t.same(names(w.current()), ['api', 'consul'], 'list kept while failing');
    },
  });
  t.teardown(() => w.stop());
  await w.ready;
  t.same(names(w.current()), ['api', 'consul']);

  await consul.close();
  await waitFor('two failed attempts', () => errors.length >= 2, 15_000);
  t.ok(
    errors.every((e) => e === 'REMORA_E_CONSUL_UNREACHABLE'),
    'errors say Consul is unreachable',
  );
  t.same(names(w.current()), ['api', 'consul'], 'the last known list is kept');
  t.match(lines[0], {
    level: 'warn',
    code: 'REMORA_E_CONSUL_UNREACHABLE',
    kept: 2,
    msg: /^watch of the catalog's service list failed; keeping the last known service list: /,
  });

  // A restarted catalog starts empty with a lower index.
  consul = await startDevConsul({ port });
  await c.agent.registerService({ name: 'db', id: 'db-1', port: 5432 });
  await waitFor(
    'the restarted catalog to be followed',
    () => names(w.current()).includes('db'),
    15_000,
  );
  t.same(names(w.current()), ['consul', 'db']);
});

t.test('stop() ends a watch blocked in a query promptly', async (t) => {
  const dc = await startTestConsul(t);
  const c = createConsulClient({ address: dc.url, timeoutMs: 2000 });
  t.teardown(() => c.close());
  const { client, calls } = countingClient(c);
  const w = watchServices(client, { waitSeconds: 300, rateRefillMs: 1, onChange: () => {} });
  await w.ready;
  await waitFor('the blocking call', () => calls.length >= 2);
  const started = Date.now();
  w.stop();
  await waitFor('the in-flight query to end', () => calls[1]?.settled, 2000);
  t.ok(Date.now() - started < 2000, 'ended well before the blocking wait');
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(calls.length, 2, 'no query after stop');
  t.same(w.current(), { consul: [] });
});
