// Catalog scenario (issue 3's figures) and its growth from 100 to N services: the embedded catalog
// (lib/devconsul) in its own process on the SUT core, driven over Consul's HTTP API from the
// loadgen core. Each instance is registered as an agent registers it: a TTL check (passing) and a
// `connect.sidecar_service` whose alias check follows the instance, so `health/connect/<svc>?passing`
// lists the sidecars of healthy instances.
//  - non-blocking `health/connect/<svc>?passing` latency (sequential requests, random services);
//  - blocking wake-up: a watcher parked on `?index=<X>&wait=60s` for one service while other
//    watchers are parked on other services; the time from the health change (TTL check → fail)
//    to the watcher's answer;
//  - catalog RSS and idle CPU at each size.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { num } from '../lib/options.ts';
import { describeForeign, startForeignMeter, type ForeignShare } from '../lib/foreign.ts';
import { clockTicksPerSecond, readCpuTicks, readRssKb } from '../lib/proc-stats.ts';
import { percentileSorted } from '../lib/stats.ts';
import type { ScenarioContext, ScenarioReport } from '../lib/scenario.ts';
import { createConsulHttp, type ConsulHttp } from '../control/consul-http.ts';
import { startDevConsulProcess } from '../control/run-control.ts';

const INSTANCES = 3;
const PARKED_WATCHERS = 100;
const WAKE_ROUNDS = 40;
const NONBLOCKING_REQUESTS = 500;

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(v < 10 ? 2 : 1) : '–');

export function definition(svc: number, inst: number): object {
  const id = `svc-${svc}-${inst}`;
  return {
    ID: id,
    Name: `svc-${svc}`,
    Address: '127.0.0.1',
    Port: 10_000 + svc,
    Meta: { 'remora-node': 'bench-node' },
    Check: { CheckID: `check-${id}`, Name: 'app alive', TTL: '30m', Status: 'passing' },
    Connect: {
      SidecarService: {
        Port: 30_000 + svc * INSTANCES + inst,
        Checks: [{ Name: 'follows the instance', AliasService: id }],
      },
    },
  };
}

/** Registers services [from, to) (all instances of a service before the next); stops at the deadline. */
export async function registerRange(
  consul: ConsulHttp,
  from: number,
  to: number,
  deadline: number,
): Promise<{ seconds: number; reached: number }> {
  const t0 = performance.now();
  let reached = from;
  let next = from;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < to && performance.now() < deadline) {
        const s = next++;
        for (let i = 0; i < INSTANCES; i++) await consul.register(definition(s, i));
        reached = Math.max(reached, s + 1);
      }
    }),
  );
  return { seconds: (performance.now() - t0) / 1000, reached: Math.min(reached, next) };
}

interface SizeResult {
  services: number;
  registerS: number;
  rssMb: number;
  idleCpuPct: number;
  nonBlocking: number[];
  wake: number[];
  wakeFailures: number;
  listed: number;
  foreign: ForeignShare;
}

async function measureSize(
  ctx: ScenarioContext,
  consul: ConsulHttp,
  pids: number[],
  services: number,
  registerS: number,
): Promise<SizeResult> {
  const rnd = (n: number): number => Math.floor(Math.random() * n);
  // sanity: a service lists its 3 healthy sidecars
  const probe = await consul.get('/v1/health/connect/svc-0?passing');
  const listed = Array.isArray(probe.body) ? probe.body.length : -1;
  if (listed !== INSTANCES) {
    throw new Error(
      `health/connect/svc-0?passing lists ${listed} entries, expected ${INSTANCES} (HTTP ${probe.status}: ${JSON.stringify(probe.body).slice(0, 200)})`,
    );
  }
  // idle CPU of the catalog (nothing asks it anything)
  const c0 = readCpuTicks(pids).total;
  await sleep(2000);
  const idleCpuPct = ((readCpuTicks(pids).total - c0) / clockTicksPerSecond() / 2) * 100;
  const rssMb = readRssKb(pids) / 1024;

  const meter = startForeignMeter(ctx.pinning, () => ctx.registry.pidsOn('sut'));
  const nonBlocking: number[] = [];
  for (let i = 0; i < NONBLOCKING_REQUESTS; i++) {
    const t = performance.now();
    const r = await consul.get(`/v1/health/connect/svc-${rnd(services)}?passing`);
    if (r.status === 200) nonBlocking.push(performance.now() - t);
  }
  nonBlocking.sort((a, b) => a - b);

  // park watchers on other services (an agent fleet watching its upstreams), bounded by wait=60s
  const abort = new AbortController();
  const parked: Array<Promise<unknown>> = [];
  for (let i = 0; i < PARKED_WATCHERS; i++) {
    const svc = services - 1 - (i % Math.max(1, services - WAKE_ROUNDS));
    const first = await consul.get(`/v1/health/connect/svc-${svc}?passing`);
    parked.push(
      fetch(`${urlOf(consul)}/v1/health/connect/svc-${svc}?passing&index=${first.index}&wait=60s`, {
        signal: abort.signal,
      }).then(
        (r) => r.text(),
        () => undefined,
      ),
    );
  }
  const wake: number[] = [];
  let wakeFailures = 0;
  for (let round = 0; round < WAKE_ROUNDS; round++) {
    const svc = round % Math.max(1, services - 1);
    const first = await consul.get(`/v1/health/connect/svc-${svc}?passing`);
    let answered = 0;
    const blocking = fetch(
      `${urlOf(consul)}/v1/health/connect/svc-${svc}?passing&index=${first.index}&wait=60s`,
      { signal: AbortSignal.timeout(10_000) },
    ).then(
      async (r) => {
        await r.text();
        answered = performance.now();
      },
      () => undefined,
    );
    await sleep(20); // let the query park (the bench cannot observe parking from outside)
    const t = performance.now();
    await consul.check('fail', `check-svc-${svc}-0`);
    await blocking;
    if (answered) wake.push(answered - t);
    else wakeFailures++;
    await consul.check('pass', `check-svc-${svc}-0`);
  }
  abort.abort();
  await Promise.all(parked);
  wake.sort((a, b) => a - b);
  return {
    services,
    registerS,
    rssMb,
    idleCpuPct,
    nonBlocking,
    wake,
    wakeFailures,
    listed,
    foreign: meter(),
  };
}

const urls = new WeakMap<ConsulHttp, string>();
function urlOf(c: ConsulHttp): string {
  return urls.get(c)!;
}

export async function runConsul(ctx: ScenarioContext): Promise<ScenarioReport> {
  const out: ScenarioReport = {
    headline: [],
    section: ['## Catalog (embedded Consul, issue 3)', ''],
    commands: [],
  };
  const target = num(ctx.knobs, 'CONSUL_SERVICES');
  const budgetS = num(ctx.knobs, 'CONSUL_BUDGET');
  const sizes = [...new Set([Math.min(100, target), target])];
  const notes: string[] = [];
  try {
    ctx.log('catalog: starting the embedded catalog');
    const proc = await startDevConsulProcess(ctx, 'devconsul-catalog');
    const consul = createConsulHttp(proc.url);
    urls.set(consul, proc.url);
    const results: SizeResult[] = [];
    let have = 0;
    let spentS = 0; // the budget counts registration time only, not the measurements
    for (const size of sizes) {
      if (have >= size || spentS >= budgetS) break;
      const deadline = performance.now() + (budgetS - spentS) * 1000;
      ctx.log(`catalog: registering up to ${size} services × ${INSTANCES} instances`);
      const reg = await registerRange(consul, have, size, deadline);
      spentS += reg.seconds;
      const rate = ((reg.reached - have) * INSTANCES) / Math.max(reg.seconds, 0.001);
      if (reg.reached < size) {
        notes.push(
          `Registration stopped at **${reg.reached} of ${size} services** after the ${budgetS} s budget (CONSUL_BUDGET) ` +
            `(${rate.toFixed(0)} instance registrations/s in the last step): the catalog was measured at the size reached. ` +
            'The write path of the embedded catalog is the bottleneck at this size.',
        );
      }
      have = reg.reached;
      ctx.log(`catalog: measuring at ${have} services (${rate.toFixed(0)} registrations/s)`);
      results.push(await measureSize(ctx, consul, proc.started.pids, have, reg.seconds));
    }
    out.section.push(
      `The embedded catalog (lib/devconsul) in its own process on the SUT core; the client on the loadgen core over HTTP keep-alive. ` +
        `Each instance: TTL check (passing) + \`connect.sidecar_service\` with an alias check. Non-blocking: ${NONBLOCKING_REQUESTS} sequential ` +
        `\`GET /v1/health/connect/<random svc>?passing\`. Blocking wake-up: ${WAKE_ROUNDS} rounds of a watcher parked with \`?index=<X>&wait=60s\` ` +
        `(while ${PARKED_WATCHERS} other watchers are parked on other services), from \`PUT /v1/agent/check/fail/<instance check>\` to the watcher's answer.`,
      '',
      '| services × instances | registration (s) | catalog RSS (MB) | catalog idle CPU | non-blocking p50 / p99 (ms) | blocking wake-up p50 / p99 / max (ms) | wake-ups missed | foreign pp SUT / loadgen |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
    );
    for (const r of results) {
      out.section.push(
        `| ${r.services} × ${INSTANCES} | ${r.registerS.toFixed(1)} | ${r.rssMb.toFixed(1)} | ${r.idleCpuPct.toFixed(1)}% | ` +
          `${ms(percentileSorted(r.nonBlocking, 50))} / ${ms(percentileSorted(r.nonBlocking, 99))} | ` +
          `${ms(percentileSorted(r.wake, 50))} / ${ms(percentileSorted(r.wake, 99))} / ${ms(r.wake[r.wake.length - 1] ?? Number.NaN)} | ${r.wakeFailures} | ${r.foreign.sutPp} / ${r.foreign.loadgenPp} |`,
      );
    }
    const big = results[results.length - 1]!;
    out.section.push(
      '',
      ...notes.flatMap((n) => [n, '']),
      `Largest size: ${describeForeign(big.foreign)}.`,
      '',
    );
    out.headline.push(
      `Catalog at ${big.services} services × ${INSTANCES}: blocking \`health/connect\` wake-up **p99 ${ms(percentileSorted(big.wake, 99))} ms** (target ≤ 50 ms), ` +
        `non-blocking **p99 ${ms(percentileSorted(big.nonBlocking, 99))} ms** (target < 5 ms); catalog RSS ${big.rssMb.toFixed(0)} MB`,
    );
    out.commands.push(
      'Catalog:',
      '',
      '```',
      "node bench/consul/devconsul-server.ts '{}'   # lib/devconsul startDevConsul, pinned to the SUT core",
      '```',
      '',
    );
  } catch (err) {
    out.section.push(`Not measured — ${(err as Error).message.split('\n')[0]}`, '');
    out.headline.push(`Catalog figures: not measured — ${(err as Error).message.split('\n')[0]}`);
  }
  return out;
}
