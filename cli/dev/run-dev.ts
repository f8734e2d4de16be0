// `remora dev`: a whole mesh on one machine, every part a real process started the way an
// operator starts it (`remora devconsul`, `nats-server`, `remora control`, `remora agent`, which
// spawns one `remora proxy` per instance), plus the demo apps from examples/.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConfigOf } from '../../lib/config/index.ts';
import type { devSchema } from '../../lib/config/index.ts';
import { RemoraError, toRemoraError } from '../../lib/errors/index.ts';
import type { Logger } from '../../lib/log/index.ts';
import { connectNats, createToken, requestRoots, upsertIntention } from '../../lib/nats/index.ts';
import {
  decodeDefinitionFile,
  mergeDefinitions,
  type ServiceDefinition,
} from '../../agent/index.ts';
import { startChild, type DevChild } from './children.ts';
import { startNatsChild, type NatsChild } from './nats-server.ts';
import { findExecutable } from '../../lib/util/index.ts';

export type DevConfig = ConfigOf<typeof devSchema.tree>;

export const REPO_ROOT = new URL('../../', import.meta.url).pathname;
const REMORA_BIN = join(REPO_ROOT, 'bin/remora.js');
export const DEV_NODE = 'dev';

async function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = createServer();
    s.once('error', () => done(false));
    s.listen(port, '127.0.0.1', () => s.close(() => done(true)));
  });
}

async function pickPort(wanted: number): Promise<number> {
  if (wanted !== 0) return wanted;
  return new Promise((done, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => done(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** Loads the demo definitions; any problem in them is a start-up error. */
export function loadDemoDefinitions(dir: string): ServiceDefinition[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();
  const merged = mergeDefinitions(
    files.map((f) => decodeDefinitionFile(readFileSync(join(dir, f), 'utf8'), join(dir, f))),
  );
  const first = merged.problems[0];
  if (first) throw first;
  return merged.services;
}

/** Every port on 127.0.0.1 the demo definitions need. */
export function demoPorts(defs: readonly ServiceDefinition[]): number[] {
  const ports = new Set<number>();
  for (const d of defs) {
    ports.add(d.port);
    if (d.sidecar?.port) ports.add(d.sidecar.port);
    for (const u of d.sidecar?.upstreams ?? []) ports.add(u.localBindPort);
  }
  return [...ports].sort((a, b) => a - b);
}

async function waitUntil<T>(
  what: string,
  deadline: number,
  check: () => Promise<T | undefined>,
  why: () => string,
): Promise<T> {
  let last = '';
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) {
      throw new RemoraError(
        'REMORA_E_DEV_START_FAILED',
        `${what} did not become ready in time${last ? ` (${last})` : ''}\n${why()}`,
        {
          part: what,
        },
      );
    }
    await sleep(200);
  }
}

export interface DevMesh {
  webUrl: string;
  consulUrl: string;
  natsUrl: string;
  operatorToken: string;
  agentAdminPort: number;
  workDir: string;
  stop(): Promise<void>;
}

/** Starts the demo mesh and resolves once a call through it succeeds. */
export async function startDevMesh(o: {
  config: DevConfig;
  env: Record<string, string | undefined>;
  logger: Logger;
}): Promise<DevMesh> {
  const { config, logger } = o;
  const natsExe = findExecutable('nats-server', o.env.PATH);
  if (!natsExe) {
    throw new RemoraError('REMORA_E_DEV_NATS_MISSING', 'nats-server was not found on PATH', {
      PATH: o.env.PATH ?? '',
    });
  }
  const examplesDir = isAbsolute(config.examplesDir)
    ? config.examplesDir
    : resolve(REPO_ROOT, config.examplesDir);
  const defs = loadDemoDefinitions(examplesDir);
  const web = defs.find((d) => d.name === 'web');
  if (!web) {
    throw new RemoraError(
      'REMORA_E_DEV_START_FAILED',
      `no \`web\` service among the demo definitions in ${examplesDir}`,
      { examplesDir },
    );
  }
  for (const port of demoPorts(defs)) {
    if (!(await portFree(port))) {
      throw new RemoraError(
        'REMORA_E_DEV_PORT_IN_USE',
        `port 127.0.0.1:${port}, needed by the demo services in ${examplesDir}, is in use`,
        {
          port,
        },
      );
    }
  }
  const workDir = mkdtempSync(join(tmpdir(), 'remora-dev-'));
  const logDir = join(workDir, 'logs');
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const children: DevChild[] = [];
  let nats: NatsChild | undefined;
  const apps: DevChild[] = [];
  let agent: DevChild | undefined;
  let control: DevChild | undefined;
  let catalog: DevChild | undefined;

  const stop = async (): Promise<void> => {
    // ordered: the agent drains and stops its proxies and deregisters, then the apps, then the
    // control plane, NATS and the catalog it all stood on
    if (agent) await agent.stop(30_000);
    await Promise.all(apps.map((a) => a.stop(5000)));
    if (control) await control.stop(10_000);
    if (nats) await nats.stop();
    if (catalog) await catalog.stop(5000);
    if (config.keepWorkDir) logger.info({ workDir }, 'kept the work directory');
    else rmSync(workDir, { recursive: true, force: true });
  };

  try {
    const deadline = Date.now() + config.readyTimeoutMs;
    const baseEnv = { PATH: o.env.PATH, HOME: o.env.HOME, LANG: o.env.LANG };
    const node = process.execPath;
    const consulPort = await pickPort(config.consulPort);
    const consulUrl = `http://127.0.0.1:${consulPort}`;
    catalog = startChild({
      name: 'catalog',
      command: node,
      args: [
        REMORA_BIN,
        'devconsul',
        '--listen',
        `127.0.0.1:${consulPort}`,
        '--log-level',
        config.log.level,
      ],
      env: baseEnv,
      logDir,
      logger,
    });
    children.push(catalog);
    await waitUntil(
      'the embedded catalog',
      deadline,
      async () => ((await fetch(`${consulUrl}/v1/status/leader`)).ok ? true : undefined),
      () => catalog?.tail() ?? '',
    );
    logger.info({ url: consulUrl }, 'catalog ready');

    nats = await startNatsChild({
      executable: natsExe,
      port: await pickPort(config.natsPort),
      logger,
    });
    const natsUrl = nats.url;

    const operatorToken = randomBytes(24).toString('base64url');
    const tracingEnv = (program: string) => ({
      [`REMORA_${program}_TRACING_ENDPOINT`]: config.otlpEndpoint,
    });
    control = startChild({
      name: 'control',
      command: node,
      args: [REMORA_BIN, 'control', '--log-level', config.log.level],
      env: {
        ...baseEnv,
        REMORA_CONTROL_DATACENTER: config.datacenter,
        REMORA_CONTROL_NATS_SERVERS: natsUrl,
        REMORA_CONTROL_CONSUL_ADDRESS: consulUrl,
        REMORA_CONTROL_OPERATOR_TOKEN: operatorToken,
        REMORA_CONTROL_DEFAULT_POLICY: 'deny',
        ...tracingEnv('CONTROL'),
      },
      logDir,
      logger,
    });
    const nc = await connectNats({ servers: natsUrl, name: 'remora-dev', logger });
    let nodeToken: string;
    try {
      await waitUntil(
        'the control plane',
        deadline,
        () => requestRoots(nc, config.datacenter, { timeoutMs: 1000 }),
        () => control?.tail() ?? '',
      );
      logger.info('control plane ready');
      // the demo's policy: default deny, and exactly the calls the demo makes allowed
      for (const d of defs) {
        for (const u of d.sidecar?.upstreams ?? []) {
          await upsertIntention(nc, config.datacenter, operatorToken, {
            source: d.name,
            destination: u.destinationName,
            action: 'allow',
            description: 'remora dev demo',
          });
        }
      }
      const services = [...new Set(defs.map((d) => d.name))];
      nodeToken = (
        await createToken(nc, config.datacenter, operatorToken, { node: DEV_NODE, services })
      ).token;
    } finally {
      await nc.close();
    }

    for (const d of defs) {
      const app = d.meta.app;
      if (!app) continue;
      const env: Record<string, string | undefined> = {
        ...baseEnv,
        PORT: String(d.port),
        INSTANCE_ID: d.id,
      };
      for (const u of d.sidecar?.upstreams ?? []) {
        const key = u.destinationName.toUpperCase().replace(/[^A-Z0-9]/g, '_');
        env[`${key}_URL`] = `http://${u.localBindAddress}:${u.localBindPort}`;
        env[`${key}_ADDR`] = `${u.localBindAddress}:${u.localBindPort}`;
      }
      const child = startChild({
        name: `app-${d.id}`,
        command: node,
        args: [resolve(REPO_ROOT, app)],
        env,
        logDir,
        logger,
      });
      apps.push(child);
      children.push(child);
    }

    const agentAdminPort = await pickPort(config.agentAdminPort);
    agent = startChild({
      name: 'agent',
      command: node,
      args: [
        REMORA_BIN,
        'agent',
        '--config-dir',
        examplesDir,
        '--data-dir',
        join(workDir, 'agent'),
        '--node',
        DEV_NODE,
        '--log-level',
        config.log.level,
      ],
      env: {
        ...baseEnv,
        REMORA_AGENT_DATACENTER: config.datacenter,
        REMORA_AGENT_NATS_SERVERS: natsUrl,
        REMORA_AGENT_CONSUL_ADDRESS: consulUrl,
        REMORA_AGENT_NODE_TOKEN: nodeToken,
        REMORA_AGENT_ADMIN_PORT: String(agentAdminPort),
        ...tracingEnv('AGENT'),
      },
      logDir,
      logger,
    });
    children.push(agent);

    const webUrl = `http://127.0.0.1:${web.port}/`;
    await waitUntil(
      'the demo calls web → api and web → echo through the mesh',
      deadline,
      async () => {
        for (const c of children) {
          if (c.exited()) throw new Error(`${c.name} exited:\n${c.tail()}`);
        }
        // the agent first: every certificate issued, every instance registered and every
        // upstream's endpoints known (a certificate arriving later swaps a proxy's TLS material)
        const st = await fetch(`http://127.0.0.1:${agentAdminPort}/status`, {
          signal: AbortSignal.timeout(3000),
        });
        const status = (await st.json()) as {
          waitingFor?: string[];
          instances?: { service: string; registered: boolean; proxy: { ready: boolean } | null }[];
          upstreams?: { service: string; endpoints: number }[];
        };
        if (!st.ok || (status.waitingFor?.length ?? 1) > 0) return undefined;
        // every proxy serving, and every upstream listing all its instances (api has two)
        const instances = status.instances ?? [];
        if (!instances.every((i) => i.registered && i.proxy?.ready)) return undefined;
        const all = (service: string): number =>
          instances.filter((i) => i.service === service).length;
        if (!(status.upstreams ?? []).every((u) => u.endpoints >= all(u.service))) return undefined;
        const res = await fetch(webUrl, { signal: AbortSignal.timeout(3000) });
        const body = (await res.json()) as { apiStatus?: number };
        if (!res.ok || body.apiStatus !== 200) return undefined;
        // and the TCP upstream (echo): its endpoints reach web's proxy on their own schedule
        const echo = await fetch(`${webUrl}echo?msg=ready`, { signal: AbortSignal.timeout(6000) });
        const e = (await echo.json()) as { echo?: { echoed?: string } };
        return e.echo?.echoed === 'ready' ? true : undefined;
      },
      () => `agent log (${agent?.logFile}):\n${agent?.tail(12) ?? ''}`,
    );
    return { webUrl, consulUrl, natsUrl, operatorToken, agentAdminPort, workDir, stop };
  } catch (err) {
    const e = toRemoraError(err, 'REMORA_E_DEV_START_FAILED');
    logger.error({ code: e.code, workDir }, 'remora dev could not start; stopping what it started');
    await stop().catch(() => undefined);
    throw e;
  }
}

/** What to try next, printed after the ready line. */
/**
 * A service-resolver that makes api's v1 instances the default, names v2, and fails v1's calls
 * over to v2 when no v1 instance is healthy (quick start).
 */
const CANARY_RESOLVER = JSON.stringify({
  Kind: 'service-resolver',
  Name: 'api',
  DefaultSubset: 'v1',
  Subsets: {
    v1: { Filter: 'Service.Meta.version == v1' },
    v2: { Filter: 'Service.Meta.version == v2' },
  },
  Failover: { v1: { ServiceSubset: 'v2' } },
});

export function renderNextSteps(mesh: DevMesh, config: DevConfig): string {
  const env = `REMORA_CLI_NATS_SERVERS=${mesh.natsUrl} REMORA_CLI_OPERATOR_TOKEN=${mesh.operatorToken}`;
  return [
    `remora dev ready: call ${mesh.webUrl}`,
    '',
    'Try:',
    `  curl -s ${mesh.webUrl}            # web → api over mTLS; says which api instance answered and the identities seen`,
    `  curl -s '${mesh.webUrl}echo?msg=hi'   # web → echo over the tcp upstream`,
    `  ${env} npx remora intention create --deny web api`,
    `  curl -s ${mesh.webUrl}            # now 403 from api's proxy, naming the intention`,
    `  REMORA_CLI_NATS_SERVERS=${mesh.natsUrl} REMORA_CLI_CONSUL_ADDRESS=${mesh.consulUrl} npx remora explain web api   # the deciding rule, and the protocol api serves`,
    `  ${env} npx remora intention delete web api && ${env} npx remora intention create web api`,
    `  REMORA_CLI_AGENT_ADMIN=http://127.0.0.1:${mesh.agentAdminPort} npx remora status   # instances, proxies, certificates, endpoints`,
    `  REMORA_CLI_AGENT_ADMIN=http://127.0.0.1:${mesh.agentAdminPort} npx remora restart-proxies   # every proxy replaced without a gap (an upgrade)`,
    `  curl -s -X PUT ${mesh.consulUrl}/v1/config -d '${CANARY_RESOLVER}'   # only api-1 (version v1) answers now`,
    `  curl -s -X PUT '${mesh.consulUrl}/v1/agent/service/maintenance/api-1-sidecar-proxy?enable=true&reason=demo'   # api-1 out of service: calls fail over to api-2 (v2); enable=false brings it back`,
    '',
    `Catalog (Consul API): ${mesh.consulUrl}/v1/health/connect/api   NATS: ${mesh.natsUrl}`,
    `Traces: ${config.otlpEndpoint || '(export disabled)'} — run Jaeger all-in-one with OTLP and open http://127.0.0.1:16686`,
    `Logs: ${join(mesh.workDir, 'logs')}`,
    'Ctrl-C stops everything remora dev started.',
  ].join('\n');
}
