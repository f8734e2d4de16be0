// Transparent interception in the lab (docs/transparent.md): three "hosts" (network namespaces on
// one bridge) run the real programs, and the agents install real iptables rules inside their own
// namespaces.
//
//   server:  the embedded catalog, nats-server (per-role credentials), remora control
//   apihost: agent with api-1 (http, port 8080) and echo-1 (tcp, port 7000), both transparent,
//            their apps listening on every address (so only the rules keep plain callers out;
//            api's on IPv6 as well, where the kernel has it)
//   client:  agent with web-1 (transparent, Consul's `proxy.mode` spelling) whose upstreams api and
//            echo have no local_bind_port; no app of its own is needed
//
// On the client host, UNMODIFIED clients run as user `nobody`: curl calls http://api:8080/ (the
// name resolves through /etc/netns/<ns>/hosts, which `ip netns exec` bind-mounts over /etc/hosts)
// and a plain node net.connect script talks to echo's address 10.x.x.x:7000. Both are carried by
// web-1's proxy over mTLS; intentions are enforced; with the mesh entry's MeshDestinationsOnly
// their plain connections outside the mesh are refused; the chains are gone once the agents stop.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLabProcs, type LabProc } from '../helpers/lab-procs.ts';
import { createLab, labUnsupportedReason, type Lab, type LabHost } from '../helpers/netns.ts';
// @ts-expect-error -- a plain JavaScript module (compose/ is not part of the TypeScript project)
import { writeMeshSecrets } from '../../compose/gen-secrets.js';

const root = new URL('../../', import.meta.url).pathname;
const REMORA = join(root, 'bin/remora.js');
const NODE = process.execPath;
const DC = 'dc1';
/** The unprivileged user the applications run as (the agent and proxies run as root here). */
const AS_NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
/** billing's app user on the client host (its `app_user`). */
const AS_DAEMON = ['setpriv', '--reuid=1', '--regid=1', '--clear-groups'];

function missing(command: string, args: string[], hint: string): Promise<string | null> {
  return new Promise((resolve) =>
    execFile(command, args, (err) => resolve(err ? `${command} is not installed (${hint})` : null)),
  );
}

const reason =
  (await labUnsupportedReason()) ??
  (await missing('nats-server', ['--version'], 'apt-get install -y nats-server')) ??
  (await missing('iptables', ['--version'], 'apt-get install -y iptables')) ??
  (await missing('curl', ['--version'], 'apt-get install -y curl')) ??
  (await missing('setpriv', ['--version'], 'apt-get install -y util-linux'));

if (reason) {
  t.plan(0, `lab skipped: ${reason}`);
} else {
  t.setTimeout(180_000);
  t.test('transparent interception across three hosts', async (t) => {
    const t0 = Date.now();
    const phase = (what: string) => t.comment(`${what} after ${Date.now() - t0} ms`);
    // short: the agents' Unix socket paths must stay under 108 bytes
    const work = mkdtempSync('/tmp/rtp-');
    const lab: Lab = await createLab({
      hosts: [{ name: 'server' }, { name: 'apihost' }, { name: 'client' }, { name: 'nopriv' }],
    });
    const { server, apihost, client, nopriv } = lab.hosts;
    const netnsEtc = `/etc/netns/${client!.ns}`;
    const { start, until, stopRestarts } = createLabProcs({
      diagnosticsTail: process.env.REMORA_LAB_LOG ? 30_000 : 2500,
    });
    t.teardown(async () => {
      stopRestarts();
      await lab.destroy();
      rmSync(netnsEtc, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    });
    // --- secrets, the server host ----------------------------------------------------------------
    const secrets = join(work, 'secrets');
    writeMeshSecrets(secrets, { datacenter: DC });
    const operatorToken = readFileSync(join(secrets, 'operator-token'), 'utf8').trim();
    const s = server!.ip;
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
      server!.run(NODE, [REMORA, ...args], { env: cliEnv, timeoutMs: 20_000 });

    const nats = start(server!, 'nats-server', ['nats-server', '-c', join(secrets, 'nats.conf')]);
    start(server!, 'devconsul', [
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
          await server!.node(
            `const r = await fetch('http://${s}:8500/v1/status/leader'); process.stdout.write(String(r.status));`,
          )
        ).stdout === '200',
      20_000,
    );
    phase('the catalog and NATS ready');
    start(
      server!,
      'control',
      [NODE, REMORA, 'control', '--config', join(work, 'control.json'), '--log-level', 'warn'],
      { REMORA_CONTROL_OPERATOR_TOKEN: operatorToken },
      true,
    );

    // --- definitions and agents ------------------------------------------------------------------
    const services: Record<string, unknown[]> = {
      apihost: [
        {
          id: 'api-1',
          name: 'api',
          port: 8080,
          transparent: true,
          connect: { sidecar_service: { port: 21000, proxy: { config: { protocol: 'http' } } } },
        },
        {
          id: 'echo-1',
          name: 'echo',
          port: 7000,
          transparent: true,
          connect: { sidecar_service: { port: 21001 } },
        },
        // no client lists it as an upstream: web reaches it by its intentions alone
        {
          id: 'ledger-1',
          name: 'ledger',
          port: 8081,
          connect: { sidecar_service: { port: 21002, proxy: { config: { protocol: 'http' } } } },
        },
      ],
      client: [
        {
          id: 'web-1',
          name: 'web',
          port: 8090,
          connect: {
            sidecar_service: {
              port: 21000,
              proxy: {
                mode: 'transparent',
                // curl runs as nobody: only nobody's calls are web's
                config: { protocol: 'http', app_user: 'nobody' },
                upstreams: [
                  {
                    destination_name: 'api',
                    config: { protocol: 'http', connect_timeout_ms: 1000 },
                  },
                  { destination_name: 'echo', config: { protocol: 'tcp' } },
                ],
              },
            },
          },
        },
        // a second transparent instance on the same host, whose app runs as daemon
        {
          id: 'billing-1',
          name: 'billing',
          port: 8091,
          connect: {
            sidecar_service: {
              port: 21001,
              proxy: {
                mode: 'transparent',
                config: { protocol: 'http', app_user: 'daemon' },
                upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }],
              },
            },
          },
        },
      ],
      // the same kind of instance, but its agent runs without CAP_NET_ADMIN (bounding set)
      nopriv: [
        {
          id: 'web-2',
          name: 'web',
          port: 8090,
          transparent: true,
          connect: {
            sidecar_service: {
              port: 21000,
              proxy: {
                upstreams: [
                  { destination_name: 'api', local_bind_port: 9191, config: { protocol: 'http' } },
                ],
              },
            },
          },
        },
      ],
    };
    const tokenFor = async (host: LabHost, names: string[]) =>
      until(
        `control to issue a node token for ${host.name}`,
        async () => {
          const r = await remoraCli('token', 'create', host.name, ...names);
          return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
        },
        40_000,
      );
    const agents = new Map<string, LabProc>();
    const adminPorts = { apihost: 18991, client: 18992, nopriv: 18993 };
    // the hosts' tokens and agents in parallel: each token is one CLI round trip to control
    const startAgent = async (host: LabHost) => {
      const dir = join(work, host.name);
      mkdirSync(join(dir, 'services.d'), { recursive: true });
      writeFileSync(
        join(dir, 'services.d', 'services.json'),
        JSON.stringify({ services: services[host.name] }),
      );
      writeFileSync(
        join(dir, 'agent.json'),
        JSON.stringify({
          ...common,
          node: host.name,
          nats: { servers: [`nats://${s}:4222`], credsFile: join(secrets, 'agent.creds') },
          configDir: join(dir, 'services.d'),
          dataDir: join(dir, 'data'),
          advertiseAddress: host.ip,
          // api's sidecar takes IPv6 too (see the IPv6 destination below)
          ...(host === apihost && host.ip6 ? { proxyBindAddress: '::' } : {}),
          checkTtlMs: 3000,
          adminPort: adminPorts[host.name as keyof typeof adminPorts],
        }),
      );
      const names = (services[host.name] as { name: string }[]).map((x) => x.name);
      const token = await tokenFor(host, names);
      agents.set(
        host.name,
        start(
          host,
          'agent',
          [
            ...(host === nopriv
              ? ['setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin']
              : []),
            NODE,
            REMORA,
            'agent',
            '--config',
            join(dir, 'agent.json'),
            '--log-level',
            'info',
          ],
          { REMORA_AGENT_NODE_TOKEN: token },
          true,
        ),
      );
    };
    await Promise.all([apihost!, client!, nopriv!].map(startAgent));
    phase('agents started');
    start(apihost!, 'api-app', [NODE, join(root, 'compose/apps/demo-http.js')], {
      SERVICE: 'api',
      INSTANCE: 'api-1',
      PORT: '8080',
      LISTEN_HOST: apihost!.ip6 ? '::' : '0.0.0.0',
    });
    start(apihost!, 'ledger-app', [NODE, join(root, 'compose/apps/demo-http.js')], {
      SERVICE: 'ledger',
      INSTANCE: 'ledger-1',
      PORT: '8081',
      LISTEN_HOST: '0.0.0.0',
    });
    start(apihost!, 'echo-app', [NODE, join(root, 'examples/apps/echo.js')], {
      PORT: '7000',
      HOST: '0.0.0.0',
    });
    await Promise.all(
      [
        ['web', 'api'],
        ['web', 'echo'],
        ['billing', 'api'],
      ].map(async ([src, dst]) => {
        const r = await remoraCli('intention', 'create', src!, dst!);
        t.equal(r.code, 0, `the operator allows ${src} → ${dst}: ${r.stderr}`);
      }),
    );

    // the client host resolves the service names the way Consul DNS would answer them
    mkdirSync(netnsEtc, { recursive: true });
    writeFileSync(
      join(netnsEtc, 'hosts'),
      `127.0.0.1 localhost\n${apihost!.ip} api api.service.consul echo echo.service.consul ledger\n`,
    );

    /** curl as `nobody` on the client host: status, x-remora-error and the JSON body. */
    const curl = async (url: string, on: LabHost = client!, as: string[] = AS_NOBODY) => {
      const r = await on.run(
        as[0]!,
        [...as.slice(1), 'curl', '-sSg', '-m', '5', '-i', '-w', '\n%{http_code}', url],
        { timeoutMs: 10_000 },
      );
      const lines = r.stdout.trimEnd().split('\n');
      const status = Number(lines.pop());
      const text = lines.join('\n');
      const split = text.indexOf('\r\n\r\n');
      const head = split < 0 ? '' : text.slice(0, split);
      let body: { instance?: string; peer?: string | null } = {};
      try {
        body = JSON.parse(split < 0 ? text : text.slice(split + 4)) as typeof body;
      } catch {
        /* an error page */
      }
      const error = /x-remora-error: (\S+)/i.exec(head)?.[1] ?? null;
      return { status, body, error, raw: `${r.stdout}\n${r.stderr}` };
    };
    /**
     * A plain TCP client (node net.connect) on the client host, as `nobody` unless `as` says
     * otherwise ([] for root): the echo it got, or `error: <code>`.
     */
    const tcpEcho = async (address: string, port: number, as: string[] = AS_NOBODY) => {
      const argv = [...as, NODE];
      const r = await client!.run(
        argv[0]!,
        [
          ...argv.slice(1),
          '-e',
          `const s = require('node:net').connect(${port}, '${address}', () => s.write('hello mesh'));
           let got = '';
           s.setTimeout(4000, () => s.destroy());
           s.on('data', (d) => { got += d; if (got.length >= 10) s.destroy(); });
           s.on('error', (e) => { got = 'error: ' + e.code; });
           s.on('close', () => process.stdout.write(got || 'closed'));`,
        ],
        { timeoutMs: 10_000 },
      );
      return r.stdout;
    };
    const status = async (host: LabHost) => {
      const r = await host.node(
        `const r = await fetch('http://127.0.0.1:${adminPorts[host.name as keyof typeof adminPorts]}/status'); process.stdout.write(await r.text());`,
      );
      return JSON.parse(r.stdout) as {
        instances: {
          id: string;
          proxy: { adminPort: number | null; ready: boolean } | null;
          warnings: { code: string; message: string }[];
          mutualTls?: { mode: string; source: string } | null;
          transparent: {
            active: boolean;
            chains: string[];
            redirects: number;
            meshDestinationsOnly: boolean;
            lastError: { code: string; message: string } | null;
          } | null;
        }[];
      };
    };
    const tableRules = async (host: LabHost, table: 'nat' | 'filter', family: 4 | 6 = 4) =>
      (await host.run(family === 4 ? 'iptables' : 'ip6tables', ['-t', table, '-S'])).stdout;
    const natRules = (host: LabHost, family: 4 | 6 = 4) => tableRules(host, 'nat', family);

    const active = async (host: LabHost, ids: string[]) => {
      const st = await status(host).catch(() => null);
      return ids.every((id) => st?.instances.find((i) => i.id === id)?.transparent?.active);
    };
    await until(
      'the rules on both hosts, and an unmodified client as nobody reaching api through the mesh',
      async () =>
        (await active(apihost!, ['api-1', 'echo-1'])) &&
        (await active(client!, ['web-1'])) &&
        /\/svc\/web$/.test((await curl('http://api:8080/')).body.peer ?? ''),
      45_000,
    );
    phase('the first intercepted call answered');

    t.test('an unmodified HTTP client calling http://api:8080/ is carried over mTLS', async (t) => {
      for (const url of ['http://api:8080/', 'http://api.service.consul:8080/x']) {
        const r = await curl(url);
        t.equal(r.status, 200, `${url} answered`);
        t.equal(r.body.instance, 'api-1');
        t.match(
          r.body.peer,
          new RegExp(`^spiffe://[^/]+/ns/default/dc/${DC}/svc/web$`),
          `api's proxy vouches for web's identity (x-forwarded-client-cert) on ${url}`,
        );
      }
      const st = await status(client!);
      const web = st.instances.find((i) => i.id === 'web-1')!;
      t.match(web.transparent, { active: true }, 'remora status shows the rules installed');
      t.equal(web.transparent!.chains.length, 2);
      const rules = await natRules(client!);
      for (const c of web.transparent!.chains) t.match(rules, `-N ${c}`, `${c} exists`);
      t.match(rules, `-d ${apihost!.ip}/32 -p tcp -m tcp --dport 8080`, 'api’s address redirected');
      t.match(rules, /--uid-owner 0 .*-j RETURN/, 'the proxies’ own user is excluded');
      const byIp = await curl(`http://${apihost!.ip}:8080/`);
      t.equal(byIp.status, 200, 'a call to api’s IP address (no service name in Host) is carried');
      t.match(byIp.body.peer, /\/svc\/web$/, 'as web, over mTLS');
    });

    t.test('two transparent instances on one host each carry their own app user', async (t) => {
      const billing = await until(
        "billing's rules, and daemon's call to api carried as billing",
        async () => {
          if (!(await active(client!, ['billing-1']))) return undefined;
          const x = await curl('http://api:8080/', client, AS_DAEMON);
          return /\/svc\/billing$/.test(x.body.peer ?? '') ? x : undefined;
        },
        30_000,
      );
      t.equal(billing.status, 200, "daemon's call answered");
      t.match(
        (await curl('http://api:8080/')).body.peer,
        /\/svc\/web$/,
        "nobody's call to the same service is still web's",
      );
      const rules = await natRules(client!);
      t.match(rules, /-m owner ! --uid-owner 65534 .*-j RETURN/, "web's chain: nobody only");
      t.match(rules, /-m owner ! --uid-owner 1 .*-j RETURN/, "billing's chain: daemon only");
      const st = await status(client!);
      t.same(
        st.instances.map((i) => i.warnings),
        [[], []],
        'no shared-namespace warning: each app has its own user',
      );
    });

    t.test('a service web does not list is reached once an intention allows it', async (t) => {
      const before = await curl('http://ledger:8081/');
      t.equal(before.status, 200, 'before: a plain call to the app');
      t.equal(before.body.peer ?? null, null, 'not intercepted: the app sees no mesh peer');
      const r = await remoraCli('intention', 'create', 'web', 'ledger');
      t.equal(r.code, 0, `the operator allows web → ledger: ${r.stderr}`);
      const after = await until(
        'web to call ledger through the mesh',
        async () => {
          const x = await curl('http://ledger:8081/');
          return /\/svc\/web$/.test(x.body.peer ?? '') ? x : undefined;
        },
        30_000,
      );
      t.equal(after.status, 200);
      t.equal(after.body.instance, 'ledger-1', 'carried over mTLS as web');
      t.match(
        await natRules(client!),
        `-d ${apihost!.ip}/32 -p tcp -m tcp --dport 8081`,
        "ledger's address redirected",
      );
      const del = await remoraCli('intention', 'delete', 'web', 'ledger');
      t.equal(del.code, 0, `and takes it back: ${del.stderr}`);
      await until(
        'the rule for ledger to go',
        async () => !(await natRules(client!)).includes('--dport 8081'),
        30_000,
      );
      t.equal((await curl('http://ledger:8081/')).body.peer ?? null, null, 'plain again');
    });

    t.test(
      'an agent without CAP_NET_ADMIN reports it; explicit upstreams keep working',
      async (t) => {
        const web2 = await until(
          'the agent on nopriv to report the missing privilege',
          async () => {
            const w = (await status(nopriv!)).instances.find((i) => i.id === 'web-2');
            return w?.transparent?.lastError ? w : undefined;
          },
          20_000,
        );
        t.equal(web2.transparent!.active, false);
        t.equal(web2.transparent!.lastError!.code, 'REMORA_E_AGENT_TRANSPARENT_PRIVILEGE');
        t.match(web2.transparent!.lastError!.message, /web-2.*iptables.*CAP_NET_ADMIN/s);
        const cli = await nopriv!.run(NODE, [
          REMORA,
          'status',
          '--agent-admin',
          `http://127.0.0.1:${adminPorts.nopriv}`,
        ]);
        t.match(
          cli.stdout,
          /web-2: REMORA_E_AGENT_TRANSPARENT_PRIVILEGE/,
          '`remora status` shows it',
        );
        const explicit = await until(
          'the explicit upstream listener of web-2 to carry a call',
          async () => {
            const r = await curl('http://127.0.0.1:9191/', nopriv);
            return r.status === 200 ? r : undefined;
          },
          20_000,
        );
        t.match(explicit.body.peer, /\/svc\/web$/, 'explicit mode still carries calls over mTLS');
        t.notMatch(await natRules(nopriv!), /REMORA/, 'and no rule was installed');
      },
    );

    t.test('a raw TCP client calling echo’s address is carried over mTLS', async (t) => {
      await until(
        'echo endpoints to reach the client host',
        async () => (await tcpEcho(apihost!.ip, 7000)) === 'hello mesh',
        20_000,
      );
      t.equal(await tcpEcho(apihost!.ip, 7000), 'hello mesh', 'the bytes come back');
      const web = (await status(client!)).instances.find((i) => i.id === 'web-1')!;
      const metrics = await client!.node(
        `const r = await fetch('http://127.0.0.1:${web.proxy!.adminPort}/metrics'); process.stdout.write(await r.text());`,
      );
      t.match(
        metrics.stdout,
        /remora_proxy_connections_total\{direction="outbound",service="echo"\} [1-9]/,
        'web’s proxy carried the connection to echo',
      );
    });

    t.test(
      'an IPv6 destination is intercepted too',
      { skip: !apihost!.ip6 && 'no IPv6' },
      async (t) => {
        // a second catalog entry for api-1's sidecar, at apihost's IPv6 address: what a dual-stack
        // registration looks like to the client's agent
        const ip6 = apihost!.ip6!;
        const reg = await server!.node(
          `const r = await fetch('http://${s}:8500/v1/agent/service/register', { method: 'PUT', body: JSON.stringify(${JSON.stringify(
            {
              Kind: 'connect-proxy',
              ID: 'api-6-sidecar-proxy',
              Name: 'api-sidecar-proxy',
              Address: ip6,
              Port: 21000,
              Proxy: {
                DestinationServiceName: 'api',
                DestinationServiceID: 'api-6',
                LocalServicePort: 8080,
              },
            },
          )}) }); process.stdout.write(String(r.status));`,
        );
        t.equal(reg.stdout, '200', `the IPv6 entry is registered ${reg.stderr}`);
        const c = (await status(client!)).instances.find((i) => i.id === 'web-1')!.transparent!;
        const out = c.chains.find((x) => x.endsWith('-OUT'))!;
        await until(
          'the client’s IPv6 rule for api',
          async () => (await natRules(client!, 6)).includes(`-A ${out} -d ${ip6}/128`),
          20_000,
        );
        const r = await curl(`http://[${ip6}]:8080/`);
        t.equal(
          r.status,
          200,
          `an unmodified client calling api’s IPv6 address is answered ${r.raw}`,
        );
        t.match(r.body.peer ?? '', /\/svc\/web$/, 'over mTLS, as web');
      },
    );

    t.test('plain callers that bypass the mesh reach no app', async (t) => {
      // root is the proxies' user here, so its calls are not intercepted: a direct plain call
      const direct = await client!.run(
        'curl',
        ['-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${apihost!.ip}:8080/`],
        { timeoutMs: 10_000 },
      );
      t.not(
        direct.stdout,
        '200',
        `plain HTTP to api’s port lands on the mTLS listener (${direct.stdout} ${direct.stderr.trim()})`,
      );
      const apiRules = await natRules(apihost!);
      t.match(apiRules, /--dport 8080 .*-j REDIRECT --to-ports 21000/, 'api’s inbound redirect');
      t.match(apiRules, /--dport 7000 .*-j REDIRECT --to-ports 21001/, 'echo’s inbound redirect');
      if (!apihost!.ip6) return;
      // api's app listens on IPv6 as well: plain IPv6 callers are steered the same way
      const direct6 = await client!.run(
        'curl',
        [
          '-sS',
          '-g',
          '-m',
          '5',
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          `http://[${apihost!.ip6}]:8080/`,
        ],
        { timeoutMs: 10_000 },
      );
      t.not(
        direct6.stdout,
        '200',
        `plain HTTP over IPv6 to api’s port does not reach the app (${direct6.stdout} ${direct6.stderr.trim()})`,
      );
      const api6 = await natRules(apihost!, 6);
      t.match(api6, /--dport 8080 .*-j REDIRECT --to-ports 21000/, 'api’s IPv6 inbound redirect');
    });

    t.test(
      'permissive mutual TLS lets a host outside the mesh reach api while the mesh flag allows it',
      async (t) => {
        // the server host runs no agent: a caller outside the mesh, calling api's port by address
        const plainFromServer = () => curl(`http://${apihost!.ip}:8080/`, server, ['env']);
        const write = async (path: string, method: string, body?: unknown) => {
          const r = await server!.node(
            `const r = await fetch('http://${s}:8500${path}', { method: '${method}'${
              body === undefined ? '' : `, body: JSON.stringify(${JSON.stringify(body)})`
            } }); process.stdout.write(r.status + ' ' + (await r.text()));`,
          );
          return r.stdout;
        };
        const permissive = { Kind: 'service-defaults', Name: 'api', MutualTLSMode: 'permissive' };
        const api1 = async () => (await status(apihost!)).instances.find((i) => i.id === 'api-1');

        t.match(
          await write('/v1/config', 'PUT', permissive),
          /^400 cannot set MutualTLSMode=permissive because AllowEnablingPermissiveMutualTLS=false/,
          'without the mesh flag the catalog refuses the entry, as Consul does',
        );
        t.equal(
          await write('/v1/config', 'PUT', {
            Kind: 'mesh',
            AllowEnablingPermissiveMutualTLS: true,
          }),
          '200 true',
        );
        t.equal(await write('/v1/config', 'PUT', permissive), '200 true');
        await until(
          "api-1's agent to apply permissive",
          async () => (await api1())?.mutualTls?.mode === 'permissive',
          20_000,
        );
        let plain = await plainFromServer();
        await until(
          'the plain caller to reach the app (the snapshot reaches the proxy)',
          async () => (plain = await plainFromServer()).status === 200,
          10_000,
        );
        t.equal(plain.status, 200, "the host outside the mesh reaches api's app through its port");
        t.notOk(plain.body.peer, 'with no mesh identity');
        const mesh = await curl('http://api:8080/');
        t.equal(mesh.status, 200, 'the mesh caller still gets through');
        t.match(mesh.body.peer, /\/svc\/web$/, 'over mTLS, as web');

        // the flag turned off while api is permissive: reported, and strict at once
        t.equal(await write('/v1/config', 'PUT', { Kind: 'mesh' }), '200 true');
        await until(
          'api-1 strict again, with the reason in its status',
          async () => {
            const a = await api1();
            return (
              a?.mutualTls?.mode === 'strict' &&
              a.warnings.some((w) => w.code === 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_ALLOWED')
            );
          },
          20_000,
        );
        await until(
          'the plain caller refused again',
          async () => (await plainFromServer()).status !== 200,
          10_000,
        );
        t.pass('strict again: the plain caller no longer reaches the app');
        t.equal((await curl('http://api:8080/')).status, 200, 'the mesh is untouched');
        t.equal(await write('/v1/config/service-defaults/api', 'DELETE'), '200 {}');
        await until(
          'the warning gone with the entry',
          async () =>
            (await api1())?.warnings.every((w) => !w.code.startsWith('REMORA_E_AGENT_MTLS_')),
          20_000,
        );
      },
    );

    t.test('traffic to destinations outside the mesh passes untouched', async (t) => {
      const r = await curl(`http://${s}:8500/v1/status/leader`);
      t.equal(r.status, 200, 'the catalog on the server host answers the app directly');
      const unknown = await curl(`http://${s}:8500/`);
      t.equal(unknown.error, null, 'no proxy error: the call never reached a proxy');
    });

    t.test(
      "the mesh entry's MeshDestinationsOnly confines the apps to the mesh, live",
      async (t) => {
        // a plain echo server outside the mesh, on every address of the server host
        start(server!, 'plain-echo', [NODE, join(root, 'examples/apps/echo.js')], {
          PORT: '7070',
          HOST: server!.ip6 ? '::' : '0.0.0.0',
        });
        const outside = [s, ...(server!.ip6 ? [server!.ip6] : [])];
        await until(
          'the plain echo server to answer nobody',
          async () => (await tcpEcho(s, 7070)) === 'hello mesh',
          10_000,
        );
        const meshEntry = async (on: boolean) => {
          const r = await server!.node(
            `const r = await fetch('http://${s}:8500/v1/config', { method: 'PUT', body: JSON.stringify(${JSON.stringify(
              { Kind: 'mesh', TransparentProxy: { MeshDestinationsOnly: on } },
            )}) }); process.stdout.write(String(r.status));`,
          );
          t.equal(r.stdout, '200', `the mesh entry written (MeshDestinationsOnly = ${on})`);
        };
        const meshOnly = async (id: string) =>
          (await status(client!)).instances.find((i) => i.id === id)?.transparent
            ?.meshDestinationsOnly;

        await meshEntry(true);
        await until(
          'both instances of the client host to refuse non-mesh calls',
          async () => (await meshOnly('web-1')) && (await meshOnly('billing-1')),
          20_000,
        );
        for (const address of outside)
          t.equal(
            await tcpEcho(address, 7070),
            'error: ECONNREFUSED',
            `nobody's plain connection to ${address}:7070 is refused at once`,
          );
        t.equal(
          await tcpEcho(s, 7070, AS_DAEMON),
          'error: ECONNREFUSED',
          "so is billing's app user's (each instance's own chain)",
        );
        t.equal(
          await tcpEcho(s, 7070, []),
          'hello mesh',
          "root, the proxies' user, is not held: the agent and proxies reach Consul and NATS",
        );
        const api = await curl('http://api:8080/');
        t.equal(api.status, 200, 'the mesh service still answers nobody');
        t.match(api.body.peer, /\/svc\/web$/, 'over mTLS, as web');
        const web = (await status(client!)).instances.find((i) => i.id === 'web-1')!;
        const chain = web.transparent!.chains.find((c) => c.endsWith('-MESH'))!;
        t.ok(chain, 'remora status lists the filter chain');
        for (const family of client!.ip6 ? ([4, 6] as const) : ([4] as const))
          t.match(
            await tableRules(client!, 'filter', family),
            `-A OUTPUT -p tcp -j ${chain}`,
            `IPv${family}: the filter jump`,
          );

        await meshEntry(false);
        await until(
          'the filter rules to go',
          async () => !(await tableRules(client!, 'filter')).includes('REMORA'),
          20_000,
        );
        for (const address of outside)
          t.equal(
            await tcpEcho(address, 7070),
            'hello mesh',
            `turned off: nobody reaches ${address}:7070 again`,
          );
        t.equal(await meshOnly('web-1'), false, 'remora status says so');
        // on again: the last test checks that the agents' stop removes the filter chains too
        await meshEntry(true);
        await until(
          'the filter rules back',
          async () => (await meshOnly('web-1')) === true,
          20_000,
        );
      },
    );

    t.test('intentions are enforced on intercepted calls', async (t) => {
      await Promise.all(
        ['api', 'echo'].map(async (dst) => {
          const r = await remoraCli('intention', 'create', '--deny', 'web', dst);
          t.equal(r.code, 0, r.stderr);
        }),
      );
      const denied = await until(
        'the deny to reach api’s proxy',
        async () => {
          const r = await curl('http://api:8080/');
          return r.status === 403 ? r : undefined;
        },
        20_000,
      );
      t.equal(denied.error, 'REMORA_E_PROXY_INTENTION_DENIED', '403 with x-remora-error');
      await until(
        'the deny to reach echo’s proxy',
        async () => (await tcpEcho(apihost!.ip, 7000)) !== 'hello mesh',
        20_000,
      );
      t.not(await tcpEcho(apihost!.ip, 7000), 'hello mesh', 'the TCP connection is refused');
    });

    t.test('after the agents stop, no REMORA chain is left in any namespace', async (t) => {
      // all at once: each agent stops its own instances in order (the rules go last)
      stopRestarts();
      await Promise.all(
        [...agents].map(async ([name, agent]) => {
          const exited = new Promise<void>((resolve) => agent.child.once('exit', () => resolve()));
          agent.child.kill('SIGTERM');
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([
            exited,
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`agent on ${name} did not stop`)), 20_000);
            }),
          ]).finally(() => clearTimeout(timer));
        }),
      );
      for (const host of [apihost!, client!, nopriv!]) {
        for (const family of host.ip6 ? ([4, 6] as const) : ([4] as const)) {
          for (const table of ['nat', 'filter'] as const) {
            const rules = await tableRules(host, table, family);
            t.notMatch(
              rules,
              /REMORA/,
              `${host.name}: ${rules.split('\n').length} IPv${family} ${table} lines, none REMORA`,
            );
          }
        }
      }
    });
  });
}
