import t from 'tap';
import type { Test } from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createDiscovery,
  endpointsFromEntries,
  type Discovery,
  EMPTY_AFTER_OUTAGE_GRACE_MS,
} from '../../agent/discovery.ts';
import { dataPaths, writesSettled } from '../../agent/files.ts';
import type { ConnectEntry, ConsulPort } from '../../agent/ports.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { waitFor, type Clock } from '../../lib/util/index.ts';

function entry(id: string, port: number): ConnectEntry {
  return {
    Node: { Node: 'n1', Address: '10.0.0.1' },
    Service: {
      ID: `${id}-sidecar-proxy`,
      Port: port,
      Address: '',
      Proxy: { DestinationServiceID: id },
    },
  } as unknown as ConnectEntry;
}

/** A fake clock whose timers run when the test advances time. */
function fakeClock(): Clock & { advance(ms: number): void } {
  let now = 1_000_000;
  const timers = new Map<NodeJS.Timeout, { at: number; fn: () => void }>();
  let next = 1;
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const h = next++ as unknown as NodeJS.Timeout;
      timers.set(h, { at: now + ms, fn });
      return h;
    },
    clearTimeout: (h) => void timers.delete(h),
    advance(ms) {
      now += ms;
      for (const [h, tm] of [...timers]) {
        if (tm.at <= now) {
          timers.delete(h);
          tm.fn();
        }
      }
    },
  };
}

function setup(t: Test, cached?: ConnectEntry[]) {
  // the endpoint cache is written in the background: let it land before the directory goes
  // (registered before the fixture, so it runs first)
  t.teardown(() => writesSettled());
  const dir = t.testdir({});
  mkdirSync(join(dir, 'cache'), { recursive: true });
  if (cached)
    writeFileSync(
      dataPaths(dir).cache('endpoints-api'),
      JSON.stringify(endpointsFromEntries(cached)),
    );
  let handlers: Parameters<ConsulPort['watchConnect']>[1] | undefined;
  const consul = {
    watchConnect: (_s: string, h: Parameters<ConsulPort['watchConnect']>[1]) => {
      handlers = h;
      return { stop() {} };
    },
  } as unknown as ConsulPort;
  const clock = fakeClock();
  const changes: number[] = [];
  const d = createDiscovery({
    consul,
    paths: dataPaths(dir),
    clock,
    logger: createSilentLogger(),
    onChange: () => changes.push(d.endpoints('api').length),
  });
  d.acquire('api', 'web-1');
  t.teardown(() => d.stop());
  return { d, clock, changes, consul: () => handlers!, dir };
}

t.test(
  'an empty answer right after a Consul outage keeps the last endpoints for the grace period',
  async (t) => {
    const { d, clock, changes, consul } = setup(t);
    consul().onChange([entry('api-1', 21001), entry('api-2', 21002)]);
    t.equal(d.endpoints('api').length, 2);
    consul().onError(new Error('connection refused'));
    consul().onChange([]);
    t.equal(d.endpoints('api').length, 2, 'still the last known two');
    clock.advance(EMPTY_AFTER_OUTAGE_GRACE_MS - 1);
    t.equal(d.endpoints('api').length, 2, 'held until the grace ends');
    clock.advance(1);
    t.equal(d.endpoints('api').length, 0, 'Consul still says none: applied');
    t.same(changes, [2, 0]);
  },
);

t.test('a non-empty answer during the grace is applied at once and ends it', async (t) => {
  const { d, clock, changes, consul } = setup(t);
  consul().onChange([entry('api-1', 21001), entry('api-2', 21002)]);
  consul().onError(new Error('reset'));
  consul().onChange([]);
  consul().onChange([entry('api-2', 21002)]);
  t.same(
    d.endpoints('api').map((e) => e.id),
    ['api-2'],
  );
  clock.advance(EMPTY_AFTER_OUTAGE_GRACE_MS * 2);
  t.same(
    d.endpoints('api').map((e) => e.id),
    ['api-2'],
    'the stale timer does not empty it',
  );
  t.same(changes, [2, 1]);
});

t.test('without an outage, an empty answer is applied immediately', async (t) => {
  const { d, consul } = setup(t);
  consul().onChange([entry('api-1', 21001)]);
  consul().onChange([]);
  t.equal(d.endpoints('api').length, 0);
});

t.test(
  "a restarted agent's first empty answer keeps the cached endpoints for the grace period",
  async (t) => {
    const { d, clock, changes, consul } = setup(t, [entry('api-1', 21001), entry('api-2', 21002)]);
    t.equal(d.endpoints('api').length, 2, 'the cached set is known before Consul answers');
    consul().onChange([]);
    t.equal(d.endpoints('api').length, 2, 'held: the TTL checks are being re-registered');
    consul().onChange([entry('api-1', 21001)]);
    t.same(
      d.endpoints('api').map((e) => e.id),
      ['api-1'],
      'the re-registered instance is applied at once',
    );
    consul().onChange([]);
    t.equal(d.endpoints('api').length, 0, 'later empty answers apply at once');
    clock.advance(EMPTY_AFTER_OUTAGE_GRACE_MS * 2);
    t.same(changes, [1, 0]);
  },
);

t.test(
  'a restarted agent whose Consul still lists none applies it when the grace ends',
  async (t) => {
    const { d, clock, consul } = setup(t, [entry('api-1', 21001)]);
    consul().onChange([]);
    clock.advance(EMPTY_AFTER_OUTAGE_GRACE_MS);
    t.equal(d.endpoints('api').length, 0);
  },
);

/** A discovery over the same data directory whose Consul never answers (a restarted agent). */
function restarted(t: Test, dir: string): Discovery {
  const d = createDiscovery({
    consul: { watchConnect: () => ({ stop() {} }) } as unknown as ConsulPort,
    paths: dataPaths(dir),
    clock: fakeClock(),
    logger: createSilentLogger(),
    onChange: () => undefined,
  });
  t.teardown(() => d.stop());
  d.acquire('api', 'web-1');
  return d;
}

t.test("a service's protocol: from its sidecars, kept at zero instances, cached", async (t) => {
  const withProtocol = (id: string, port: number, protocol: string): ConnectEntry => {
    const e = entry(id, port);
    return { ...e, Service: { ...e.Service, Proxy: { ...e.Service.Proxy, Config: { protocol } } } };
  };
  const { d, changes, consul, dir } = setup(t);
  t.equal(d.protocol('api'), null, 'unknown before Consul lists a sidecar');
  consul().onChange([withProtocol('api-1', 21001, 'http')]);
  t.equal(d.protocol('api'), 'http');
  consul().onChange([withProtocol('api-1', 21001, 'grpc')]);
  t.equal(d.protocol('api'), 'grpc', 'a changed registration');
  t.same(changes, [1, 1], 'a protocol change alone is reported');
  consul().onChange([]);
  t.equal(d.protocol('api'), 'grpc', 'scaled to zero: kept, so its listener stays');
  await waitFor('the protocol cached', () => {
    try {
      return readFileSync(dataPaths(dir).cache('protocol-api'), 'utf8') === 'grpc';
    } catch {
      return false;
    }
  });
  const again = restarted(t, dir);
  t.equal(again.protocol('api'), 'grpc', 'a restarted agent knows it before Consul answers');
});

t.test('a service linked by terminating gateways is known as behind them', async (t) => {
  const gateway = (id: string, port: number): ConnectEntry => {
    const e = entry(id, port);
    return { ...e, Service: { ...e.Service, Kind: 'terminating-gateway' } };
  };
  const { d, consul } = setup(t);
  t.notOk(d.behindGateway('api'), 'not before Consul answers');
  consul().onChange([entry('api-1', 21001)]);
  t.notOk(d.behindGateway('api'), 'its own sidecars');
  consul().onChange([gateway('tgw-1', 8443), gateway('tgw-2', 8444)]);
  t.ok(d.behindGateway('api'), 'every entry a terminating gateway');
  consul().onChange([]);
  t.notOk(d.behindGateway('api'), 'none listed');
  t.notOk(d.behindGateway('web'), 'a service not followed');
});

t.test(
  'sidecars registered without a protocol: listed, protocol left to Consul config',
  async (t) => {
    const { d, changes, consul, dir } = setup(t);
    t.equal(d.listed('api'), false, 'no sidecar seen yet');
    consul().onChange([entry('api-1', 21001)]);
    t.equal(d.listed('api'), true);
    t.equal(d.protocol('api'), null, 'the registration names none');
    t.same(changes, [1]);
    consul().onChange([]);
    t.equal(d.listed('api'), true, 'scaled to zero: still listed');
    await waitFor('the cache', () => {
      try {
        return readFileSync(dataPaths(dir).cache('protocol-api'), 'utf8') === '';
      } catch {
        return false;
      }
    });
    const again = restarted(t, dir);
    t.equal(again.listed('api'), true, 'a restarted agent knows it was listed');
    t.equal(again.protocol('api'), null);
  },
);

t.test(
  'subset filters read the entries, which the cache keeps for a restarted agent',
  async (t) => {
    const withMeta = (id: string, port: number, version: string, output = ''): ConnectEntry => {
      const e = entry(id, port) as ConnectEntry & { Checks: object[] };
      e.Service.Meta = { version };
      e.Service.Tags = [version];
      e.Checks = [{ CheckID: `ready:${id}`, Status: 'passing', Output: output, ModifyIndex: port }];
      return e;
    };
    const v2 = (e: unknown) =>
      (e as ConnectEntry).Service.Meta?.version === 'v2' &&
      (e as { Checks: { CheckID: string; Output?: string }[] }).Checks[0]?.Output === undefined;
    const { d, changes, consul, dir } = setup(t);
    consul().onChange([withMeta('api-1', 21001, 'v1'), withMeta('api-2', 21002, 'v2')]);
    t.same(
      d.select('api', v2).map((e) => e.id),
      ['api-2'],
      'only v2, and the check output is not kept',
    );
    t.equal(d.endpoints('api').length, 2, 'every instance stays the upstream’s own set');
    consul().onChange([withMeta('api-1', 21001, 'v1', 'ok'), withMeta('api-2', 21002, 'v2', 'ok')]);
    t.same(changes, [2], 'a new check output is no change');
    consul().onChange([withMeta('api-1', 21001, 'v2'), withMeta('api-2', 21002, 'v2')]);
    t.same(changes, [2, 2], 'a changed meta is, though the endpoints are the same');
    t.same(
      d.select('api', v2).map((e) => e.id),
      ['api-1', 'api-2'],
    );
    await writesSettled();
    const again = createDiscovery({
      consul: { watchConnect: () => ({ stop() {} }) } as unknown as ConsulPort,
      paths: dataPaths(dir),
      clock: fakeClock(),
      logger: createSilentLogger(),
      onChange() {},
    });
    again.acquire('api', 'web-1');
    t.teardown(() => again.stop());
    t.ok(again.settled('api'), 'settled from the cache');
    t.same(
      again.select('api', v2).map((e) => e.id),
      ['api-1', 'api-2'],
      'the cached entries carry what filters read',
    );
    t.notMatch(readFileSync(dataPaths(dir).cache('endpoints-api'), 'utf8'), /ModifyIndex|Output/);
  },
);

t.test('an endpoint cache written by an older agent (endpoints only) is still read', async (t) => {
  const { d } = setup(t, [entry('api-1', 21001)]);
  t.ok(d.settled('api'));
  t.same(
    d.endpoints('api').map((e) => e.id),
    ['api-1'],
  );
  t.same(
    d.select('api', () => false).map((e) => e.id),
    ['api-1'],
    'no entries to filter until Consul answers: every endpoint',
  );
});
