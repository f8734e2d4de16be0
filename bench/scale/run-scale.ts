// Scale scenario: SCALE_PROXIES `remora proxy` processes on one host, fed over the agent socket
// (lib/proxy-api frames) by the bench acting as their agent — the same stream `remora agent`
// sends. Measures proxy memory and CPU while idle, and the convergence time of all proxies after
// one change (a new endpoint in an upstream), from sending the snapshot to each proxy's ack.
import { createServer, type Server, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  attachFrameChannel,
  decodeProxyFrame,
  DEFAULT_RESILIENCE,
  type AgentFrame,
  type FrameChannel,
  type ProxyFrame,
  type ProxySnapshot,
} from '../../lib/proxy-api/index.ts';
import { PROXY_NODE_OPTIONS } from '../../lib/proxy-api/index.ts';
import { issueRemoraLeaf, type Leaf } from '../lib/certs.ts';
import { describeForeign, startForeignMeter } from '../lib/foreign.ts';
import { freePort } from '../lib/net.ts';
import { num } from '../lib/options.ts';
import { clockTicksPerSecond, readCpuTicks, readRssKb } from '../lib/proc-stats.ts';
import type { Started } from '../lib/procs.ts';
import { median, percentileSorted } from '../lib/stats.ts';
import type { ScenarioContext, ScenarioReport } from '../lib/scenario.ts';
import { BENCH_INTENTIONS } from '../dataplane/remora-snapshot.ts';
import { REPO_ROOT } from '../dataplane/paths.ts';

const UPSTREAMS_PER_PROXY = 3;
const ENDPOINTS_PER_UPSTREAM = 3;

interface Member {
  service: string;
  leaf: Leaf;
  inboundPort: number;
  upstreamPorts: number[];
  snapshot?: ProxySnapshot;
  channel?: FrameChannel<AgentFrame>;
  acks: Map<number, number>;
  started?: Started;
}

function buildSnapshot(
  ctx: ScenarioContext,
  m: Member,
  all: Member[],
  version: number,
): ProxySnapshot {
  const i = all.indexOf(m);
  return {
    version,
    instance: {
      id: `${m.service}-1`,
      service: m.service,
      datacenter: 'dc1',
      node: 'bench',
      trustDomain: ctx.pki.trustDomain,
      spiffeId: m.leaf.spiffeId,
    },
    inbound: {
      bindAddress: '127.0.0.1',
      bindPort: m.inboundPort,
      localAppAddress: '127.0.0.1',
      localAppPort: 9, // no app behind these proxies: the scenario measures them idle
      protocol: 'http',
    },
    upstreams: m.upstreamPorts.map((port, u) => {
      const dest = all[(i + 1 + u) % all.length]!;
      const endpoints = Array.from(
        { length: ENDPOINTS_PER_UPSTREAM + (version > 1 && u === 0 ? 1 : 0) },
        (_, e) => ({
          id: `${dest.service}-${e + 1}`,
          address: '127.0.0.1',
          port: dest.inboundPort,
          weight: 1,
          node: `node-${e + 1}`,
        }),
      );
      return {
        destinationName: dest.service,
        destinationSpiffeId: dest.leaf.spiffeId,
        localBindAddress: '127.0.0.1',
        localBindPort: port,
        protocol: 'http' as const,
        loadBalancer: 'peak_ewma' as const,
        resilience: DEFAULT_RESILIENCE,
        endpoints,
      };
    }),
    tls: { certPem: m.leaf.certPem, keyPem: m.leaf.keyPem, rootsPem: [ctx.pki.caPem] },
    intentions: BENCH_INTENTIONS,
    tracing: { endpoint: '', sampleRatio: 0, headers: {} },
  };
}

export async function runScale(ctx: ScenarioContext): Promise<ScenarioReport> {
  const out: ScenarioReport = { headline: [], section: ['## Scale', ''], commands: [] };
  const count = num(ctx.knobs, 'SCALE_PROXIES');
  let server: Server | undefined;
  try {
    ctx.log(`scale: issuing ${count} workload certificates`);
    const ca = {
      certPem: ctx.pki.caPem,
      keyPem: readFileSync(join(ctx.pki.dir, 'ca.key'), 'utf8'),
    };
    const members: Member[] = [];
    for (let i = 0; i < count; i++) {
      const service = `svc-${i}`;
      const upstreamPorts: number[] = [];
      for (let u = 0; u < UPSTREAMS_PER_PROXY; u++) upstreamPorts.push(await freePort());
      members.push({
        service,
        leaf: issueRemoraLeaf(ca, ctx.pki.trustDomain, service),
        inboundPort: await freePort(),
        upstreamPorts,
        acks: new Map(),
      });
    }
    const refusals: string[] = [];
    const byInstance = new Map(members.map((m) => [`${m.service}-1`, m]));
    const socketPath = join(ctx.runDir, 'agent.sock');
    server = createServer((socket: Socket) => {
      let member: Member | undefined;
      const channel = attachFrameChannel<ProxyFrame, AgentFrame>(socket, {
        decode: decodeProxyFrame,
        onFrame: (f) => {
          if (f.type === 'hello') {
            member = byInstance.get(f.instance);
            if (!member) return;
            member.channel = channel;
            member.snapshot = buildSnapshot(ctx, member, members, 1);
            channel.send({ v: 1, type: 'snapshot', snapshot: member.snapshot });
          } else if (f.type === 'ack' && member) {
            if (!member.acks.has(f.version))
              member.acks.set(f.version, f.ok ? performance.now() : -1);
            if (!f.ok)
              refusals.push(`${member.service} v${f.version}: ${f.error.code} ${f.error.message}`);
          }
        },
      });
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(socketPath, () => resolve());
    });

    ctx.log(`scale: starting ${count} proxies on the SUT core`);
    const t0 = performance.now();
    const batch = 10;
    const budgetS = num(ctx.knobs, 'SCALE_BUDGET');
    const allDeadline = performance.now() + budgetS * 1000;
    for (let i = 0; i < members.length && performance.now() < allDeadline; i += batch) {
      const group = members.slice(i, i + batch);
      for (const m of group) {
        m.started = ctx.registry.start(
          `scale-${m.service}`,
          process.execPath,
          [
            ...PROXY_NODE_OPTIONS,
            join(REPO_ROOT, 'bin', 'remora.js'),
            'proxy',
            '--instance',
            `${m.service}-1`,
            '--agent-socket',
            socketPath,
            '--admin',
            '0',
            '--log-level',
            'warn',
          ],
          { where: 'sut', cwd: REPO_ROOT },
        );
      }
      while (group.some((m) => !m.acks.has(1)) && performance.now() < allDeadline) await sleep(50);
      const refusedFirst = group.find((m) => (m.acks.get(1) ?? 0) < 0);
      if (refusedFirst)
        throw new Error(`proxy ${refusedFirst.service} refused its first snapshot; see $RUN/logs`);
    }
    const startS = (performance.now() - t0) / 1000;
    // proxies that did not come up within SCALE_BUDGET are stopped and left out (said in the report)
    for (const m of members)
      if (m.started && !m.acks.has(1)) await ctx.registry.stop(m.started, 500);
    const requested = members.length;
    members.splice(0, members.length, ...members.filter((m) => m.acks.has(1)));
    if (members.length === 0)
      throw new Error(`no proxy acked its first snapshot within ${budgetS} s (SCALE_BUDGET)`);
    const pids = members.flatMap((m) => m.started!.pids);

    await sleep(2000);
    const idleRss = members.map((m) => readRssKb(m.started!.pids) / 1024).sort((a, b) => a - b);
    const meter = startForeignMeter(ctx.pinning, () => ctx.registry.pidsOn('sut'));
    const c0 = readCpuTicks(pids).total;
    const idleWindowS = 5;
    await sleep(idleWindowS * 1000);
    const idleCpuPct =
      ((readCpuTicks(pids).total - c0) / clockTicksPerSecond() / idleWindowS) * 100;

    // one change for every proxy at once: a new endpoint in its first upstream
    ctx.log('scale: pushing one change to every proxy');
    const sent = performance.now();
    for (const m of members) {
      m.snapshot = buildSnapshot(ctx, m, members, 2);
      m.channel?.send({ v: 1, type: 'snapshot', snapshot: m.snapshot });
    }
    const deadline = performance.now() + 60_000;
    while (members.some((m) => !m.acks.has(2)) && performance.now() < deadline) await sleep(5);
    const conv = members
      .map((m) => m.acks.get(2))
      .filter((t): t is number => t !== undefined && t >= 0)
      .map((t) => t - sent)
      .sort((a, b) => a - b);
    const refused = members.filter((m) => (m.acks.get(2) ?? 0) < 0).length;
    const missing = members.filter((m) => !m.acks.has(2)).length;
    const foreign = meter();
    const afterRss = members.map((m) => readRssKb(m.started!.pids) / 1024);

    const total = idleRss.reduce((a, b) => a + b, 0);
    if (members.length < requested) {
      out.section.push(
        `**Only ${members.length} of ${requested} proxies were up (acked their first snapshot) within SCALE_BUDGET=${budgetS} s**; ` +
          'the figures below are for those. Starting a proxy costs a Node start-up on the shared SUT core.',
        '',
      );
    }
    out.section.push(
      `${members.length} \`remora proxy\` processes on the SUT core, each fed over the agent socket (lib/proxy-api frames; the bench plays the agent): ` +
        `one inbound listener, ${UPSTREAMS_PER_PROXY} upstreams × ${ENDPOINTS_PER_UPSTREAM} endpoints, its own lib/pki certificate, intentions. ` +
        `All started and acked their first snapshot in ${startS.toFixed(1)} s (batches of 10).`,
      '',
      '| figure | value |',
      '|---|---:|',
      `| RSS per proxy, idle: median / max (MB) | ${median(idleRss).toFixed(1)} / ${(idleRss[idleRss.length - 1] ?? 0).toFixed(1)} |`,
      `| RSS of all ${members.length} proxies, idle (MB) | ${total.toFixed(0)} |`,
      `| CPU of all ${members.length} proxies while idle (${idleWindowS} s window) | ${idleCpuPct.toFixed(1)}% of one core (${(idleCpuPct / count).toFixed(2)}% each) |`,
      `| convergence after one change (snapshot sent to all → each ack): p50 / p99 / all (ms) | ${percentileSorted(conv, 50).toFixed(1)} / ${percentileSorted(conv, 99).toFixed(1)} / ${(conv[conv.length - 1] ?? Number.NaN).toFixed(1)} |`,
      `| proxies that refused / never acked the change | ${refused} / ${missing} |`,
      `| RSS per proxy after the change: median (MB) | ${median(afterRss).toFixed(1)} |`,
      '',
      `${describeForeign(foreign)}.`,
      '',
      ...(refusals.length
        ? [
            `Refused snapshots (${refusals.length}): ${refusals.slice(0, 3).join('; ')}${refusals.length > 3 ? '; …' : ''}`,
            '',
          ]
        : []),
    );
    out.headline.push(
      `${members.length} proxies on one host: idle RSS median ${median(idleRss).toFixed(0)} MB per proxy (${total.toFixed(0)} MB total), idle CPU ${idleCpuPct.toFixed(1)}% of a core in all; ` +
        `one change reaches all of them (acked) in ${(conv[conv.length - 1] ?? Number.NaN).toFixed(0)} ms`,
    );
    out.commands.push(
      'Scale:',
      '',
      '```',
      `node bin/remora.js proxy --instance svc-<i>-1 --agent-socket $RUN/agent.sock --admin 0 --log-level warn   # × ${count}, SUT core`,
      '```',
      '',
    );
  } catch (err) {
    out.section.push(
      `Proxies at scale: not measured — ${(err as Error).message.split('\n')[0]}`,
      '',
    );
    out.headline.push(
      `Scale (${count} proxies): not measured — ${(err as Error).message.split('\n')[0]}`,
    );
  } finally {
    await ctx.registry.stopAll();
    server?.close();
  }
  out.section.push(
    'Not measured here:',
    '',
    '- The agent: the agent scenario ("Agent on one host") runs 50 proxies under a real `remora agent` against a 100 → 1,000 ' +
      'service catalog.',
    "- Proxy cost against upstream count (100 → 1,000 upstream services in one snapshot): not measured; the catalog's growth " +
      'from 100 to N services is in the catalog table.',
    '',
  );
  return out;
}
