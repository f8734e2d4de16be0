// Routing scenario: how fast a change in the endpoint set reaches traffic. web's proxy is fed over
// the agent socket by the bench (playing the agent, as in the scale scenario); api has two
// instances (two server-side proxies, each in front of an app that names itself). Under a steady
// 200 req/s through web's proxy:
//  - new instance → traffic: endpoints [api-1] → [api-1, api-2]; time from sending the snapshot to
//    the first answer from api-2;
//  - instance gone (a health change as the agent reports it) → traffic: [api-1, api-2] → [api-2];
//    time from sending the snapshot to the last answer from api-1 that started after it.
// The catalog → agent half of "health change → routing" is the catalog's blocking wake-up.
import { createServer, type Server, type Socket } from 'node:net';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  attachFrameChannel,
  decodeProxyFrame,
  type AgentFrame,
  type Endpoint,
  type FrameChannel,
  type ProxyFrame,
  type ProxySnapshot,
} from '../../lib/proxy-api/index.ts';
import { freePort } from '../lib/net.ts';
import { percentileSorted } from '../lib/stats.ts';
import { describeForeign, startForeignMeter } from '../lib/foreign.ts';
import type { ScenarioContext, ScenarioReport } from '../lib/scenario.ts';
import { REPO_ROOT, render, startAndWait, type PathContext } from '../dataplane/paths.ts';
import { buildPairSnapshots } from '../dataplane/remora-snapshot.ts';

const ROUNDS = 8;
const RATE = 200;

interface Answer {
  startedAt: number;
  doneAt: number;
  body: string;
}

export async function runRouting(ctx: ScenarioContext): Promise<ScenarioReport> {
  const out: ScenarioReport = { headline: [], section: ['## Routing changes', ''], commands: [] };
  let server: Server | undefined;
  let stopLoad = false;
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  try {
    const pctx = {
      registry: ctx.registry,
      runDir: ctx.runDir,
      pki: ctx.pki,
      log: ctx.log,
    } as unknown as PathContext;
    const portA = await freePort();
    const portB = await freePort();
    const conf = render(pctx, 'nginx-instances.conf.tmpl', {
      RUN: ctx.runDir,
      PORT_A: portA,
      PORT_B: portB,
    });
    const nginxArgs = [
      '-p',
      `${ctx.runDir}/`,
      '-e',
      join(ctx.runDir, 'instances.error.log'),
      '-c',
      conf,
    ];
    execFileSync('nginx', ['-t', '-q', ...nginxArgs], { stdio: 'pipe' });
    await startAndWait(pctx, 'instances-nginx', 'nginx', nginxArgs, [portA, portB]);

    const ports = {
      clientUpstreamPort: await freePort(),
      clientInboundPort: await freePort(),
      serverInboundPort: await freePort(),
      appPort: portA,
      clientAppPort: portA,
    };
    const pair = buildPairSnapshots(ctx.pki, 'http', ports);
    const api2Port = await freePort();
    const servers: Array<{ id: string; port: number; app: number }> = [
      { id: 'api-1', port: ports.serverInboundPort, app: portA },
      { id: 'api-2', port: api2Port, app: portB },
    ];
    for (const s of servers) {
      const snap: ProxySnapshot = {
        ...pair.server,
        instance: { ...pair.server.instance, id: s.id },
        inbound: { ...pair.server.inbound, bindPort: s.port, localAppPort: s.app },
      };
      const file = join(ctx.runDir, `routing-${s.id}.json`);
      writeFileSync(file, JSON.stringify(snap), { mode: 0o600 });
      await startAndWait(
        pctx,
        `routing-${s.id}`,
        process.execPath,
        [
          join(REPO_ROOT, 'bin', 'remora.js'),
          'proxy',
          '--static-config',
          file,
          '--admin',
          '0',
          '--log-level',
          'warn',
        ],
        [s.port],
        { cwd: REPO_ROOT },
      );
    }
    const endpoint = (i: number): Endpoint => ({
      id: servers[i]!.id,
      address: '127.0.0.1',
      port: servers[i]!.port,
      weight: 1,
      node: 'bench',
    });
    let version = 0;
    const snapshotWith = (eps: Endpoint[]): ProxySnapshot => ({
      ...pair.client,
      version: ++version,
      upstreams: [{ ...pair.client.upstreams[0]!, endpoints: eps }],
    });

    // the bench as web's agent
    const socketPath = join(ctx.runDir, 'routing-agent.sock');
    let channel: FrameChannel<AgentFrame> | undefined;
    const acks = new Map<number, number>();
    server = createServer((socket: Socket) => {
      const ch = attachFrameChannel<ProxyFrame, AgentFrame>(socket, {
        decode: decodeProxyFrame,
        onFrame: (f) => {
          if (f.type === 'hello') {
            channel = ch;
            ch.send({ v: 1, type: 'snapshot', snapshot: snapshotWith([endpoint(0)]) });
          } else if (f.type === 'ack') acks.set(f.version, f.ok ? performance.now() : -1);
        },
      });
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(socketPath, () => resolve());
    });
    ctx.registry.start(
      'routing-web-1',
      process.execPath,
      [
        join(REPO_ROOT, 'bin', 'remora.js'),
        'proxy',
        '--instance',
        'web-1',
        '--agent-socket',
        socketPath,
        '--admin',
        '0',
        '--log-level',
        'warn',
      ],
      { where: 'sut', cwd: REPO_ROOT },
    );
    const upDeadline = performance.now() + 60_000;
    while (!acks.has(1) && performance.now() < upDeadline) await sleep(50);
    if ((acks.get(1) ?? -1) < 0)
      throw new Error("web's proxy did not ack its first snapshot over the agent socket");

    // steady load, open loop at RATE, every answer recorded
    const answers: Answer[] = [];
    let failures = 0;
    const loadDone = (async () => {
      const t0 = performance.now();
      for (let i = 0; !stopLoad && i < 1_000_000; i++) {
        const due = t0 + (i * 1000) / RATE;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        const startedAt = performance.now();
        const req = request(
          { host: '127.0.0.1', port: ports.clientUpstreamPort, path: '/', agent, timeout: 5000 },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (body += d));
            res.on('end', () => answers.push({ startedAt, doneAt: performance.now(), body }));
          },
        );
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', () => failures++);
        req.end();
      }
    })();

    const meter = startForeignMeter(ctx.pinning, () => ctx.registry.pidsOn('sut'));
    const addMs: number[] = [];
    const removeMs: number[] = [];
    await sleep(500);
    for (let round = 0; round < ROUNDS; round++) {
      // add api-2
      let sent = performance.now();
      channel?.send({ v: 1, type: 'snapshot', snapshot: snapshotWith([endpoint(0), endpoint(1)]) });
      const addDeadline = sent + 10_000;
      let firstB: Answer | undefined;
      while (!firstB && performance.now() < addDeadline) {
        await sleep(2);
        firstB = answers.find((a) => a.doneAt >= sent && a.body === 'api-2');
      }
      if (firstB) addMs.push(firstB.doneAt - sent);
      await sleep(300);
      // api-1 leaves (its health check failed, as the agent would report it)
      sent = performance.now();
      channel?.send({ v: 1, type: 'snapshot', snapshot: snapshotWith([endpoint(1)]) });
      await sleep(1000);
      const lastA = answers.filter((a) => a.startedAt >= sent && a.body === 'api-1').pop();
      removeMs.push(lastA ? lastA.doneAt - sent : 0);
      // back to api-1 only for the next round
      channel?.send({ v: 1, type: 'snapshot', snapshot: snapshotWith([endpoint(0)]) });
      await sleep(500);
      answers.splice(0, answers.length);
    }
    stopLoad = true;
    await loadDone;
    const foreign = meter();
    addMs.sort((a, b) => a - b);
    removeMs.sort((a, b) => a - b);
    const f = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : '–');
    out.section.push(
      `web's proxy fed over the agent socket (the bench plays the agent); two instances of api behind their own server-side proxies; ` +
        `steady ${RATE} req/s through web's proxy; ${ROUNDS} rounds.`,
      '',
      '| change | p50 (ms) | p99 (ms) | max (ms) | rounds |',
      '|---|---:|---:|---:|---:|',
      `| new instance in the snapshot → its first answer | ${f(percentileSorted(addMs, 50))} | ${f(percentileSorted(addMs, 99))} | ${f(addMs[addMs.length - 1] ?? Number.NaN)} | ${addMs.length} of ${ROUNDS} |`,
      `| instance removed from the snapshot → last request routed to it | ${f(percentileSorted(removeMs, 50))} | ${f(percentileSorted(removeMs, 99))} | ${f(removeMs[removeMs.length - 1] ?? Number.NaN)} | ${removeMs.length} of ${ROUNDS} |`,
      '',
      `Resolution: one request every ${(1000 / RATE).toFixed(0)} ms, so 0 means no request sent after the snapshot went to the ` +
        `removed instance. Failed requests during the rounds: ${failures}. ${describeForeign(foreign)}.`,
      '',
      'End to end, "health change in the catalog → proxies routing accordingly" ≈ catalog blocking wake-up (catalog table) + ' +
        'the agent\'s reaction + the figure above; the agent scenario ("Agent on one host") measures the whole chain through a real `remora agent`.',
      '',
    );
    out.headline.push(
      `Endpoint changes reach traffic: new instance answers after p50 ${f(percentileSorted(addMs, 50))} ms; a removed one stops receiving requests after p50 ${f(percentileSorted(removeMs, 50))} ms (snapshot → traffic)`,
    );
    out.commands.push(
      'Routing:',
      '',
      '```',
      'nginx -p $RUN/ -c $RUN/nginx-instances.conf   # bench/conf/nginx-instances.conf.tmpl, SUT core',
      'node bin/remora.js proxy --static-config $RUN/routing-api-<n>.json --admin 0 --log-level warn   # × 2, SUT core',
      'node bin/remora.js proxy --instance web-1 --agent-socket $RUN/routing-agent.sock --admin 0 --log-level warn   # SUT core',
      '```',
      '',
    );
  } catch (err) {
    out.section.push(`Not measured — ${(err as Error).message.split('\n')[0]}`, '');
  } finally {
    stopLoad = true;
    agent.destroy();
    await ctx.registry.stopAll();
    server?.close();
  }
  return out;
}
