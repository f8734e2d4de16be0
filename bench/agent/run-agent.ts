// Agent scenario: the whole chain through a real `remora agent` on one host, and how it grows with
// the catalog. A real nats-server, the embedded catalog and one control replica; the catalog holds
// N services × 3 instances registered as other hosts' agents register them; the host's agent runs
// AGENT_PROXIES local services (one proxy each), every one with three HTTP upstreams: `svc-0`
// (shared by all, so one watch serves every proxy) and two of its own.
//  - agent and proxy memory, idle CPU, at 100 services and again after growing to N;
//  - health change → routing: a `svc-0` instance's TTL check fails in the catalog; the time until
//    each proxy logs `snapshot applied` (pino's ms timestamps in its proxy.log — no polling);
//  - new instance → routing: a new `svc-0` instance is registered; same measure;
//  - intention change → enforcement: `intentions.upsert` deny bench-web → local-0; the time until
//    an mTLS probe with bench-web's certificate gets 403 from local-0's proxy (probing every 5 ms),
//    and until each proxy applied the new snapshot.
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  connectNats,
  createToken,
  requestRoots,
  requestSign,
  upsertIntention,
  type NatsConnection,
} from '../../lib/nats/index.ts';
import { createCsr, generateKeyPair } from '../../lib/pki/index.ts';
import { formatSpiffeId } from '../../lib/identity/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { num } from '../lib/options.ts';
import { freePort, probeMtls } from '../lib/net.ts';
import { waitJsonLine } from '../lib/child.ts';
import { clockTicksPerSecond, readCpuTicks, readPssKb, readRssKb } from '../lib/proc-stats.ts';
import { percentileSorted } from '../lib/stats.ts';
import { describeForeign, startForeignMeter, type ForeignShare } from '../lib/foreign.ts';
import type { Started } from '../lib/procs.ts';
import type { ScenarioContext, ScenarioReport } from '../lib/scenario.ts';
import { REPO_ROOT, startApp } from '../dataplane/paths.ts';
import { createConsulHttp, type ConsulHttp } from '../control/consul-http.ts';
import { startDevConsulProcess, startNatsServer } from '../control/run-control.ts';
import { definition, registerRange } from '../consul/run-consul.ts';

const CONTROL_SERVER = fileURLToPath(new URL('../control/control-server.ts', import.meta.url));
const OPERATOR = 'bench-operator-token';
const NODE = 'bench-node';
const IDLE_WINDOW_MS = 5000;
const CHANGE_DEADLINE_MS = 30_000;

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(v < 10 ? 2 : 1) : '–');
const mb = (kb: number): string => (kb / 1024).toFixed(1);

interface LocalProxy {
  id: string;
  pid: number;
  logFile: string;
  sidecarPort: number;
}

interface Convergence {
  /** ms from the change to each proxy's `snapshot applied`, sorted. */
  applied: number[];
  missing: number;
}

interface SizeFigures {
  services: number;
  agentRssKb: number;
  agentIdleCpuPct: number;
  proxyRssMedianKb: number;
  proxyRssTotalKb: number;
  /** What all proxies cost the host together (shared pages counted once). */
  proxyPssTotalKb: number;
  proxiesIdleCpuPct: number;
  health: Convergence;
  foreign: ForeignShare;
}

function localDefinition(
  i: number,
  appPort: number,
  sidecarPort: number,
  binds: number[],
  services: number,
) {
  const ups = [0, 1 + ((2 * i) % (services - 1)), 1 + ((2 * i + 1) % (services - 1))];
  return {
    service: {
      name: `local-${i}`,
      id: `local-${i}`,
      port: appPort,
      connect: {
        sidecar_service: {
          port: sidecarPort,
          proxy: {
            config: { protocol: 'http' },
            upstreams: ups.map((s, k) => ({
              destination_name: `svc-${s}`,
              local_bind_port: binds[k],
              config: { protocol: 'http' },
            })),
          },
        },
      },
    },
  };
}

/** pino `time` (ISO or epoch ms, as epoch ms) of every `snapshot applied` line in a proxy log. */
function appliedTimes(logFile: string): number[] {
  let text: string;
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes('"snapshot applied"')) continue;
    try {
      const time = (JSON.parse(line) as { time: number | string }).time;
      out.push(typeof time === 'number' ? time : Date.parse(time));
    } catch {
      // a torn last line
    }
  }
  return out;
}

/** Waits (bounded) until every proxy logged a snapshot applied at or after `t0` (epoch ms). */
async function convergence(proxies: LocalProxy[], t0: number): Promise<Convergence> {
  const end = Date.now() + CHANGE_DEADLINE_MS;
  const seen = new Map<string, number>();
  while (seen.size < proxies.length && Date.now() < end) {
    await sleep(100);
    for (const p of proxies) {
      if (seen.has(p.id)) continue;
      const t = appliedTimes(p.logFile).find((x) => x >= t0);
      if (t !== undefined) seen.set(p.id, t - t0);
    }
  }
  return {
    applied: [...seen.values()].sort((a, b) => a - b),
    missing: proxies.length - seen.size,
  };
}

const describeConv = (c: Convergence): string =>
  c.applied.length === 0
    ? 'none applied'
    : `${ms(percentileSorted(c.applied, 50))} / ${ms(percentileSorted(c.applied, 99))} / ${ms(c.applied[c.applied.length - 1]!)}` +
      (c.missing ? ` (${c.missing} never applied)` : '');

async function agentStatus(port: number): Promise<{
  instances: Array<{
    id: string;
    registered: boolean;
    sidecarPort: number | null;
    proxy: { ready: boolean; pid: number | null } | null;
  }>;
}> {
  const r = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(5000) });
  return (await r.json()) as Awaited<ReturnType<typeof agentStatus>>;
}

async function idle(
  ctx: ScenarioContext,
  agent: Started,
  proxies: LocalProxy[],
  services: number,
): Promise<Omit<SizeFigures, 'health' | 'foreign'>> {
  await sleep(1000); // let the last change settle
  const pids = proxies.map((p) => p.pid);
  const a0 = readCpuTicks(agent.pids).total;
  const p0 = readCpuTicks(pids).total;
  await sleep(IDLE_WINDOW_MS);
  const hz = clockTicksPerSecond();
  const rss = pids.map((p) => readRssKb([p])).sort((a, b) => a - b);
  ctx.log(`agent: idle figures at ${services} services taken`);
  return {
    services,
    agentRssKb: readRssKb(agent.pids),
    agentIdleCpuPct: ((readCpuTicks(agent.pids).total - a0) / hz / (IDLE_WINDOW_MS / 1000)) * 100,
    proxyRssMedianKb: percentileSorted(rss, 50),
    proxyRssTotalKb: rss.reduce((s, x) => s + x, 0),
    proxyPssTotalKb: readPssKb(pids),
    proxiesIdleCpuPct: ((readCpuTicks(pids).total - p0) / hz / (IDLE_WINDOW_MS / 1000)) * 100,
  };
}

async function healthChange(consul: ConsulHttp, proxies: LocalProxy[]): Promise<Convergence> {
  const t0 = Date.now();
  await consul.check('fail', 'check-svc-0-0');
  const c = await convergence(proxies, t0);
  const t1 = Date.now();
  await consul.check('pass', 'check-svc-0-0');
  await convergence(proxies, t1); // back to three instances before the next measure
  return c;
}

/** A certificate for bench-web, issued by the mesh CA the way an agent gets one. */
async function benchWebIdentity(
  nc: NatsConnection,
  consul: ConsulHttp,
  token: string,
): Promise<{ certPem: string; keyPem: string; caPem: string }> {
  await consul.register({
    ID: 'bench-web-1',
    Name: 'bench-web',
    Address: '127.0.0.1',
    Port: 9,
    Meta: { 'remora-node': NODE },
  });
  const roots = await requestRoots(nc, 'dc1', { timeoutMs: 10_000 });
  const keys = generateKeyPair();
  const spiffeId = formatSpiffeId({
    trustDomain: roots.trustDomain,
    datacenter: 'dc1',
    service: 'bench-web',
  });
  const leaf = await requestSign(
    nc,
    'dc1',
    {
      node: NODE,
      token,
      service: 'bench-web',
      serviceId: 'bench-web-1',
      csr: createCsr({ keyPem: keys.keyPem, publicKeyPem: keys.publicKeyPem, spiffeId }),
    },
    { timeoutMs: 10_000 },
  );
  return {
    certPem: [leaf.cert, ...leaf.chain].join('\n'),
    keyPem: keys.keyPem,
    caPem: roots.roots.map((r) => r.pem).join('\n'),
  };
}

export async function runAgentScenario(ctx: ScenarioContext): Promise<ScenarioReport> {
  const out: ScenarioReport = {
    headline: [],
    section: ['## Agent on one host (the whole chain through `remora agent`)', ''],
    commands: [],
  };
  const target = Math.max(100, num(ctx.knobs, 'CONSUL_SERVICES'));
  const nProxies = num(ctx.knobs, 'AGENT_PROXIES');
  const budgetS = num(ctx.knobs, 'AGENT_BUDGET');
  let nc: NatsConnection | undefined;
  let agent: Started | undefined;
  try {
    ctx.log('agent: starting nats-server, the catalog, control and the app');
    const nats = await startNatsServer(ctx);
    const dc = await startDevConsulProcess(ctx, 'devconsul-agent');
    const consul = createConsulHttp(dc.url);
    const control = ctx.registry.start(
      'control-agent',
      process.execPath,
      [
        CONTROL_SERVER,
        JSON.stringify({ natsUrl: nats.url, consulUrl: dc.url, operatorToken: OPERATOR }),
      ],
      { where: 'sut' },
    );
    await waitJsonLine(control, 30_000);
    const app = await startApp(ctx.registry, ctx.runDir, ctx.log);
    nc = await connectNats({ servers: nats.url, name: 'bench', logger: createSilentLogger() });
    await upsertIntention(nc, 'dc1', OPERATOR, { source: '*', destination: '*', action: 'allow' });
    const token = (await createToken(nc, 'dc1', OPERATOR, { node: NODE, services: ['*'] })).token;

    ctx.log('agent: registering 100 services × 3 in the catalog');
    await registerRange(consul, 0, 100, performance.now() + 60_000);

    const base = join(ctx.runDir, 'agent');
    const configDir = join(base, 'services.d');
    const dataDir = join(base, 'data');
    mkdirSync(configDir, { recursive: true });
    for (let i = 0; i < nProxies; i++) {
      const def = localDefinition(
        i,
        app.port,
        await freePort(),
        [await freePort(), await freePort(), await freePort()],
        100,
      );
      writeFileSync(join(configDir, `.local-${i}.tmp`), JSON.stringify(def));
      renameSync(join(configDir, `.local-${i}.tmp`), join(configDir, `local-${i}.json`));
    }
    const adminPort = await freePort();
    const agentEnv = {
      ...process.env,
      REMORA_AGENT_NATS_SERVERS: nats.url,
      REMORA_AGENT_CONSUL_ADDRESS: dc.url,
      REMORA_AGENT_NODE: NODE,
      REMORA_AGENT_NODE_TOKEN: token,
      REMORA_AGENT_CONFIG_DIR: configDir,
      REMORA_AGENT_DATA_DIR: dataDir,
      REMORA_AGENT_ADMIN_PORT: String(adminPort),
      REMORA_AGENT_ADVERTISE_ADDRESS: '127.0.0.1',
      REMORA_AGENT_PROXY_BIND_ADDRESS: '127.0.0.1',
      REMORA_AGENT_TRACING_ENDPOINT: '',
      REMORA_AGENT_LOG_LEVEL: 'warn',
      REMORA_PROXY_LOG_LEVEL: 'info',
    };
    const t0 = performance.now();
    ctx.log(`agent: starting remora agent with ${nProxies} services`);
    agent = ctx.registry.start(
      'remora-agent',
      process.execPath,
      [join(REPO_ROOT, 'bin/remora.js'), 'agent'],
      { where: 'sut', env: agentEnv },
    );
    const deadline = Date.now() + budgetS * 1000;
    let status: Awaited<ReturnType<typeof agentStatus>> | null = null;
    while (Date.now() < deadline) {
      await sleep(500);
      status = await agentStatus(adminPort).catch(() => null);
      if (
        status &&
        status.instances.length === nProxies &&
        status.instances.every((i) => i.registered && i.proxy?.ready)
      )
        break;
    }
    const ready = status?.instances.filter((i) => i.registered && i.proxy?.ready) ?? [];
    for (const i of ready) if (i.proxy?.pid) ctx.registry.adopt(i.proxy.pid);
    const upS = (performance.now() - t0) / 1000;
    if (ready.length < nProxies)
      throw new Error(
        `only ${ready.length} of ${nProxies} proxies were ready after ${budgetS} s (AGENT_BUDGET)`,
      );
    const proxies: LocalProxy[] = ready.map((i) => ({
      id: i.id,
      pid: i.proxy!.pid!,
      logFile: join(dataDir, 'instances', i.id, 'proxy.log'),
      sidecarPort: i.sidecarPort!,
    }));
    ctx.log(`agent: ${nProxies} proxies ready in ${upS.toFixed(1)} s`);

    const sizes: SizeFigures[] = [];
    const running = agent;
    const measure = async (services: number): Promise<void> => {
      const meter = startForeignMeter(ctx.pinning, () => ctx.registry.pidsOn('sut'));
      const idleFigures = await idle(ctx, running, proxies, services);
      const health = await healthChange(consul, proxies);
      sizes.push({ ...idleFigures, health, foreign: meter() });
    };
    await measure(100);

    ctx.log('agent: new instance and intention change');
    let t = Date.now();
    await consul.register(definition(0, 3));
    const added = await convergence(proxies, t);

    const web = await benchWebIdentity(nc, consul, token);
    const local0 = proxies.find((p) => p.id === 'local-0')!;
    const before = await probeMtls({ port: local0.sidecarPort, ...web });
    t = Date.now();
    await upsertIntention(nc, 'dc1', OPERATOR, {
      source: 'bench-web',
      destination: 'local-0',
      action: 'deny',
    });
    // each probe is a fresh mTLS handshake: enforcement happened after the last allowed probe
    // ended and before the first refused one ended
    let enforcedMs = Number.NaN;
    let lastAllowedMs = 0;
    while (Date.now() - t < CHANGE_DEADLINE_MS) {
      const p = await probeMtls({ port: local0.sidecarPort, timeoutMs: 2000, ...web });
      if (p.status === 403) {
        enforcedMs = Date.now() - t;
        break;
      }
      if (p.status === 200) lastAllowedMs = Date.now() - t;
      await sleep(5);
    }
    const denied = await convergence(proxies, t);

    if (target > 100) {
      ctx.log(`agent: growing the catalog to ${target} services × 3`);
      await registerRange(consul, 100, target, performance.now() + 120_000);
      await measure(target);
    }

    out.section.push(
      `A real \`remora agent\` (own process on the SUT core; its proxies inherit the placement) with ${nProxies} local services, ` +
        `each with one proxy and three HTTP upstreams (\`svc-0\`, shared by all, and two of its own), against a real nats-server, ` +
        'the embedded catalog and one control replica. The catalog holds the given number of services × 3 instances, registered ' +
        `as other hosts' agents register them. All ${nProxies} proxies registered and ready **${upS.toFixed(1)} s** after the agent started ` +
        '(certificate per instance over NATS, proxy processes spawned and configured). Change times are from the change ' +
        "(catalog write or `intentions.upsert`) to each proxy's own `snapshot applied` log line (pino ms timestamps), p50 / p99 / last. " +
        'RSS counts the pages the proxies share (the node binary, libraries) once per proxy; the PSS sum (`/proc/<pid>/smaps_rollup`) ' +
        'divides them among the processes that map them, so it is what the proxies cost the host together.',
      '',
      '| catalog services × 3 | agent RSS (MB) | agent idle CPU | proxy RSS median / sum (MB) | proxies PSS sum (MB) | proxies idle CPU (all) | health change → every proxy applied (ms) | foreign pp SUT / loadgen |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
    );
    for (const s of sizes)
      out.section.push(
        `| ${s.services} | ${mb(s.agentRssKb)} | ${s.agentIdleCpuPct.toFixed(1)}% | ${mb(s.proxyRssMedianKb)} / ${mb(s.proxyRssTotalKb)} | ${mb(s.proxyPssTotalKb)} | ` +
          `${s.proxiesIdleCpuPct.toFixed(1)}% | ${describeConv(s.health)} | ${s.foreign.sutPp} / ${s.foreign.loadgenPp} |`,
      );
    out.section.push(
      '',
      `- New \`svc-0\` instance registered → every proxy applied the new endpoint set: ${describeConv(added)} ms.`,
      `- Intention change (deny bench-web → local-0) → enforced at local-0's proxy (first 403 to an mTLS probe with bench-web's ` +
        `certificate every 5 ms, each a fresh handshake; before the change it answered HTTP ${before.status}): **${ms(enforcedMs)} ms** ` +
        `(${lastAllowedMs > 0 ? `the last allowed probe ended at ${ms(lastAllowedMs)} ms` : 'the first probe after the change was already refused; the figure is one handshake'}); ` +
        `→ every proxy applied the new intentions: ${describeConv(denied)} ms.`,
      `- ${describeForeign(sizes[sizes.length - 1]!.foreign)} (largest size).`,
      '',
    );
    const big = sizes[sizes.length - 1]!;
    out.headline.push(
      `Agent with ${nProxies} proxies, catalog ${big.services} services × 3: health change → all proxies routing p99 ` +
        `**${ms(percentileSorted(big.health.applied, 99))} ms**; intention change → enforced **${ms(enforcedMs)} ms**; ` +
        `agent RSS ${mb(big.agentRssKb)} MB (${mb(sizes[0]!.agentRssKb)} MB at 100 services); the ${nProxies} proxies cost the host ` +
        `${mb(big.proxyPssTotalKb)} MB together (PSS; ${mb(big.proxyPssTotalKb / nProxies)} MB each, RSS ${mb(big.proxyRssMedianKb)} MB each)`,
    );
    out.commands.push(
      'Agent scenario:',
      '',
      '```',
      'REMORA_AGENT_CONFIG_DIR=$RUN/agent/services.d REMORA_AGENT_NODE=bench-node … node bin/remora.js agent   # pinned to the SUT core',
      '```',
      '',
    );
  } catch (err) {
    const m = (err as Error).message.split('\n')[0]!;
    out.section.push(`Not measured — ${m}`, '');
    out.headline.push(`Agent chain: not measured — ${m}`);
  } finally {
    await nc?.close().catch(() => undefined);
    // the agent first: its ordered stop ends its proxies (signalling them first would have it
    // restart them)
    if (agent) await ctx.registry.stop(agent, 30_000);
  }
  return out;
}
