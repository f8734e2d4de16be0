// The multi-host lab: four "hosts" (network namespaces on one bridge) run the real programs the
// way a datacenter does. The server host runs the embedded catalog (`remora devconsul`), a real
// nats-server with the per-role NKey credentials and subject permissions that compose/ and
// vagrant/ use, `remora control`, and one OTLP receiver. Two "VM" hosts and one "container" host
// each run their own `remora agent` (which spawns the proxies) next to plain demo apps:
//
//   vm1:  web-1  --(upstream api, 127.0.0.1:9191)-->  api-1 on vm2, api-2 on ctr1
//
// It proves cross-host mTLS (identities seen across hosts, plain and certificate-less clients
// refused), discovery and balancing across hosts, intention denial across hosts, failover when a
// host's link goes down, and traces from every host reaching the one receiver.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../../lib/util/index.ts';
import { createLabProcs } from '../helpers/lab-procs.ts';
import { createLab, labUnsupportedReason, type Lab, type LabHost } from '../helpers/netns.ts';
// @ts-expect-error -- a plain JavaScript module (compose/ is not part of the TypeScript project)
import { writeMeshSecrets } from '../../compose/gen-secrets.js';

const root = new URL('../../', import.meta.url).pathname;
const REMORA = join(root, 'bin/remora.js');
const NODE = process.execPath;
const DC = 'dc1';
/** The one port of the agents' range for exposed check listeners. */
const CHECK_PORT = 21600;

interface Call {
  status?: number;
  apiStatus?: number;
  apiError?: string | null;
  instance?: string;
  peer?: string | null;
  error?: string;
}

const reason = (await labUnsupportedReason()) ?? (await natsMissing());

async function natsMissing(): Promise<string | null> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve) =>
    execFile('nats-server', ['--version'], (err) =>
      resolve(err ? 'nats-server is not installed (apt-get install -y nats-server)' : null),
    ),
  );
}

if (reason) {
  t.plan(0, `lab skipped: ${reason}`);
} else {
  t.setTimeout(300_000);
  t.test('a four-host mesh on one bridge', async (t) => {
    // a short path: Unix socket paths under it must stay below 108 bytes wherever the repo is
    const work = mkdtempSync(join(tmpdir(), 'rlab-'));
    t.teardown(() => rmSync(work, { recursive: true, force: true }));
    const lab: Lab = await createLab({
      hosts: [{ name: 'server' }, { name: 'vm1' }, { name: 'vm2' }, { name: 'ctr1' }],
    });
    t.teardown(() => {
      stopRestarts();
      return lab.destroy();
    });
    const { server, vm1, vm2, ctr1 } = lab.hosts;
    const { start, until, stopRestarts } = createLabProcs();
    const spans: Array<{
      traceId: string;
      name: string;
      kind: string;
      service?: string;
      instance?: string;
    }> = [];

    // --- secrets and configuration files ---------------------------------------------------------
    const secrets = join(work, 'secrets');
    writeMeshSecrets(secrets, { datacenter: DC });
    const { readFileSync } = await import('node:fs');
    const operatorToken = readFileSync(join(secrets, 'operator-token'), 'utf8').trim();
    const s = server!.ip;
    writeFileSync(join(secrets, 'nats.conf'), `listen: 0.0.0.0:4222\ninclude ./nats-auth.conf\n`);
    const common = {
      datacenter: DC,
      consul: { address: `http://${s}:8500` },
      tracing: { endpoint: `http://${s}:4318/v1/traces` },
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
      server!.run(NODE, [REMORA, ...args], { env: cliEnv, timeoutMs: 20_000 });

    // --- the server host ----------------------------------------------------------------------------
    const sink = start(server!, 'otlp-sink', [
      NODE,
      join(root, 'test/lab/otlp-sink.ts'),
      `${s}:4318`,
    ]);
    let sinkBuf = '';
    sink.child.stdout?.on('data', (d: Buffer) => {
      sinkBuf += d.toString();
      let nl;
      while ((nl = sinkBuf.indexOf('\n')) >= 0) {
        const line = sinkBuf.slice(0, nl);
        sinkBuf = sinkBuf.slice(nl + 1);
        if (line) spans.push(JSON.parse(line));
      }
    });
    const nats = start(server!, 'nats-server', ['nats-server', '-c', join(secrets, 'nats.conf')]);
    const catalog = start(server!, 'devconsul', [
      NODE,
      REMORA,
      'devconsul',
      '--listen',
      `${s}:8500`,
      '--log-level',
      'warn',
    ]);
    await until(
      'nats-server, the catalog and the OTLP sink to listen',
      async () =>
        nats.output().includes('Server is ready') &&
        sink.output().includes('listening') &&
        (
          await server!.node(
            `const r = await fetch('http://${s}:8500/v1/status/leader'); process.stdout.write(String(r.status));`,
          )
        ).stdout === '200',
      30_000,
    );
    void catalog;
    start(
      server!,
      'control',
      [NODE, REMORA, 'control', '--config', join(work, 'control.json'), '--log-level', 'warn'],
      { REMORA_CONTROL_OPERATOR_TOKEN: operatorToken },
      true,
    );

    // --- the instances: web on vm1, api on vm2 and ctr1, and report (never allowed) on ctr1 ------
    const instances = [
      { host: vm1!, id: 'web-1', name: 'web', port: 8080, sidecar: 21000, calls: 'api' },
      { host: vm2!, id: 'api-1', name: 'api', port: 8081, sidecar: 21000 },
      { host: ctr1!, id: 'api-2', name: 'api', port: 8081, sidecar: 21000 },
      { host: ctr1!, id: 'report-1', name: 'report', port: 8082, sidecar: 21001, calls: 'api' },
    ];
    const agentHosts = [vm1!, vm2!, ctr1!];

    // --- node tokens (issued by control over NATS with the operator credentials) and the intention ---
    const tokens = new Map<string, string>();
    for (const host of agentHosts) {
      const names = [...new Set(instances.filter((i) => i.host === host).map((i) => i.name))];
      const token = await until(
        `control to issue a node token for ${host.name}`,
        async () => {
          const r = await remoraCli('token', 'create', host.name, ...names);
          return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
        },
        90_000,
      );
      tokens.set(host.name, token);
    }
    const allow = await remoraCli('intention', 'create', 'web', 'api');
    t.equal(allow.code, 0, `the operator allows web → api: ${allow.stderr}`);

    // --- per host: the apps, their definitions and one agent ---------------------------------------
    for (const host of agentHosts) {
      const dir = join(work, host.name);
      mkdirSync(join(dir, 'services.d'), { recursive: true });
      for (const i of instances.filter((x) => x.host === host)) {
        const upstreams = i.calls
          ? [
              {
                destination_name: i.calls,
                local_bind_port: 9191,
                config: {
                  protocol: 'http',
                  load_balancer: 'round_robin',
                  connect_timeout_ms: 1000,
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
              // api-1's health check reaches its app (127.0.0.1 only) through its sidecar
              ...(i.id === 'api-1'
                ? {
                    checks: [
                      { name: 'api answers', http: `http://127.0.0.1:${i.port}/`, interval: '1s' },
                    ],
                  }
                : {}),
              connect: {
                sidecar_service: {
                  port: i.sidecar,
                  proxy: {
                    config: { protocol: 'http' },
                    upstreams,
                    ...(i.id === 'api-1' ? { expose: { checks: true } } : {}),
                  },
                },
              },
            },
          }),
        );
        start(host, i.id, [NODE, join(root, 'compose/apps/demo-http.js')], {
          SERVICE: i.name,
          INSTANCE: i.id,
          PORT: String(i.port),
          ...(i.calls ? { UPSTREAM_URL: 'http://127.0.0.1:9191/' } : {}),
        });
      }
      writeFileSync(
        join(dir, 'agent.json'),
        JSON.stringify({
          ...common,
          node: host.name,
          nats: { servers: [`nats://${s}:4222`], credsFile: join(secrets, 'agent.creds') },
          configDir: join(dir, 'services.d'),
          dataDir: join(dir, 'data'),
          advertiseAddress: host.ip,
          checkTtlMs: 3000,
          exposePortMin: CHECK_PORT,
          exposePortMax: CHECK_PORT,
        }),
      );
      start(
        host,
        'agent',
        [NODE, REMORA, 'agent', '--config', join(dir, 'agent.json'), '--log-level', 'info'],
        { REMORA_AGENT_NODE_TOKEN: tokens.get(host.name)! },
        true,
      );
    }

    /** `n` calls to the app on `host`:`port` (web or report), made by one process on that host. */
    const callFrom = async (host: LabHost, port: number, n: number): Promise<Call[]> => {
      const r = await host.node(
        `const out = [];
       for (let i = 0; i < ${n}; i++) {
         try {
           const res = await fetch('http://127.0.0.1:${port}/', { signal: AbortSignal.timeout(8000) });
           const b = await res.json();
           out.push({ status: res.status, apiStatus: b.upstream?.status, apiError: b.upstream?.error ?? null, instance: b.upstream?.body?.instance, peer: b.upstream?.body?.peer });
         } catch (err) { out.push({ error: String(err?.cause?.code ?? err) }); }
       }
       process.stdout.write(JSON.stringify(out));
       process.exit(0);`,
        { timeoutMs: n * 9000 + 10_000 },
      );
      if (!r.stdout)
        throw new Error(
          `the call script on ${host.name} printed nothing (exit ${r.code}): ${r.stderr.slice(-500)}`,
        );
      return JSON.parse(r.stdout) as Call[];
    };
    const callWeb = (n: number) => callFrom(vm1!, 8080, n);

    await until(
      'web on vm1 to reach api instances on both other hosts through the mesh',
      async () => {
        const calls = await callWeb(6);
        const seen = new Set(calls.filter((c) => c.apiStatus === 200).map((c) => c.instance));
        return seen.has('api-1') && seen.has('api-2') ? true : undefined;
      },
      90_000,
    );

    t.test('web on one VM host calls api on the other hosts over mutual TLS', async (t) => {
      const calls = await callWeb(4);
      for (const c of calls) {
        t.equal(c.apiStatus, 200);
        t.match(
          c.peer,
          new RegExp(`^spiffe://[^/]+/ns/default/dc/${DC}/svc/web$`),
          "api's proxy saw web's SPIFFE identity",
        );
      }
    });

    t.test(
      'a sidecar on another host refuses plain-text and certificate-less clients',
      async (t) => {
        const r = await ctr1!.node(
          `import tls from 'node:tls';
       const results = {};
       try {
         const res = await fetch('http://${vm2!.ip}:21000/', { signal: AbortSignal.timeout(4000) });
         results.plain = 'HTTP ' + res.status;
       } catch (err) { results.plain = 'refused: ' + String(err?.cause?.code ?? err?.cause?.message ?? err); }
       results.noCert = await new Promise((resolve) => {
         const sock = tls.connect({ host: '${vm2!.ip}', port: 21000, rejectUnauthorized: false }, () => {
           sock.write('GET / HTTP/1.1\\r\\nhost: api\\r\\nconnection: close\\r\\n\\r\\n');
         });
         let got = '';
         sock.setTimeout(4000, () => sock.destroy(new Error('timeout')));
         sock.on('data', (d) => (got += d));
         sock.on('error', (err) => resolve('refused: ' + (err.code ?? err.message)));
         sock.on('close', () => resolve(got ? 'answered: ' + got.split('\\r\\n')[0] : 'refused: closed'));
       });
       process.stdout.write(JSON.stringify(results));
       process.exit(0);`,
        );
        const res = JSON.parse(r.stdout) as { plain: string; noCert: string };
        t.match(res.plain, /^refused/, `plain HTTP to api's sidecar: ${res.plain}`);
        t.match(res.noCert, /^refused/, `TLS without a client certificate: ${res.noCert}`);
      },
    );

    t.test("api-1's exposed health check serves the catalog's probes only", async (t) => {
      const checks = await until(
        "the catalog's probe of api-1 to pass through api-1's sidecar",
        async () => {
          const r = await server!.node(
            `const r = await fetch('http://${s}:8500/v1/health/checks/api'); process.stdout.write(await r.text());`,
          );
          const all = JSON.parse(r.stdout || '[]') as Array<{
            ServiceID: string;
            Name: string;
            Status: string;
          }>;
          const c = all.find((x) => x.ServiceID === 'api-1' && x.Name === 'api answers');
          return c?.Status === 'passing' ? all : undefined;
        },
        60_000,
      );
      t.ok(checks, 'the HTTP check, probed from the catalog host, passes');
      const probe = (host: LabHost) =>
        host.node(
          `try {
             const r = await fetch('http://${vm2!.ip}:${CHECK_PORT}/', { signal: AbortSignal.timeout(4000) });
             process.stdout.write('HTTP ' + r.status);
           } catch (err) { process.stdout.write('refused: ' + String(err?.cause?.code ?? err?.cause?.message ?? err)); }
           process.exit(0);`,
        );
      const fromCatalogHost = await probe(server!);
      t.equal(fromCatalogHost.stdout, 'HTTP 200', "the Consul agent's address is served");
      const fromOtherHost = await probe(ctr1!);
      t.match(
        fromOtherHost.stdout,
        /^refused/,
        `another host is refused on the check listener: ${fromOtherHost.stdout}`,
      );
    });

    t.test('calls are balanced across the api instances on two hosts', async (t) => {
      const calls = await callWeb(12);
      const counts = new Map<string, number>();
      for (const c of calls)
        if (c.apiStatus === 200 && c.instance)
          counts.set(c.instance, (counts.get(c.instance) ?? 0) + 1);
      t.equal(calls.filter((c) => c.apiStatus === 200).length, 12, 'every call succeeds');
      t.ok(
        (counts.get('api-1') ?? 0) >= 3,
        `api-1 on vm2 answered ${counts.get('api-1') ?? 0} of 12`,
      );
      t.ok(
        (counts.get('api-2') ?? 0) >= 3,
        `api-2 on ctr1 answered ${counts.get('api-2') ?? 0} of 12`,
      );
    });

    t.test('traces from every host reach the one receiver', async (t) => {
      const from = (service: string, instance?: string) =>
        spans.filter(
          (x) => x.service === service && (instance === undefined || x.instance === instance),
        );
      await until(
        'spans from the agents on vm1, vm2 and ctr1 and from control on the server host',
        async () =>
          ['vm1', 'vm2', 'ctr1'].every((n) => from('remora-agent', n).length > 0) &&
          from('remora-control').length > 0,
        30_000,
      );
      for (const n of ['vm1', 'vm2', 'ctr1'])
        t.ok(from('remora-agent', n).length > 0, `agent spans from ${n}`);
      t.ok(from('remora-control').length > 0, 'control spans from the server host');
      // a certificate request is one trace across hosts: the agent's CLIENT span on its host and
      // control's SERVER span on the server host, linked through the NATS headers
      for (const n of ['vm1', 'vm2', 'ctr1']) {
        const signTraces = new Set(
          from('remora-agent', n)
            .filter((x) => x.name.startsWith('ca.sign'))
            .map((x) => x.traceId),
        );
        t.ok(
          from('remora-control').some((x) => signTraces.has(x.traceId) && x.kind === 'SERVER'),
          `a ca.sign trace joins ${n}'s agent and control on the server host`,
        );
      }
    });

    t.test('proxy spans from web (vm1) and api (vm2, ctr1) join one trace per call', async (t) => {
      await callWeb(4);
      const joined = (apiInstance: string) => {
        const web = new Set(spans.filter((x) => x.service === 'web').map((x) => x.traceId));
        return spans.some(
          (x) => x.service === 'api' && x.instance === apiInstance && web.has(x.traceId),
        );
      };
      await until(
        'web and api proxy spans in shared traces',
        async () => joined('api-1') && joined('api-2'),
        30_000,
      );
      t.ok(joined('api-1'), 'a trace holds web on vm1 and api-1 on vm2');
      t.ok(joined('api-2'), 'a trace holds web on vm1 and api-2 on ctr1');
    });

    t.test(
      'with no intention allowing it, report on ctr1 is refused by api’s proxies across hosts',
      async (t) => {
        const calls = await until(
          'report to have api endpoints (the refusal comes from api’s proxies)',
          async () => {
            const c = await callFrom(ctr1!, 8082, 4);
            return c.every((x) => x.apiStatus === 403) ? c : undefined;
          },
          30_000,
        );
        for (const c of calls)
          t.match(
            c.apiError ?? '',
            /REMORA_E_PROXY_INTENTION_DENIED/,
            `403 with x-remora-error ${c.apiError}`,
          );
      },
    );

    t.test('a deny created while web → api is in use takes effect across hosts', async (t) => {
      const deny = await remoraCli('intention', 'create', '--deny', 'web', 'api');
      t.equal(deny.code, 0, deny.stderr);
      const denied = await waitFor(
        'the deny to reach the proxies on vm2 and ctr1',
        async () => ((await callWeb(4)).every((c) => c.apiStatus === 403) ? true : undefined),
        30_000,
        250,
      ).catch(() => false);
      t.ok(denied, 'calls from web over their pooled connections are refused after the deny');
      const again = await remoraCli('intention', 'create', 'web', 'api');
      t.equal(again.code, 0, again.stderr);
      await until(
        'calls to succeed again',
        async () => ((await callWeb(4)).every((c) => c.apiStatus === 200) ? true : undefined),
        30_000,
      );
    });

    t.test(
      'when a host’s link goes down, calls fail over to the other host and come back',
      async (t) => {
        await vm2!.setLink(false);
        const cutAt = Date.now();
        const after = await until(
          'every call to be answered by api-2 on ctr1 while vm2 is cut off',
          async () => {
            const calls = await callWeb(6);
            return calls.every((c) => c.apiStatus === 200 && c.instance === 'api-2')
              ? calls
              : undefined;
          },
          60_000,
        );
        t.equal(after.length, 6, 'six calls in a row succeed on the remaining host');
        t.comment(`all calls answered by ctr1 ${Date.now() - cutAt} ms after vm2's link went down`);
        await vm2!.setLink(true);
        const backAt = Date.now();
        await until(
          'api-1 on vm2 to answer again once its link is back',
          async () =>
            (await callWeb(6)).some((c) => c.apiStatus === 200 && c.instance === 'api-1')
              ? true
              : undefined,
          60_000,
        );
        t.pass('vm2 serves again after its link returns');
        t.comment(`api-1 answered again ${Date.now() - backAt} ms after vm2's link came back`);
      },
    );
  });
}
