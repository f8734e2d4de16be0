// A host's link dropped under load, counted per request like the loopback scenarios (root only:
// it builds the lab's network namespaces). Four hosts on one bridge: the server host runs a real
// nats-server with the generated per-role credentials, `remora devconsul` and `remora control`;
// vm1 runs web's agent and proxy, and the load generator (test/faults/lab-load.ts) sends into
// web's outbound `api` listener; vm2 and ctr1 each run an agent and a recorder app as api-1 and
// api-2. Under load, vm2's link goes down for the outage and comes back; the counter then joins
// what the client saw with what both apps received, as for every FAULT line.
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLabProcs, type LabProc } from '../helpers/lab-procs.ts';
import { createLab, labUnsupportedReason, type Lab, type LabHost } from '../helpers/netns.ts';
// @ts-expect-error -- a plain JavaScript module (compose/ is not part of the TypeScript project)
import { writeMeshSecrets } from '../../compose/gen-secrets.js';
import { OUTAGE_MS, summarize, type Outcome } from './load.ts';

const root = new URL('../../', import.meta.url).pathname;
const REMORA = join(root, 'bin/remora.js');
const NODE = process.execPath;
const DC = 'dc1';
const SCENARIO = 'lab-link-dropped';
/** web's per-attempt request timeout for api; REMORA_FAULTS_LAB_REQUEST_TIMEOUT_MS overrides. */
const REQUEST_TIMEOUT_MS = Number(process.env.REMORA_FAULTS_LAB_REQUEST_TIMEOUT_MS ?? 3000);

async function natsMissing(): Promise<string | null> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve) =>
    execFile('nats-server', ['--version'], (err) =>
      resolve(err ? 'nats-server is not installed (apt-get install -y nats-server)' : null),
    ),
  );
}

const reason = (await labUnsupportedReason()) ?? (await natsMissing());

if (reason) {
  t.plan(0, `lab skipped: ${reason}`);
} else {
  t.setTimeout(300_000);
  t.test('a host’s link dropped under load', async (t) => {
    // a short path: Unix socket paths under it must stay below 108 bytes wherever the repo is
    const work = mkdtempSync(join(tmpdir(), 'rlab-'));
    t.teardown(() => rmSync(work, { recursive: true, force: true }));
    const lab: Lab = await createLab({
      hosts: [{ name: 'server' }, { name: 'vm1' }, { name: 'vm2' }, { name: 'ctr1' }],
    });
    // recorders' RECV lines are counted, so all of their output is kept
    const { procs, start, until, stopRestarts } = createLabProcs({
      keepAllOutput: (name) => name.startsWith('recorder'),
    });
    t.teardown(() => {
      stopRestarts();
      return lab.destroy();
    });
    const host = (name: string): LabHost => {
      const h = lab.hosts[name];
      if (!h) throw new Error(`no lab host ${name}`);
      return h;
    };
    const [server, vm1, vm2, ctr1] = ['server', 'vm1', 'vm2', 'ctr1'].map(host) as [
      LabHost,
      LabHost,
      LabHost,
      LabHost,
    ];
    // --- the server host: NATS with the generated users, the catalog, control -------------------
    const secrets = join(work, 'secrets');
    writeMeshSecrets(secrets, { datacenter: DC });
    const operatorToken = readFileSync(join(secrets, 'operator-token'), 'utf8').trim();
    const s = server.ip;
    writeFileSync(join(secrets, 'nats.conf'), `listen: 0.0.0.0:4222\ninclude ./nats-auth.conf\n`);
    const common = {
      datacenter: DC,
      consul: { address: `http://${s}:8500` },
      tracing: { endpoint: '' },
    };
    writeFileSync(
      join(work, 'control.json'),
      JSON.stringify({
        ...common,
        nats: { servers: [`nats://${s}:4222`], credsFile: join(secrets, 'control.creds') },
        defaultPolicy: 'deny',
      }),
    );
    const cliEnv = {
      REMORA_CLI_NATS_SERVERS: `nats://${s}:4222`,
      REMORA_CLI_NATS_CREDS_FILE: join(secrets, 'operator.creds'),
      REMORA_CLI_OPERATOR_TOKEN: operatorToken,
    };
    const remoraCli = (...args: string[]) =>
      server.run(NODE, [REMORA, ...args], { env: cliEnv, timeoutMs: 20_000 });
    const nats = start(server, 'nats-server', ['nats-server', '-c', join(secrets, 'nats.conf')]);
    start(server, 'devconsul', [
      NODE,
      REMORA,
      'devconsul',
      '--listen',
      `${s}:8500`,
      '--log-level',
      'warn',
    ]);
    await until(
      'nats-server and the catalog to listen',
      async () =>
        nats.output().includes('Server is ready') &&
        (
          await server.node(
            `const r = await fetch('http://${s}:8500/v1/status/leader'); process.stdout.write(String(r.status));`,
          )
        ).stdout === '200',
      30_000,
    );
    start(
      server,
      'control',
      [NODE, REMORA, 'control', '--config', join(work, 'control.json'), '--log-level', 'warn'],
      { REMORA_CONTROL_OPERATOR_TOKEN: operatorToken },
      true,
    );

    // --- instances: web on vm1 (the client side), the recorders as api-1 on vm2, api-2 on ctr1 ---
    const instances = [
      { host: vm1, id: 'web-1', name: 'web', port: 8080 },
      { host: vm2, id: 'api-1', name: 'api', port: 8081 },
      { host: ctr1, id: 'api-2', name: 'api', port: 8081 },
    ];
    for (const i of instances) {
      const token = await until(
        `control to issue a node token for ${i.host.name}`,
        async () => {
          const r = await remoraCli('token', 'create', i.host.name, i.name);
          return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
        },
        90_000,
      );
      const dir = join(work, i.host.name);
      mkdirSync(join(dir, 'services.d'), { recursive: true });
      const upstreams =
        i.name === 'web'
          ? [
              {
                destination_name: 'api',
                local_bind_port: 9191,
                config: {
                  protocol: 'http',
                  load_balancer: 'round_robin',
                  connect_timeout_ms: 1000,
                  // below the load's 10 s client timeout: a request sent on the link that is cut
                  // times out in the proxy (and a GET is retried on the other host) before the
                  // caller gives up; with the 15 s default the caller's timeout fires first
                  request_timeout_ms: REQUEST_TIMEOUT_MS,
                  passive_health_check: { base_ejection_time_ms: 2000 },
                },
              },
            ]
          : [];
      writeFileSync(
        join(dir, 'services.d', `${i.id}.json`),
        JSON.stringify({
          service: {
            id: i.id,
            name: i.name,
            port: i.port,
            connect: {
              sidecar_service: { port: 21000, proxy: { config: { protocol: 'http' }, upstreams } },
            },
          },
        }),
      );
      if (i.name === 'web')
        start(i.host, 'web', [NODE, join(root, 'compose/apps/demo-http.js')], {
          SERVICE: 'web',
          INSTANCE: i.id,
          PORT: String(i.port),
          UPSTREAM_URL: 'http://127.0.0.1:9191/',
        });
      else
        start(i.host, `recorder-${i.id}`, [NODE, join(root, 'test/faults/recorder-app.ts')], {
          PORT: String(i.port),
          INSTANCE_ID: i.id,
        });
      writeFileSync(
        join(dir, 'agent.json'),
        JSON.stringify({
          ...common,
          node: i.host.name,
          nats: { servers: [`nats://${s}:4222`], credsFile: join(secrets, 'agent.creds') },
          configDir: join(dir, 'services.d'),
          dataDir: join(dir, 'data'),
          advertiseAddress: i.host.ip,
          checkTtlMs: 3000,
        }),
      );
      start(
        i.host,
        'agent',
        [NODE, REMORA, 'agent', '--config', join(dir, 'agent.json'), '--log-level', 'info'],
        { REMORA_AGENT_NODE_TOKEN: token },
        true,
      );
    }
    const allow = await remoraCli('intention', 'create', 'web', 'api');
    t.equal(allow.code, 0, `the operator allows web → api: ${allow.stderr}`);

    const recorders = procs.filter((p) => p.name.startsWith('recorder'));
    const recorderLines = (p: LabProc): string[] =>
      p
        .output()
        .split('\n')
        .filter((l) => l.startsWith('RECV '));
    const received = (instance: string): number =>
      recorderLines(recorders.find((r) => r.name.startsWith(`recorder-${instance}@`))!).length;

    await until(
      'web on vm1 to reach api-1 (vm2) and api-2 (ctr1) through the mesh',
      async () => {
        const r = await vm1.node(
          `const seen = new Set();
           for (let i = 0; i < 6; i++) {
             try {
               const res = await fetch('http://127.0.0.1:9191/orders', { headers: { 'x-request-id': 'warmup-' + i }, signal: AbortSignal.timeout(3000) });
               if (res.status === 200) seen.add((await res.json()).instance);
             } catch {}
           }
           process.stdout.write([...seen].sort().join(','));`,
          { timeoutMs: 30_000 },
        );
        return r.stdout === 'api-1,api-2' ? true : undefined;
      },
      120_000,
    );

    // --- the scenario --------------------------------------------------------------------------
    const loader = vm1.spawn(
      NODE,
      [join(root, 'test/faults/lab-load.ts'), 'http://127.0.0.1:9191/orders', SCENARIO],
      { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } },
    );
    let loadOut = '';
    let loadErr = '';
    loader.stdout?.on('data', (d: Buffer) => (loadOut += d.toString()));
    loader.stderr?.on('data', (d: Buffer) => (loadErr += d.toString()));
    const okSoFar = (): number => {
      const m = /PROGRESS (\d+) \d+\n(?![\s\S]*PROGRESS)/.exec(loadOut);
      return m ? Number(m[1]) : 0;
    };
    const okMore = async (n: number, what: string): Promise<void> => {
      const target = okSoFar() + n;
      await until(what, () => okSoFar() >= target || undefined, 60_000);
    };
    await okMore(100, 'the load to get going');
    await vm2.setLink(false);
    const api1Before = received('api-1');
    // the outage itself: the experiment's length, not a synchronisation
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    await okMore(50, 'requests to succeed while vm2 is cut off');
    await vm2.setLink(true);
    await until(
      'api-1 on vm2 to receive requests again',
      () => received('api-1') > api1Before || undefined,
      60_000,
    );
    await okMore(100, 'the load to go on after the link is back');
    loader.stdin?.end('stop\n');
    const line = await until(
      'the load generator to report',
      () =>
        /^OUTCOMES (.*)$/m.exec(loadOut)?.[1] ??
        (loader.exitCode !== null ? Promise.reject(new Error(loadErr)) : undefined),
      30_000,
    );
    const outcomes = JSON.parse(line) as Outcome[];
    const s2 = await summarize(
      SCENARIO,
      outcomes,
      recorders.map((r) => ({ lines: () => recorderLines(r) })),
      (l) => t.comment(l),
    );
    t.ok(s2.sent > 0 && s2.ok > 0, `${s2.ok} of ${s2.sent} requests succeeded`);
    t.equal(s2.duplicated, 0, 'no POST reached an app twice');
    t.same(
      Object.keys(s2.codes).filter((c) => !c.startsWith('REMORA_E_')),
      [],
      'every failed request carries an x-remora-error code',
    );
    t.equal(s2.getFailed, 0, 'every idempotent GET succeeded');
  });
}
