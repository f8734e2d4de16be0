import t from 'tap';
import {
  createConsulClient,
  watchConnect,
  type ConsulClient,
  type ServiceEntry,
} from '../../../lib/consul/index.ts';
import { RemoraError, type ErrorCode } from '../../../lib/errors/index.ts';
import { backoffDelay, waitFor, type Clock } from '../../../lib/util/index.ts';
import { startDevConsul } from '../../../lib/devconsul/index.ts';
import { freePort } from '../../helpers/nats.ts';

async function registerReady(
  c: ConsulClient,
  name: string,
  id: string,
  port: number,
): Promise<void> {
  await c.agent.registerService({
    name,
    id,
    port,
    connect: {
      sidecar_service: { port: port + 1, checks: [{ CheckID: `${id}-ready`, ttl: '60s' }] },
    },
  });
  await c.agent.updateTtl(`${id}-ready`, 'passing');
}

const ids = (e: ServiceEntry[] | undefined): string[] => (e ?? []).map((x) => x.Service.ID).sort();

t.test(
  'the watch keeps the last endpoints through an outage and follows a restarted catalog',
  async (t) => {
    // A real catalog on a fixed loopback port, stopped and started again (empty, lower index)
    // like a restarted Consul agent. (`startDevConsulProcess` does the same with a child process.)
    const port = await freePort();
    let consul = await startDevConsul({ port });
    t.teardown(() => consul.close());
    const c = createConsulClient({ address: consul.url, timeoutMs: 2000 });
    t.teardown(() => c.close());
    await registerReady(c, 'api', 'api-1', 7000);
    await registerReady(c, 'api', 'api-2', 7100);
    const errors: string[] = [];
    const seen: string[][] = [];
    const w = watchConnect(c, 'api', {
      waitSeconds: 30,
      random: () => 0,
      rateRefillMs: 50,
      onChange: (e) => seen.push(ids(e)),
      onError: (err) => errors.push(err.code),
    });
    t.teardown(() => w.stop());
    await w.ready;
    t.same(ids(w.current()), ['api-1-sidecar-proxy', 'api-2-sidecar-proxy']);

    // A change while blocking arrives through the blocking query.
    await c.agent.updateTtl('api-2-ready', 'critical', 'draining');
    await waitFor('api-2 to leave the passing set', () => ids(w.current()).length === 1);
    t.same(ids(w.current()), ['api-1-sidecar-proxy']);

    // Outage: Consul goes away; the endpoints stay and the errors are coded.
    await consul.close();
    await waitFor('two failed attempts', () => errors.length >= 2, 15_000);
    t.ok(
      errors.every((e) => e === 'REMORA_E_CONSUL_UNREACHABLE'),
      'errors say Consul is unreachable',
    );
    t.same(ids(w.current()), ['api-1-sidecar-proxy'], 'last known endpoints are kept');

    // A restarted catalog starts empty with a lower index; the agent re-registers.
    consul = await startDevConsul({ port });
    await registerReady(c, 'api', 'api-3', 7200);
    await waitFor(
      'the restarted catalog to be followed',
      () => ids(w.current())[0] === 'api-3-sidecar-proxy',
      15_000,
    );
    t.same(ids(w.current()), ['api-3-sidecar-proxy']);
    t.same(seen[0], ['api-1-sidecar-proxy', 'api-2-sidecar-proxy'], 'first delivery');
  },
);

/** A clock whose timers fire at once but record what they were asked to wait. */
function recordingClock(): Clock & { waits: number[] } {
  let now = 0;
  const waits: number[] = [];
  return {
    waits,
    now: () => now,
    setTimeout(fn, ms) {
      waits.push(ms);
      now += ms;
      return setTimeout(fn, 0);
    },
    clearTimeout: (h) => clearTimeout(h),
  };
}

function entry(id: string): ServiceEntry {
  return {
    Node: {
      ID: 'n',
      Node: 'n',
      Address: '127.0.0.1',
      Datacenter: 'dc1',
      TaggedAddresses: {},
      Meta: {},
    },
    Service: {
      ID: id,
      Service: 'api-sidecar-proxy',
      Tags: [],
      Meta: {},
      Port: 21000,
      Address: '',
      Weights: { Passing: 1, Warning: 1 },
      EnableTagOverride: false,
    },
    Checks: [],
  };
}

/** A scripted client: each health.connect call takes the next step. */
function scriptedClient(
  steps: Array<{ index: number; ids: string[] } | ErrorCode>,
  calls: Array<number | undefined>,
): ConsulClient {
  let i = 0;
  const client = {
    health: {
      connect(_service: string, o: { index?: number; signal?: AbortSignal } = {}) {
        calls.push(o.index);
        const step = steps[Math.min(i, steps.length - 1)];
        i += 1;
        if (i > steps.length) {
          // Past the script: block until stopped.
          return new Promise((_resolve, reject) =>
            o.signal?.addEventListener('abort', () => reject(new Error('aborted'))),
          );
        }
        if (typeof step === 'string')
          return Promise.reject(new RemoraError(step, 'scripted failure'));
        return Promise.resolve({ index: step!.index, entries: step!.ids.map(entry) });
      },
    },
  };
  return client as unknown as ConsulClient;
}

t.test(
  'an index that goes backwards restarts the loop from 0, and 0 is never sent as a blocking index',
  async (t) => {
    const calls: Array<number | undefined> = [];
    const client = scriptedClient(
      [
        { index: 10, ids: ['a'] },
        { index: 4, ids: ['a'] }, // went backwards (snapshot restore)
        { index: 0, ids: ['b'] }, // a buggy 0
        { index: 7, ids: ['b'] },
      ],
      calls,
    );
    const delivered: string[][] = [];
    const w = watchConnect(client, 'api', {
      clock: recordingClock(),
      rateRefillMs: 1,
      onChange: (e) => delivered.push(ids(e)),
    });
    await waitFor('the script to run out', () => calls.length >= 5);
    w.stop();
    t.same(
      calls.slice(0, 5),
      [undefined, 10, undefined, 1, 7],
      'indexes sent: none, 10, reset, 1, 7',
    );
    t.same(delivered, [['a'], ['b']], 'unchanged answers are not re-delivered');
  },
);

t.test('failures back off with jitter, keep the endpoints, and never empty the set', async (t) => {
  const calls: Array<number | undefined> = [];
  const client = scriptedClient(
    [
      { index: 5, ids: ['a', 'b'] },
      'REMORA_E_CONSUL_UNREACHABLE',
      'REMORA_E_CONSUL_UNREACHABLE',
      'REMORA_E_CONSUL_REQUEST_FAILED',
      { index: 9, ids: ['a', 'b'] },
    ],
    calls,
  );
  const clock = recordingClock();
  const errors: string[] = [];
  let emptied = false;
  const w = watchConnect(client, 'api', {
    clock,
    random: () => 0.5,
    rateRefillMs: 1,
    onChange: (e) => (emptied ||= e.length === 0),
    onError: (e) => {
      errors.push(e.code);
      t.same(ids(w.current()), ['a', 'b'], 'endpoints kept while failing');
    },
  });
  await waitFor('the script to run out', () => calls.length >= 6);
  w.stop();
  t.same(errors, [
    'REMORA_E_CONSUL_UNREACHABLE',
    'REMORA_E_CONSUL_UNREACHABLE',
    'REMORA_E_CONSUL_REQUEST_FAILED',
  ]);
  const expected = [0, 1, 2].map((n) =>
    backoffDelay(n, { baseMs: 250, maxMs: 30_000, random: () => 0.5 }),
  );
  for (const d of expected) t.ok(clock.waits.includes(d), `backed off ${d} ms`);
  t.same(
    calls.slice(0, 6),
    [undefined, 5, undefined, undefined, undefined, 9],
    'after a failure the next query does not block',
  );
  t.notOk(emptied, 'never delivered an empty set');
});

t.test('stop() ends a watch that is blocked in a query', async (t) => {
  const calls: Array<number | undefined> = [];
  const client = scriptedClient([{ index: 3, ids: ['a'] }], calls);
  const w = watchConnect(client, 'api', { onChange: () => {}, rateRefillMs: 1 });
  await w.ready;
  await waitFor('the blocking call', () => calls.length >= 2);
  w.stop();
  t.same(ids(w.current()), ['a']);
});
