// A whole host on loopback for the agent's integration tests: real nats-server, real
// `remora devconsul`, real `remora control`, real `remora agent` with real proxies, and the
// demo apps from examples/apps. Everything started here is stopped by PID in teardown.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { startNatsServer, freePort, type NatsServerHandle } from '../../helpers/nats.ts';
import { startDevConsulProcess, type DevConsulProcess } from '../../helpers/devconsul.ts';
import { REMORA_BIN } from '../../helpers/cli.ts';
import { connectNats, createToken } from '../../../lib/nats/index.ts';
import { createSilentLogger } from '../../../lib/log/index.ts';
import { reapOnExit, reapProxiesOnExit } from '../../helpers/reaper.ts';
import { waitFor } from '../../../lib/util/index.ts';
import type { AgentStatus } from '../../../agent/index.ts';

const ROOT = new URL('../../../', import.meta.url).pathname;
export const OPERATOR_TOKEN = 'test-operator-token-0123456789abcdef';

export interface Proc {
  pid: number;
  child: ChildProcess;
  output(): string;
  /** Sends the signal and waits for the exit (SIGKILL after the grace period). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

function startProc(
  args: string[],
  env: Record<string, string>,
  opts: { node?: boolean } = {},
): Proc {
  const child = spawn(
    opts.node === false ? args[0]! : process.execPath,
    opts.node === false ? args.slice(1) : args,
    {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  // killed with the test process even when tap ends it before the teardowns ran
  reapOnExit(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
  });
  return {
    pid: child.pid!,
    child,
    output: () => out,
    exited,
    async stop(signal = 'SIGTERM', graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.kill(signal);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export interface HttpResult {
  status: number;
  body: string;
  json: unknown;
}

/** What examples/apps/web.js answers. */
export interface WebAnswer {
  service: 'web';
  instance: string;
  peer: string | null;
  api: { service: string; instance: string; peer: string | null; self: string | null } | null;
  apiStatus?: number;
  apiError?: string | null;
  echo?: { echoed?: string; error?: string };
}

/** The fields of a `/v1/health/connect` entry the tests read. */
export interface HealthEntry {
  Node: { Node: string };
  Service: {
    ID: string;
    Kind?: string;
    Port: number;
    Meta: Record<string, string>;
    Proxy: { DestinationServiceID: string };
  };
}

export function httpGet(url: string, timeoutMs = 5000): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = request(url, { timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          json = null;
        }
        resolve({ status: res.statusCode ?? 0, body, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

export interface Ports {
  webApp: number;
  api1App: number;
  api2App: number;
  echoApp: number;
  webSidecar: number;
  api1Sidecar: number;
  api2Sidecar: number;
  echoSidecar: number;
  apiLocal: number;
  echoLocal: number;
}

export function webDefinition(p: Ports): object {
  return {
    service: {
      name: 'web',
      id: 'web-1',
      port: p.webApp,
      connect: {
        sidecar_service: {
          port: p.webSidecar,
          proxy: {
            config: { protocol: 'http' },
            upstreams: [
              {
                destination_name: 'api',
                local_bind_port: p.apiLocal,
                config: { protocol: 'http', load_balancer: 'round_robin' },
              },
              {
                destination_name: 'echo',
                local_bind_port: p.echoLocal,
                config: { protocol: 'tcp' },
              },
            ],
          },
        },
      },
    },
  };
}

export function apiDefinition(p: Ports, which: 1 | 2 = 1): object {
  return {
    Service: {
      Name: 'api',
      ID: `api-${which}`,
      Port: which === 1 ? p.api1App : p.api2App,
      Connect: {
        SidecarService: {
          Port: which === 1 ? p.api1Sidecar : p.api2Sidecar,
          Proxy: { Config: { protocol: 'http' } },
        },
      },
    },
  };
}

export function echoDefinition(p: Ports): object {
  return {
    service: {
      name: 'echo',
      port: p.echoApp,
      connect: { sidecar_service: { port: p.echoSidecar, proxy: { config: { protocol: 'tcp' } } } },
    },
  };
}

export interface Mesh {
  nats: NatsServerHandle;
  consul: DevConsulProcess;
  control: Proc;
  token: string;
  ports: Ports;
  configDir: string;
  dataDir: string;
  adminPort: number;
  writeDefinition(name: string, body: unknown): Promise<void>;
  removeDefinition(name: string): Promise<void>;
  startApp(script: 'web' | 'api' | 'echo', env: Record<string, string>): Proc;
  startAgent(extra?: Record<string, string>, args?: string[]): Proc;
  agentEnv(extra?: Record<string, string>): Record<string, string>;
  /** The agent's status JSON. */
  status(): Promise<AgentStatus>;
  /** Healthy connect entries of a service in Consul. */
  healthy(service: string): Promise<HealthEntry[]>;
  proxyPids(): Promise<Record<string, number>>;
  /** The tail of every proxy log, for failure reports. */
  proxyLogs(): Promise<string>;
}

/** Starts NATS, devconsul, control and the demo apps; the agent is started by the test. */
export async function startMesh(
  t: { teardown(fn: () => unknown): void },
  opts: { tracingEndpoint?: string; controlEnv?: Record<string, string> } = {},
): Promise<Mesh> {
  const base = await mkdtemp(join(tmpdir(), 'remora-agent-it-'));
  const configDir = join(base, 'services.d');
  const dataDir = join(base, 'data');
  await rm(configDir, { recursive: true, force: true });
  await mkdir(configDir, { recursive: true });
  const procs: Proc[] = [];
  // the agents' proxies run detached; they go with the test process too
  reapProxiesOnExit(dataDir);
  const nats = await startNatsServer();
  let consul: DevConsulProcess;
  try {
    consul = await startDevConsulProcess();
  } catch (err) {
    await nats.stop();
    throw err;
  }
  const control = startProc([REMORA_BIN, 'control', '--log-level', 'warn'], {
    REMORA_CONTROL_NATS_SERVERS: nats.url,
    REMORA_CONTROL_CONSUL_ADDRESS: consul.url,
    REMORA_CONTROL_OPERATOR_TOKEN: OPERATOR_TOKEN,
    REMORA_CONTROL_DEFAULT_POLICY: 'allow',
    REMORA_CONTROL_TRACING_ENDPOINT: opts.tracingEndpoint ?? '',
    ...opts.controlEnv,
  });
  procs.push(control);
  const adminPort = await freePort();

  const mesh: Mesh = {
    nats,
    consul,
    control,
    token: '',
    ports: {
      webApp: await freePort(),
      api1App: await freePort(),
      api2App: await freePort(),
      echoApp: await freePort(),
      webSidecar: await freePort(),
      api1Sidecar: await freePort(),
      api2Sidecar: await freePort(),
      echoSidecar: await freePort(),
      apiLocal: await freePort(),
      echoLocal: await freePort(),
    },
    configDir,
    dataDir,
    adminPort,
    async writeDefinition(name, body) {
      const tmp = join(base, `${name}.tmp`);
      await writeFile(tmp, typeof body === 'string' ? body : JSON.stringify(body, null, 2));
      await rename(tmp, join(configDir, name));
    },
    async removeDefinition(name) {
      await rm(join(configDir, name), { force: true });
    },
    startApp(script, env) {
      const p = startProc([join(ROOT, 'examples/apps', `${script}.js`)], env);
      procs.push(p);
      return p;
    },
    agentEnv(extra = {}) {
      return {
        REMORA_AGENT_NATS_SERVERS: nats.url,
        REMORA_AGENT_CONSUL_ADDRESS: consul.url,
        REMORA_AGENT_NODE: 'node-a',
        REMORA_AGENT_NODE_TOKEN: mesh.token,
        REMORA_AGENT_CONFIG_DIR: configDir,
        REMORA_AGENT_DATA_DIR: dataDir,
        REMORA_AGENT_ADMIN_PORT: String(adminPort),
        REMORA_AGENT_ADMIN_PORT_BASE: '0',
        REMORA_AGENT_ADVERTISE_ADDRESS: '127.0.0.1',
        REMORA_AGENT_PROXY_BIND_ADDRESS: '127.0.0.1',
        REMORA_AGENT_TRACING_ENDPOINT: opts.tracingEndpoint ?? '',
        REMORA_AGENT_DRAIN_TIMEOUT_MS: '3000',
        REMORA_AGENT_CHECK_TTL_MS: '30000',
        REMORA_AGENT_LOG_LEVEL: 'info',
        REMORA_PROXY_LOG_LEVEL: 'info',
        ...extra,
      };
    },
    startAgent(extra = {}, args = []) {
      const p = startProc([REMORA_BIN, 'agent', ...args], mesh.agentEnv(extra));
      procs.push(p);
      return p;
    },
    async status() {
      return (await httpGet(`http://127.0.0.1:${adminPort}/status`)).json as AgentStatus;
    },
    async healthy(service) {
      const r = await httpGet(`${consul.url}/v1/health/connect/${service}?passing`);
      return Array.isArray(r.json) ? (r.json as HealthEntry[]) : [];
    },
    async proxyLogs() {
      let out = '';
      let dirs: string[];
      try {
        dirs = await readdir(join(dataDir, 'instances'));
      } catch {
        return out;
      }
      for (const d of dirs) {
        const log = await readFile(join(dataDir, 'instances', d, 'proxy.log'), 'utf8').catch(
          () => '',
        );
        out += `--- ${d}\n${log.slice(-3000)}\n`;
      }
      return out;
    },
    async proxyPids() {
      const out: Record<string, number> = {};
      let dirs: string[];
      try {
        dirs = await readdir(join(dataDir, 'instances'));
      } catch {
        return out;
      }
      for (const d of dirs) {
        try {
          out[d] = (
            JSON.parse(await readFile(join(dataDir, 'instances', d, 'proxy.pid'), 'utf8')) as {
              pid: number;
            }
          ).pid;
        } catch {
          // no proxy
        }
      }
      return out;
    },
  };

  t.teardown(async () => {
    for (const p of procs.reverse()) await p.stop('SIGTERM', 5000);
    // REMORA_TEST_KEEP_LOGS=<dir> keeps every process's output for a post-mortem
    const keep = process.env.REMORA_TEST_KEEP_LOGS;
    if (keep) {
      await mkdir(keep, { recursive: true });
      await writeFile(
        join(keep, 'processes.log'),
        procs.map((p) => `=== pid ${p.pid}\n${p.output()}`).join('\n'),
      );
      await writeFile(join(keep, 'proxies.log'), await mesh.proxyLogs());
    }
    // proxies are detached from the agent: stop any the agents left behind, by PID
    for (const pid of Object.values(await mesh.proxyPids())) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await consul.stop();
    await nats.stop();
    await rm(base, { recursive: true, force: true });
  });

  // control is up once it answers on NATS; then a node token for this host (asked over one NATS
  // connection of this process: a CLI process per attempt cost seconds per mesh on a busy box;
  // the CLI's own token command is tested in test/control/cli.test.ts)
  const nc = await connectNats({
    servers: nats.url,
    name: 'remora-test',
    logger: createSilentLogger(),
  });
  try {
    mesh.token = await waitFor(
      'remora control to create the CA and serve tokens',
      async () => {
        try {
          return (await createToken(nc, 'dc1', OPERATOR_TOKEN, { node: 'node-a', services: ['*'] }))
            .token;
        } catch {
          return null; // not serving yet
        }
      },
      90_000,
      100,
    );
  } finally {
    await nc.close();
  }

  const P = mesh.ports;
  mesh.startApp('api', { PORT: String(P.api1App), INSTANCE_ID: 'api-1' });
  mesh.startApp('api', { PORT: String(P.api2App), INSTANCE_ID: 'api-2' });
  mesh.startApp('echo', { PORT: String(P.echoApp) });
  mesh.startApp('web', {
    PORT: String(P.webApp),
    INSTANCE_ID: 'web-1',
    API_URL: `http://127.0.0.1:${P.apiLocal}`,
    ECHO_ADDR: `127.0.0.1:${P.echoLocal}`,
  });
  return mesh;
}

/** GET through web → its proxy → api's proxy → api; resolves with the parsed answer. */
/**
 * web and api as a team coming from Consul would write them: no protocol anywhere (`apiConfig`:
 * web's upstream `config` for api).
 */
export function consulDefinitions(mesh: Mesh, apiConfig?: object): Record<string, object> {
  const p = mesh.ports;
  const config = apiConfig ? { config: apiConfig } : {};
  return {
    'web.json': {
      service: {
        name: 'web',
        id: 'web-1',
        port: p.webApp,
        connect: {
          sidecar_service: {
            port: p.webSidecar,
            proxy: {
              upstreams: [{ destination_name: 'api', local_bind_port: p.apiLocal, ...config }],
            },
          },
        },
      },
    },
    'api.json': {
      service: {
        name: 'api',
        id: 'api-1',
        port: p.api1App,
        connect: { sidecar_service: { port: p.api1Sidecar } },
      },
    },
  };
}

/** Writes a Consul config entry to the mesh's catalog; throws when it is refused. */
export async function putConfig(mesh: Mesh, entry: object): Promise<void> {
  const r = await fetch(`${mesh.consul.url}/v1/config`, {
    method: 'PUT',
    body: JSON.stringify(entry),
  });
  if ((await r.text()).trim() !== 'true') throw new Error(`config write refused: ${r.status}`);
}

/** Calls through web → api by `workers` callers, one request at a time each, until stopped. */
export interface WebLoad {
  readonly ok: number;
  readonly failures: string[];
  /** Stops the callers and waits for their last requests. */
  stop(): Promise<void>;
}

/** Starts a load through web → api, bounded in count and time (`limitMs`). */
export function startWebLoad(mesh: Mesh, workers = 1, limitMs = 120_000): WebLoad {
  let stopped = false;
  let ok = 0;
  const failures: string[] = [];
  const deadline = Date.now() + limitMs;
  const worker = async () => {
    for (let i = 0; i < 20_000 && !stopped && Date.now() < deadline; i++) {
      try {
        const r = await callWeb(mesh);
        if (r.status === 200) ok += 1;
        else failures.push(`HTTP ${r.status}: ${r.body.slice(0, 200)}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
  };
  const all = Promise.all(Array.from({ length: workers }, () => worker()));
  return {
    get ok() {
      return ok;
    },
    failures,
    async stop() {
      stopped = true;
      await all;
    },
  };
}

export async function callWeb(mesh: Mesh, path = '/'): Promise<HttpResult> {
  return httpGet(`http://127.0.0.1:${mesh.ports.webApp}${path}`);
}

/** True when web reaches api through the proxies. */
export async function webReachesApi(mesh: Mesh): Promise<WebAnswer | null> {
  try {
    const r = await callWeb(mesh);
    const answer = r.json as WebAnswer | null;
    return r.status === 200 && answer?.api?.instance ? answer : null;
  } catch {
    return null;
  }
}

/** The `remora` CLI's environment for this mesh, with the operator token. */
export function cliEnv(mesh: Mesh): Record<string, string> {
  return {
    REMORA_CLI_NATS_SERVERS: mesh.nats.url,
    REMORA_CLI_CONSUL_ADDRESS: mesh.consul.url,
    REMORA_CLI_OPERATOR_TOKEN: OPERATOR_TOKEN,
  };
}

/** What a TCP connection to `port` gets back for `text`: the echo, or null when it is closed. */
export function tcpExchange(port: number, text: string): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.length >= text.length) s.end();
    });
    s.on('error', () => resolve(null));
    s.on('close', () => resolve(out === '' ? null : out));
    s.setTimeout(5000, () => s.destroy());
  });
}

export { waitFor, startProc, REMORA_BIN };
