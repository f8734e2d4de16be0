// Control-plane scenario.
//  1. Signing on one core: lib/pki issueLeaf in a loop, in a process pinned to the SUT core.
//  2. Issuance over NATS: a real nats-server, the embedded catalog and one control replica, each
//     its own process on the SUT core; the orchestrator (loadgen core) sends `ca.sign` requests as
//     an agent would (node token, CSR) — closed loop for throughput, open loop at 50 req/s for
//     latency.
//  3. Intention change → `intentions.changed` received by a subscriber (the control-plane half of
//     "time from an intention change to enforcement").
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  connectNats,
  createToken,
  requestRoots,
  requestSign,
  subscribeIntentionsChanged,
  upsertIntention,
  type NatsConnection,
} from '../../lib/nats/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createCsr, generateKeyPair } from '../../lib/pki/index.ts';
import { spiffeFor } from '../lib/certs.ts';
import { startJsonChild } from '../lib/child.ts';
import { describeForeign, startForeignMeter } from '../lib/foreign.ts';
import { freePort, waitListening } from '../lib/net.ts';
import { num } from '../lib/options.ts';
import { cpuMicrosPerRequest, readCpuTicks, readRssKb } from '../lib/proc-stats.ts';
import type { Started } from '../lib/procs.ts';
import { percentileSorted } from '../lib/stats.ts';
import type { ScenarioContext, ScenarioReport } from '../lib/scenario.ts';
import { createConsulHttp } from './consul-http.ts';

const SIGN_WORKER = fileURLToPath(new URL('./sign-worker.ts', import.meta.url));
const CONTROL_SERVER = fileURLToPath(new URL('./control-server.ts', import.meta.url));
export const DEVCONSUL_SERVER = fileURLToPath(
  new URL('../consul/devconsul-server.ts', import.meta.url),
);

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(v < 10 ? 2 : 1) : '–');

export async function startNatsServer(
  ctx: ScenarioContext,
): Promise<{ url: string; started: Started }> {
  const port = await freePort();
  const started = ctx.registry.start(
    'nats-server',
    'nats-server',
    ['-a', '127.0.0.1', '-p', String(port)],
    {
      where: 'sut',
    },
  );
  let gone = false;
  void started.exited.then(() => (gone = true));
  if (!(await waitListening(port, 10_000, () => gone)))
    throw new Error('nats-server did not start');
  return { url: `nats://127.0.0.1:${port}`, started };
}

export async function startDevConsulProcess(
  ctx: ScenarioContext,
  name = 'devconsul',
): Promise<{ url: string; started: Started }> {
  const { started, info } = await startJsonChild<{ url: string }>(
    ctx.registry,
    name,
    DEVCONSUL_SERVER,
    {},
    'sut',
    20_000,
  );
  return { url: info.url, started };
}

async function signingOnOneCore(ctx: ScenarioContext, out: ScenarioReport): Promise<void> {
  const seconds = num(ctx.knobs, 'SIGN_SECONDS');
  try {
    const meter = startForeignMeter(ctx.pinning, () => ctx.registry.pidsOn('sut'));
    const { started, info } = await startJsonChild<{
      certs: number;
      perSecond: number;
      p50Ms: number;
      p99Ms: number;
    }>(ctx.registry, 'sign-worker', SIGN_WORKER, { seconds }, 'sut', (seconds + 60) * 1000);
    await started.exited;
    const foreign = meter();
    out.headline.push(
      `Certificate signing on one core (lib/pki \`issueLeaf\`, RSA 2048, no network): **${info.perSecond.toFixed(0)} certs/s** (issue 4 target ≥ 200)`,
    );
    out.section.push(
      `- Signing on one core, in-process: ${info.certs} leaves in ${seconds} s = **${info.perSecond.toFixed(0)} certs/s**; ` +
        `per leaf p50 ${ms(info.p50Ms)} ms, p99 ${ms(info.p99Ms)} ms (CSR parse + self-signature check, leaf build, native RSA-2048 SHA-256 signature); ${describeForeign(foreign)}.`,
    );
    out.commands.push(
      'node bench/control/sign-worker.ts \'{"seconds":' + seconds + "}'   # pinned to the SUT core",
    );
  } catch (err) {
    out.section.push(`- Signing on one core: not measured — ${(err as Error).message}`);
  }
}

interface SignClient {
  nc: NatsConnection;
  token: string;
  csrs: Array<{ csr: string; serviceId: string }>;
}

function signOnce(c: SignClient, i: number): Promise<unknown> {
  const x = c.csrs[i % c.csrs.length]!;
  return requestSign(
    c.nc,
    'dc1',
    {
      node: 'bench-node',
      token: c.token,
      service: 'bench-svc',
      serviceId: x.serviceId,
      csr: x.csr,
    },
    { timeoutMs: 5000 },
  );
}

async function issuanceOverNats(ctx: ScenarioContext, out: ScenarioReport): Promise<void> {
  const seconds = num(ctx.knobs, 'SIGN_SECONDS');
  const operatorToken = 'bench-operator-token';
  let nc: NatsConnection | undefined;
  try {
    const nats = await startNatsServer(ctx);
    const consulProc = await startDevConsulProcess(ctx, 'devconsul-control');
    const consul = createConsulHttp(consulProc.url);
    await consul.register({
      ID: 'bench-svc-1',
      Name: 'bench-svc',
      Port: 9000,
      Address: '127.0.0.1',
      Meta: { 'remora-node': 'bench-node' },
    });
    const control = await startJsonChild<{ ready: boolean }>(
      ctx.registry,
      'control',
      CONTROL_SERVER,
      { natsUrl: nats.url, consulUrl: consulProc.url, operatorToken },
      'sut',
      30_000,
    );
    nc = await connectNats({
      servers: nats.url,
      name: 'bench-agent',
      logger: createSilentLogger(),
    });
    const { token } = await createToken(nc, 'dc1', operatorToken, {
      node: 'bench-node',
      services: ['bench-svc'],
    });
    // CSRs as agents make them (keys stay with the agent); a few distinct ones, reused
    const roots = await requestRoots(nc, 'dc1');
    const csrs = Array.from({ length: 6 }, () => {
      const k = generateKeyPair();
      const spiffeId = spiffeFor(roots.trustDomain, 'bench-svc');
      return {
        csr: createCsr({ keyPem: k.keyPem, publicKeyPem: k.publicKeyPem, spiffeId }),
        serviceId: 'bench-svc-1',
      };
    });
    const client: SignClient = { nc, token, csrs };
    for (let i = 0; i < 20; i++) await signOnce(client, i); // warm-up

    // throughput: 8 requests in flight
    const meter = startForeignMeter(ctx.pinning, () => ctx.registry.pidsOn('sut'));
    const cpu0 = readCpuTicks(control.started.pids);
    let done = 0;
    let failed = 0;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    await Promise.all(
      Array.from({ length: 8 }, async (_, w) => {
        for (let i = w; performance.now() < end; i += 8) {
          try {
            await signOnce(client, i);
            done++;
          } catch {
            failed++;
          }
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    const cpuPerCert =
      cpuMicrosPerRequest(readCpuTicks(control.started.pids).total - cpu0.total, done) / 1000;
    const tput = done / elapsed;

    // latency at a fixed 50 req/s, open loop
    const rate = 50;
    const count = Math.max(50, Math.round(rate * Math.max(4, seconds)));
    const lat: number[] = [];
    let latFailed = 0;
    const start = performance.now() + 10;
    const pending: Array<Promise<void>> = [];
    for (let i = 0; i < count; i++) {
      const intended = start + (i * 1000) / rate;
      const wait = intended - performance.now();
      if (wait > 0) await sleep(wait);
      pending.push(
        signOnce(client, i).then(
          () => void lat.push(performance.now() - intended),
          () => void latFailed++,
        ),
      );
    }
    await Promise.all(pending);
    lat.sort((a, b) => a - b);
    const rss = readRssKb(control.started.pids) / 1024;
    const foreign = meter();

    out.headline.push(
      `Issuance over NATS (one control replica, real nats-server, catalog-checked authorization): **${tput.toFixed(0)} certs/s** at 8 in flight; ` +
        `at 50 req/s p50 ${ms(percentileSorted(lat, 50))} ms, **p99 ${ms(percentileSorted(lat, 99))} ms** (issue 4 target < 50 ms)`,
    );
    out.section.push(
      `- Issuance over NATS: \`ca.sign\` requests from an agent-like client (node token, CSR) to one \`control\` replica ` +
        `(own process on the SUT core, with nats-server and the embedded catalog there too). Closed loop, 8 in flight, ${seconds} s: ` +
        `**${tput.toFixed(0)} certs/s**, ${failed} failed; control CPU ${cpuPerCert.toFixed(2)} ms per certificate ` +
        `(≈ ${(1000 / cpuPerCert).toFixed(0)} certs/s per core); control RSS ${rss.toFixed(1)} MB.`,
      `- Open loop at 50 req/s (${count} requests, timed from the intended send time): p50 ${ms(percentileSorted(lat, 50))} ms, ` +
        `p90 ${ms(percentileSorted(lat, 90))} ms, p99 ${ms(percentileSorted(lat, 99))} ms, max ${ms(lat[lat.length - 1] ?? Number.NaN)} ms; ${latFailed} failed; ${describeForeign(foreign)}.`,
    );

    // intention change → intentions.changed at a subscriber
    const seen = new Map<number, number>();
    const sub = subscribeIntentionsChanged(nc, 'dc1', (snap) => {
      if (!seen.has(snap.revision)) seen.set(snap.revision, performance.now());
    });
    const prop: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t = performance.now();
      const r = await upsertIntention(nc, 'dc1', operatorToken, {
        source: `client-${i}`,
        destination: 'bench-svc',
        action: i % 2 ? 'allow' : 'deny',
      });
      const got = await waitSeen(seen, r.revision, 5000);
      if (got !== undefined) prop.push(got - t);
    }
    sub.unsubscribe();
    prop.sort((a, b) => a - b);
    out.section.push(
      `- Intention change → \`intentions.changed\` received (30 upserts, one at a time, from the upsert request to the subscriber ` +
        `seeing that revision): p50 ${ms(percentileSorted(prop, 50))} ms, p99 ${ms(percentileSorted(prop, 99))} ms. ` +
        'This is the control-plane half of "intention change → enforcement"; the agent scenario ("Agent on one host") measures the whole chain.',
    );
    out.headline.push(
      `Intention change → published to subscribers: p50 ${ms(percentileSorted(prop, 50))} ms, p99 ${ms(percentileSorted(prop, 99))} ms`,
    );
    out.commands.push(
      'nats-server -a 127.0.0.1 -p <port>   # pinned to the SUT core',
      "node bench/consul/devconsul-server.ts '{}'   # lib/devconsul startDevConsul, SUT core",
      'node bench/control/control-server.ts \'{"natsUrl":…,"consulUrl":…,"operatorToken":…}\'   # control/ createControl, SUT core',
    );
  } catch (err) {
    out.section.push(
      `- Issuance over NATS: not measured — ${(err as Error).message.split('\n')[0]}`,
    );
  } finally {
    await nc?.close().catch(() => undefined);
  }
}

async function waitSeen(
  seen: Map<number, number>,
  revision: number,
  timeoutMs: number,
): Promise<number | undefined> {
  const end = performance.now() + timeoutMs;
  while (performance.now() < end) {
    for (const [rev, t] of seen) if (rev >= revision) return t;
    await sleep(1);
  }
  return undefined;
}

export async function runControl(ctx: ScenarioContext): Promise<ScenarioReport> {
  const out: ScenarioReport = { headline: [], section: ['## Control plane', ''], commands: [] };
  ctx.log('control plane: signing on one core');
  await signingOnOneCore(ctx, out);
  ctx.log('control plane: issuance over NATS');
  await issuanceOverNats(ctx, out);
  out.section.push('');
  if (out.commands.length) out.commands.unshift('Control plane:', '', '```');
  if (out.commands.length) out.commands.push('```', '');
  return out;
}
