// A quick loopback probe to run by hand (not a benchmark; `npm run bench` is the real one):
//   node proxy/tools/probe.ts [protocol=http|tcp] [seconds=3] [connections=32]
// Starts an nginx app (or a Node app when nginx is missing), two `remora proxy` processes
// with static snapshots (web → api over mTLS) and runs wrk direct and through the pair.
/* eslint-disable no-console -- a command-line tool */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROXY_NODE_OPTIONS } from '../../lib/proxy-api/index.ts';
import { createRootCa, createCsr, generateKeyPair, issueLeaf } from '../../lib/pki/index.ts';
import { createTrustDomain, formatSpiffeId } from '../../lib/identity/index.ts';
import {
  DEFAULT_RESILIENCE,
  defaultLoadBalancer,
  type Protocol,
  type ProxySnapshot,
} from '../../lib/proxy-api/index.ts';

const protocol = (process.argv[2] ?? 'http') as Protocol;
const seconds = Number(process.argv[3] ?? 3);
const conns = Number(process.argv[4] ?? 32);
const root = new URL('../../', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'remora-probe-'));
const children: ChildProcess[] = [];
function cleanup(): void {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanup);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} never opened`);
}

function rssMb(pid: number): number {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? 0) / 1024;
}

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, clock ticks of 10 ms
}

function sysc(pid: number): [number, number] {
  const t = readFileSync(`/proc/${pid}/io`, 'utf8');
  return [Number(/syscr: (\d+)/.exec(t)?.[1]), Number(/syscw: (\d+)/.exec(t)?.[1])];
}

function wrk(port: number): number {
  const out = execFileSync(
    'wrk',
    ['-t1', `-c${conns}`, `-d${seconds}s`, `http://127.0.0.1:${port}/`],
    { encoding: 'utf8' },
  );
  return Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
}

const now = Date.now();
const trustDomain = createTrustDomain();
const ca = createRootCa({ trustDomain, ttlMs: 86400_000, now });
function leaf(service: string) {
  const spiffeId = formatSpiffeId({ trustDomain, datacenter: 'dc1', service });
  const keys = generateKeyPair();
  const issued = issueLeaf({
    ca,
    csrPem: createCsr({ ...keys, spiffeId }),
    spiffeId,
    ttlMs: 86400_000,
    now,
  });
  return { spiffeId, certPem: issued.certPem, keyPem: keys.keyPem };
}

const [appPort, webIn, apiIn, webOut] = [
  await freePort(),
  await freePort(),
  await freePort(),
  await freePort(),
];
const body = '0123456789'.repeat(10);
writeFileSync(
  join(dir, 'nginx.conf'),
  `daemon off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/nginx.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:${appPort}; location / { return 200 '${body}'; } } }`,
);
try {
  children.push(spawn('nginx', ['-c', join(dir, 'nginx.conf')], { stdio: 'ignore' }));
} catch {
  throw new Error('nginx is needed for the probe');
}
await waitPort(appPort);

function snapshot(
  service: string,
  l: ReturnType<typeof leaf>,
  inPort: number,
  upstreams: ProxySnapshot['upstreams'],
): ProxySnapshot {
  return {
    version: 1,
    instance: {
      id: `${service}-1`,
      service,
      datacenter: 'dc1',
      node: 'probe',
      trustDomain,
      spiffeId: l.spiffeId,
    },
    inbound: {
      bindAddress: '127.0.0.1',
      bindPort: inPort,
      localAppAddress: '127.0.0.1',
      localAppPort: appPort,
      protocol,
    },
    upstreams,
    tls: { certPem: l.certPem, keyPem: l.keyPem, rootsPem: [ca.certPem] },
    intentions: {
      revision: 1,
      defaultPolicy: 'deny',
      auditMode: false,
      intentions: [{ source: 'web', destination: 'api', action: 'allow' }],
    },
    tracing: { endpoint: '', sampleRatio: 0, headers: {} },
  };
}
const api = leaf('api');
const web = leaf('web');
writeFileSync(join(dir, 'api.json'), JSON.stringify(snapshot('api', api, apiIn, [])));
writeFileSync(
  join(dir, 'web.json'),
  JSON.stringify(
    snapshot('web', web, webIn, [
      {
        destinationName: 'api',
        destinationSpiffeId: api.spiffeId,
        localBindAddress: '127.0.0.1',
        localBindPort: webOut,
        protocol,
        loadBalancer: defaultLoadBalancer(protocol),
        resilience: DEFAULT_RESILIENCE,
        endpoints: [{ id: 'api-1', address: '127.0.0.1', port: apiIn, weight: 1, node: 'probe' }],
      },
    ]),
  ),
);
const nodeArgs = process.env.PROBE_NODE_ARGS?.split(' ').filter(Boolean) ?? PROXY_NODE_OPTIONS;
for (const name of ['api', 'web']) {
  const c = spawn(
    process.execPath,
    [
      ...nodeArgs,
      join(root, 'bin/remora.js'),
      'proxy',
      '--static-config',
      join(dir, `${name}.json`),
      '--admin',
      '0',
      '--log-level',
      'warn',
    ],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  children.push(c);
}
await waitPort(apiIn);
await waitPort(webOut);
const [apiProc, webProc] = [children[1]!, children[2]!];
const idle = [rssMb(webProc.pid!), rssMb(apiProc.pid!)];
try {
  wrk(appPort);
  const direct = wrk(appPort);
  wrk(webOut);
  const c0 = [cpuMs(webProc.pid!), cpuMs(apiProc.pid!)];
  const s0 = [sysc(webProc.pid!), sysc(apiProc.pid!)];
  const pair = wrk(webOut);
  const c1 = [cpuMs(webProc.pid!), cpuMs(apiProc.pid!)];
  const s1 = [sysc(webProc.pid!), sysc(apiProc.pid!)];
  const requests = pair * seconds;
  const perReq = (i: number, j: number) => +((s1[i]![j]! - s0[i]![j]!) / requests).toFixed(2);
  const syscallsPerRequest = {
    clientReads: perReq(0, 0),
    clientWrites: perReq(0, 1),
    serverReads: perReq(1, 0),
    serverWrites: perReq(1, 1),
  };
  const cpuUsPerRequest = {
    client: +(((c1[0]! - c0[0]!) * 1000) / requests).toFixed(1),
    server: +(((c1[1]! - c0[1]!) * 1000) / requests).toFixed(1),
  };
  const peak = [rssMb(webProc.pid!), rssMb(apiProc.pid!)];
  console.log(
    JSON.stringify({
      protocol,
      seconds,
      conns,
      directReqPerSec: direct,
      pairReqPerSec: pair,
      ratioToDirect: +(pair / direct).toFixed(3),
      cpuUsPerRequest,
      syscallsPerRequest,
      rssMb: { idle, peak },
    }),
  );
} finally {
  cleanup();
}
