// The data-plane paths measured side by side. Every path forwards to the same nginx app; every
// proxy runs on the SUT core with one worker / one thread / one event loop.
//
//   direct        load → app
//   direct-h2c    load → app over cleartext HTTP/2 (baseline of the http2 pair)
//   haproxy       load → HAProxy (HTTP in, mTLS out) → HAProxy (mTLS in) → app
//   nginx         load → nginx   (HTTP in, mTLS out) → nginx   (mTLS in) → app
//   remora-http   load → remora proxy web (upstream api, protocol http)  → remora proxy api → app
//   remora-tcp    the same with protocol tcp
//   remora-http2  the same with protocol http2
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import type { Protocol } from '../../lib/proxy-api/types.ts';
import type { BenchPki } from '../lib/certs.ts';
import {
  describeProbe,
  freePort,
  probe,
  probeMtls,
  waitListening,
  type Probe,
} from '../lib/net.ts';
import type { ProcessRegistry, Started } from '../lib/procs.ts';
import type { RoleName } from '../lib/measure.ts';
import { buildPairSnapshots } from './remora-snapshot.ts';
import { PROXY_NODE_OPTIONS } from '../../lib/proxy-api/index.ts';

export const CONF_DIR = fileURLToPath(new URL('../conf/', import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BODY = '0123456789'.repeat(10);

export const PATH_IDS = [
  'direct',
  'direct-h2c',
  'haproxy',
  'nginx',
  'remora-http',
  'remora-tcp',
  'remora-http2',
] as const;
export type PathId = (typeof PATH_IDS)[number];

export const PATH_LABELS: Record<PathId, string> = {
  direct: 'direct → nginx app',
  'direct-h2c': 'direct → nginx app (h2c)',
  haproxy: 'HAProxy pair (L7, mTLS)',
  nginx: 'nginx pair (L7, mTLS)',
  'remora-http': 'Remora pair `http`',
  'remora-tcp': 'Remora pair `tcp`',
  'remora-http2': 'Remora pair `http2`',
};

export interface PathContext {
  registry: ProcessRegistry;
  pki: BenchPki;
  runDir: string;
  log: (m: string) => void;
  app: { started: Started; port: number; h2cPort: number };
  /** The Remora pairs write access logs (`<path>-<side>-access.log` in the run directory). */
  accessLogs: 'off' | 'json' | 'text';
}

export interface ReadyPath {
  id: PathId;
  label: string;
  transport: 'h1' | 'h2c';
  port: number;
  roles: Partial<Record<RoleName, Started>>;
  /** The path whose latency is subtracted for the "added" columns. */
  baseline: PathId;
  /** Commands as run (placement prefix shown once in the report). */
  commands: string[];
  checks: string[];
  /** Failed expectations that did not stop the measurement (shown in the report). */
  warnings: string[];
}

export type PathOutcome =
  { ok: true; path: ReadyPath } | { ok: false; id: PathId; label: string; reason: string };

export function render(
  ctx: PathContext,
  template: string,
  vars: Record<string, string | number>,
): string {
  let text = readFileSync(join(CONF_DIR, template), 'utf8');
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{{${k}}}`, String(v));
  const left = /\{\{([A-Z0-9_]+)\}\}/.exec(text);
  if (left) throw new Error(`template ${template}: no value for {{${left[1]}}}`);
  const out = join(ctx.runDir, template.replace(/\.tmpl$/, ''));
  writeFileSync(out, text);
  return out;
}

function logTail(s: Started, n = 12): string {
  try {
    return readFileSync(s.logFile, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

export async function startAndWait(
  ctx: PathContext,
  name: string,
  cmd: string,
  args: string[],
  ports: number[],
  opts: { cwd?: string } = {},
): Promise<Started> {
  const s = ctx.registry.start(name, cmd, args, { where: 'sut', cwd: opts.cwd });
  let gone = false;
  void s.exited.then(() => (gone = true));
  for (const port of ports) {
    if (!(await waitListening(port, 60_000, () => gone))) {
      await ctx.registry.stop(s, 1000);
      throw new Error(`${name} is not listening on 127.0.0.1:${port}: ${logTail(s)}`);
    }
  }
  // nginx forks its worker after binding: count master + workers
  await new Promise((r) => setTimeout(r, 150));
  ctx.registry.adoptChildren(s);
  return s;
}

export async function startApp(
  registry: ProcessRegistry,
  runDir: string,
  log: (m: string) => void,
): Promise<PathContext['app'] & { command: string }> {
  const port = await freePort();
  const h2cPort = await freePort();
  const ctxLike = { runDir } as PathContext;
  const conf = render(ctxLike, 'nginx-app.conf.tmpl', {
    RUN: runDir,
    APP_PORT: port,
    APP_H2C_PORT: h2cPort,
    BODY,
  });
  execFileSync(
    'nginx',
    ['-t', '-q', '-p', `${runDir}/`, '-e', join(runDir, 'app.error.log'), '-c', conf],
    { stdio: 'pipe' },
  );
  const started = await startAndWait(
    { registry, runDir, log } as unknown as PathContext,
    'app-nginx',
    'nginx',
    ['-p', `${runDir}/`, '-e', join(runDir, 'app.error.log'), '-c', conf],
    [port, h2cPort],
  );
  return {
    started,
    port,
    h2cPort,
    command: `nginx -p $RUN/ -c $RUN/nginx-app.conf   # bench/conf/nginx-app.conf.tmpl`,
  };
}

function expectOk(p: Probe, what: string): string {
  if (p.status !== 200 || p.bytes !== BODY.length)
    throw new Error(
      `${what}: expected HTTP 200 with ${BODY.length} body bytes, got ${describeProbe(p)}`,
    );
  return `${what}: ${describeProbe(p)}`;
}

function anchorLeaf(ctx: PathContext, service: 'web' | 'api'): { certPem: string; keyPem: string } {
  return {
    certPem: readFileSync(join(ctx.pki.dir, `${service}.crt`), 'utf8'),
    keyPem: readFileSync(join(ctx.pki.dir, `${service}.key`), 'utf8'),
  };
}

/** Server side of an anchor pair: no client certificate → refused; web's certificate → 200. */
async function checkAnchorServerSide(
  ctx: PathContext,
  port: number,
  label: string,
): Promise<string[]> {
  const none = await probeMtls({ port, caPem: ctx.pki.caPem, servername: ctx.pki.serverName });
  if (none.status === 200)
    throw new Error(`${label} server side answered 200 WITHOUT a client certificate`);
  const web = anchorLeaf(ctx, 'web');
  const ok = await probeMtls({
    port,
    caPem: ctx.pki.caPem,
    servername: ctx.pki.serverName,
    ...web,
  });
  return [
    `${label} server side without client certificate: ${describeProbe(none)}`,
    expectOk(ok, `${label} server side with web's certificate`),
  ];
}

async function startHaproxy(ctx: PathContext): Promise<ReadyPath> {
  const clientPort = await freePort();
  const serverPort = await freePort();
  const vars = {
    CLIENT_PORT: clientPort,
    SERVER_PORT: serverPort,
    APP_PORT: ctx.app.port,
    CERTS: ctx.pki.dir,
    SERVER_NAME: ctx.pki.serverName,
  };
  const cc = render(ctx, 'haproxy-sidecar-client.cfg.tmpl', vars);
  const sc = render(ctx, 'haproxy-sidecar-server.cfg.tmpl', vars);
  for (const f of [cc, sc]) execFileSync('haproxy', ['-c', '-q', '-f', f], { stdio: 'pipe' });
  const server = await startAndWait(
    ctx,
    'haproxy-server',
    'haproxy',
    ['-db', '-f', sc],
    [serverPort],
  );
  const client = await startAndWait(
    ctx,
    'haproxy-client',
    'haproxy',
    ['-db', '-f', cc],
    [clientPort],
  );
  const checks = [
    expectOk(await probe(clientPort, 'h1'), 'GET through the pair'),
    ...(await checkAnchorServerSide(ctx, serverPort, 'HAProxy')),
  ];
  return {
    id: 'haproxy',
    label: PATH_LABELS.haproxy,
    transport: 'h1',
    port: clientPort,
    roles: { client, server, app: ctx.app.started },
    baseline: 'direct',
    commands: [
      'haproxy -db -f $RUN/haproxy-sidecar-server.cfg   # bench/conf/haproxy-sidecar-server.cfg.tmpl',
      'haproxy -db -f $RUN/haproxy-sidecar-client.cfg   # bench/conf/haproxy-sidecar-client.cfg.tmpl',
    ],
    checks,
    warnings: [],
  };
}

async function startNginx(ctx: PathContext): Promise<ReadyPath> {
  const clientPort = await freePort();
  const serverPort = await freePort();
  const vars = {
    RUN: ctx.runDir,
    CLIENT_PORT: clientPort,
    SERVER_PORT: serverPort,
    APP_PORT: ctx.app.port,
    CERTS: ctx.pki.dir,
    SERVER_NAME: ctx.pki.serverName,
  };
  const cc = render(ctx, 'nginx-sidecar-client.conf.tmpl', vars);
  const sc = render(ctx, 'nginx-sidecar-server.conf.tmpl', vars);
  const args = (c: string, err: string): string[] => [
    '-p',
    `${ctx.runDir}/`,
    '-e',
    join(ctx.runDir, err),
    '-c',
    c,
  ];
  for (const [c, e] of [
    [cc, 'ngx-client.error.log'],
    [sc, 'ngx-server.error.log'],
  ] as const) {
    execFileSync('nginx', ['-t', '-q', ...args(c, e)], { stdio: 'pipe' });
  }
  const server = await startAndWait(
    ctx,
    'nginx-server',
    'nginx',
    args(sc, 'ngx-server.error.log'),
    [serverPort],
  );
  const client = await startAndWait(
    ctx,
    'nginx-client',
    'nginx',
    args(cc, 'ngx-client.error.log'),
    [clientPort],
  );
  const checks = [
    expectOk(await probe(clientPort, 'h1'), 'GET through the pair'),
    ...(await checkAnchorServerSide(ctx, serverPort, 'nginx')),
  ];
  return {
    id: 'nginx',
    label: PATH_LABELS.nginx,
    transport: 'h1',
    port: clientPort,
    roles: { client, server, app: ctx.app.started },
    baseline: 'direct',
    commands: [
      'nginx -p $RUN/ -c $RUN/nginx-sidecar-server.conf   # bench/conf/nginx-sidecar-server.conf.tmpl',
      'nginx -p $RUN/ -c $RUN/nginx-sidecar-client.conf   # bench/conf/nginx-sidecar-client.conf.tmpl',
    ],
    checks,
    warnings: [],
  };
}

/** What ACCESS_LOGS=text writes: an access line of the kind Envoy's default text format writes. */
export const BENCH_TEXT_FORMAT =
  '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(USER-AGENT)%" "%UPSTREAM_HOST%"';

const REMORA_BIN = join(REPO_ROOT, 'bin', 'remora.js');

async function startRemoraProxy(
  ctx: PathContext,
  name: string,
  snapshotFile: string,
  ports: number[],
): Promise<{ started: Started; command: string }> {
  const admin = await freePort();
  const args = [
    ...PROXY_NODE_OPTIONS,
    REMORA_BIN,
    'proxy',
    '--static-config',
    snapshotFile,
    '--admin',
    String(admin),
    '--log-level',
    'warn',
  ];
  const started = await startAndWait(ctx, name, process.execPath, args, ports, {
    cwd: REPO_ROOT,
  });
  return {
    started,
    command: `node ${PROXY_NODE_OPTIONS.join(' ')} bin/remora.js proxy --static-config $RUN/${name}.json --admin <port> --log-level warn`,
  };
}

let compileCacheWarm = false;

/**
 * What `remora agent` does when it starts (cli/commands/agent.ts): compile the proxy's code into
 * Node's on-disk cache, so that no proxy loads the TypeScript stripper. Without it, the first
 * proxy after a code change would carry about 20 MB more for its whole life.
 */
function warmCompileCache(ctx: PathContext): void {
  if (compileCacheWarm) return;
  compileCacheWarm = true;
  // a proxy that stops at once on a missing snapshot file: it has loaded every module of a
  // running proxy by then, and Node writes their compiled code at exit
  try {
    // with the proxies' V8 flags, as the agent does: V8 rejects code cached under other flags
    execFileSync(
      process.execPath,
      [
        ...PROXY_NODE_OPTIONS,
        REMORA_BIN,
        'proxy',
        '--static-config',
        join(ctx.runDir, 'no-such-snapshot.json'),
      ],
      { stdio: 'pipe' },
    );
  } catch {
    // it is expected to fail
  }
}

async function startRemora(ctx: PathContext, protocol: Protocol): Promise<ReadyPath> {
  const id = `remora-${protocol}` as PathId;
  if (!existsSync(join(REPO_ROOT, 'proxy'))) {
    throw new Error(
      '`remora proxy` is not built yet (issue 6): there is no proxy/ folder in this tree',
    );
  }
  warmCompileCache(ctx);
  // http2: the app speaks cleartext HTTP/2 first; if the pair does not answer that way, the
  // HTTP/1.1 app is tried (what the proxy expects from the app is the proxy's business)
  const appChoices = protocol === 'http2' ? [ctx.app.h2cPort, ctx.app.port] : [ctx.app.port];
  const transports: Array<'h1' | 'h2c'> = protocol === 'http2' ? ['h2c', 'h1'] : ['h1'];
  const failures: string[] = [];
  for (const appPort of appChoices) {
    const ports = {
      clientUpstreamPort: await freePort(),
      clientInboundPort: await freePort(),
      serverInboundPort: await freePort(),
      appPort,
      clientAppPort: ctx.app.port,
    };
    const snaps = buildPairSnapshots(ctx.pki, protocol, ports);
    const files = {
      client: join(ctx.runDir, `${id}-client.json`),
      server: join(ctx.runDir, `${id}-server.json`),
    };
    for (const side of ['client', 'server'] as const) {
      if (ctx.accessLogs !== 'off')
        snaps[side].accessLogs = {
          type: 'file',
          path: join(ctx.runDir, `${id}-${side}-access.log`),
          ...(ctx.accessLogs === 'text' ? { textFormat: BENCH_TEXT_FORMAT } : {}),
        };
      writeFileSync(files[side], JSON.stringify(snaps[side], null, 2), { mode: 0o600 });
      chmodSync(files[side], 0o600);
    }
    const server = await startRemoraProxy(ctx, `${id}-server`, files.server, [
      ports.serverInboundPort,
    ]);
    let client: Awaited<ReturnType<typeof startRemoraProxy>>;
    try {
      client = await startRemoraProxy(ctx, `${id}-client`, files.client, [
        ports.clientUpstreamPort,
        ports.clientInboundPort,
      ]);
    } catch (err) {
      await ctx.registry.stop(server.started);
      throw err;
    }
    for (const transport of transports) {
      const p = await probe(ports.clientUpstreamPort, transport, 10_000);
      if (!p.error && p.status === 200 && p.bytes === BODY.length) {
        const checks = [
          `GET through the pair (${transport === 'h2c' ? 'cleartext HTTP/2' : 'HTTP/1.1'} in, app ${appPort === ctx.app.h2cPort ? 'h2c' : 'HTTP/1.1'}): ${describeProbe(p)}`,
        ];
        const warnings: string[] = [];
        await checkRemoraServerSide(ctx, ports.serverInboundPort, protocol, checks, warnings);
        return {
          id,
          label: PATH_LABELS[id],
          transport,
          port: ports.clientUpstreamPort,
          roles: { client: client.started, server: server.started, app: ctx.app.started },
          baseline: transport === 'h2c' ? 'direct-h2c' : 'direct',
          commands: [server.command, client.command],
          checks,
          warnings,
        };
      }
      failures.push(
        `app port ${appPort === ctx.app.h2cPort ? 'h2c' : 'HTTP/1.1'}, ${transport} in: ${describeProbe(p)}`,
      );
      if (p.status === 200) {
        // the pair answered but the answer is broken: report that rather than trying other setups
        await ctx.registry.stop(client.started);
        await ctx.registry.stop(server.started);
        throw new Error(`the ${protocol} pair answered incorrectly: ${failures.join('; ')}`);
      }
    }
    await ctx.registry.stop(client.started);
    await ctx.registry.stop(server.started);
  }
  throw new Error(`no successful GET through the ${protocol} pair (${failures.join('; ')})`);
}

/** Server side: no certificate → refused; web → allowed; a mesh identity no intention allows → refused. */
async function checkRemoraServerSide(
  ctx: PathContext,
  port: number,
  protocol: Protocol,
  checks: string[],
  warnings: string[],
): Promise<void> {
  const { web, intruder } = ctx.pki.remora;
  const none = await probeMtls({ port, caPem: ctx.pki.caPem });
  checks.push(`server side without client certificate: ${describeProbe(none)}`);
  if (none.status === 200) warnings.push('server side answered 200 WITHOUT a client certificate');
  if (protocol === 'http2') {
    checks.push(
      'server side with certificates: not probed over HTTP/1.1 (the inbound speaks HTTP/2)',
    );
    return;
  }
  const ok = await probeMtls({
    port,
    caPem: ctx.pki.caPem,
    certPem: web.certPem,
    keyPem: web.keyPem,
  });
  checks.push(
    `server side with web's certificate (intention allows web → api): ${describeProbe(ok)}`,
  );
  if (ok.status !== 200)
    warnings.push(`web's certificate was not accepted by api's proxy (${describeProbe(ok)})`);
  const denied = await probeMtls({
    port,
    caPem: ctx.pki.caPem,
    certPem: intruder.certPem,
    keyPem: intruder.keyPem,
  });
  const code = denied.headers?.['x-remora-error'];
  checks.push(
    `server side with a valid mesh certificate for \`intruder\` (default deny): ${describeProbe(denied)}${code ? `, x-remora-error: ${String(code)}` : ''}`,
  );
  if (denied.status === 200)
    warnings.push(
      'a mesh identity without an allowing intention was served (intentions not enforced)',
    );
}

export async function startPath(ctx: PathContext, id: PathId): Promise<PathOutcome> {
  try {
    switch (id) {
      case 'direct':
      case 'direct-h2c': {
        const transport = id === 'direct' ? 'h1' : 'h2c';
        const port = id === 'direct' ? ctx.app.port : ctx.app.h2cPort;
        const check = expectOk(await probe(port, transport), 'GET to the app');
        return {
          ok: true,
          path: {
            id,
            label: PATH_LABELS[id],
            transport,
            port,
            roles: { app: ctx.app.started },
            baseline: id,
            commands: [],
            checks: [check],
            warnings: [],
          },
        };
      }
      case 'haproxy':
        return { ok: true, path: await startHaproxy(ctx) };
      case 'nginx':
        return { ok: true, path: await startNginx(ctx) };
      case 'remora-http':
        return { ok: true, path: await startRemora(ctx, 'http') };
      case 'remora-tcp':
        return { ok: true, path: await startRemora(ctx, 'tcp') };
      case 'remora-http2':
        return { ok: true, path: await startRemora(ctx, 'http2') };
    }
  } catch (err) {
    return { ok: false, id, label: PATH_LABELS[id], reason: (err as Error).message };
  }
}
