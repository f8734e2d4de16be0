// Security defaults of a real host (nats-server, devconsul, two control replicas, agent, proxies):
// admin listeners on loopback only, private keys 0600 in 0700 directories, and no secret in any
// log, in the agent's /status or in a proxy's /config — with every log at debug level.
import t from 'tap';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { runRemora } from '../helpers/cli.ts';
import {
  apiDefinition,
  httpGet,
  REMORA_BIN,
  startMesh,
  startProc,
  waitFor,
  webDefinition,
  webReachesApi,
} from '../integration/agent/harness.ts';

const OPERATOR_TOKEN = 'test-operator-token-0123456789abcdef';

function externalAddress(): string | null {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, host);
    s.setTimeout(2000, () => {
      s.destroy();
      resolve(false);
    });
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

async function walk(dir: string): Promise<{ path: string; mode: number; dir: boolean }[]> {
  const out: { path: string; mode: number; dir: boolean }[] = [];
  const st = await stat(dir);
  out.push({ path: dir, mode: st.mode & 0o777, dir: true });
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push({ path: p, mode: (await stat(p)).mode & 0o777, dir: false });
  }
  return out;
}

t.setTimeout(240_000);

t.test('a running host keeps its secrets and admin endpoints to itself', async (t) => {
  const mesh = await startMesh(t);
  const debugControl = startProc([REMORA_BIN, 'control', '--log-level', 'debug'], {
    REMORA_CONTROL_NATS_SERVERS: mesh.nats.url,
    REMORA_CONTROL_CONSUL_ADDRESS: mesh.consul.url,
    REMORA_CONTROL_OPERATOR_TOKEN: OPERATOR_TOKEN,
    REMORA_CONTROL_TRACING_ENDPOINT: '',
  });
  t.teardown(() => debugControl.stop('SIGTERM', 5000));
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition('api.json', apiDefinition(mesh.ports, 1));
  const agent = mesh.startAgent({
    REMORA_AGENT_LOG_LEVEL: 'debug',
    REMORA_PROXY_LOG_LEVEL: 'debug',
  });
  t.teardown(() => agent.stop());
  await waitFor('web to reach api', () => webReachesApi(mesh), 120_000, 100);
  // operator requests through both replicas (queue group), so the debug replica serves some
  for (let i = 0; i < 4; i++) {
    const r = await runRemora(['token', 'create', `node-x${i}`, 'api'], {
      env: { REMORA_CLI_NATS_SERVERS: mesh.nats.url, REMORA_CLI_OPERATOR_TOKEN: OPERATOR_TOKEN },
      timeoutMs: 60_000,
    });
    t.equal(r.code, 0, `token ${i} created`);
  }
  const status = await mesh.status();

  t.test(
    'admin endpoints answer on 127.0.0.1 and are not reachable on other addresses',
    async (t) => {
      const ext = externalAddress();
      const ports = [
        ['agent /status', mesh.adminPort],
        ...status.instances.map(
          (i) => [`proxy admin of ${i.id}`, i.proxy?.adminPort ?? 0] as const,
        ),
      ] as const;
      for (const [what, port] of ports) {
        t.ok(port > 0, `${what} has a port`);
        t.ok(await reachable('127.0.0.1', port), `${what} answers on 127.0.0.1`);
        if (ext) t.notOk(await reachable(ext, port), `${what} is not reachable on ${ext}`);
      }
      if (!ext) t.comment('no non-loopback IPv4 address on this box: only loopback checked');
    },
  );

  t.test('private keys are 0600 and every data directory 0700', async (t) => {
    const entries = await walk(mesh.dataDir);
    const keys: string[] = [];
    for (const e of entries) {
      if (e.dir) {
        t.equal(
          e.mode & 0o077,
          0,
          `${e.path} is not open to group or others (${e.mode.toString(8)})`,
        );
        continue;
      }
      const text = await readFile(e.path, 'utf8').catch(() => '');
      if (/PRIVATE KEY/.test(text)) {
        keys.push(e.path);
        t.equal(e.mode, 0o600, `${e.path} is 0600`);
      }
    }
    t.ok(keys.length >= 2, `${keys.length} private key files found`);
  });

  t.test('no secret appears in logs, /status or /config', async (t) => {
    const kv = await httpGet(`${mesh.consul.url}/v1/kv/remora/?recurse`);
    const kvSecrets = ((kv.json as { Key: string; Value: string | null }[] | null) ?? [])
      .filter((e) => /secret|ca/i.test(e.Key) && e.Value)
      .map((e) => Buffer.from(e.Value!, 'base64').toString('utf8'));
    const keyLines: string[] = [];
    for (const e of await walk(mesh.dataDir)) {
      if (e.dir) continue;
      const text = await readFile(e.path, 'utf8').catch(() => '');
      if (/PRIVATE KEY/.test(text)) keyLines.push(text.split('\n')[5]!);
    }
    // the CA private key (inside KV JSON) and the token secret
    const caKeyLines = kvSecrets.flatMap((v) => {
      const m = /-----BEGIN (?:RSA )?PRIVATE KEY-----\\n([^\\]+)\\n/.exec(v);
      return m ? [m[1]!] : [];
    });
    // the node-token secret: remora/token-secret holds { secret: <base64> }
    const tokenSecret = kvSecrets
      .map((v) => {
        try {
          return (JSON.parse(v) as { secret?: unknown }).secret;
        } catch {
          return undefined;
        }
      })
      .find((x): x is string => typeof x === 'string' && x.length >= 16);
    t.ok(tokenSecret, 'the node-token secret was found in KV to look for');
    const secretValues = tokenSecret
      ? [tokenSecret, Buffer.from(tokenSecret, 'base64').toString('hex')]
      : [];
    const secrets: [string, string][] = [
      ['the operator token', OPERATOR_TOKEN],
      ['the node token', mesh.token],
      ...keyLines.map((l, i) => [`workload key ${i}`, l] as [string, string]),
      ...caKeyLines.map((l, i) => [`CA key ${i}`, l] as [string, string]),
      ...secretValues.map(
        (l, i) => [i === 0 ? 'the token secret' : 'the token secret (hex)', l] as [string, string],
      ),
    ];
    t.ok(
      keyLines.length >= 2 && caKeyLines.length >= 1,
      'workload and CA keys were found to look for',
    );
    const configs = await Promise.all(
      status.instances.map(
        async (i) => (await httpGet(`http://127.0.0.1:${i.proxy!.adminPort}/config`)).body,
      ),
    );
    t.ok(
      configs.every((c) => c.length > 100),
      'every proxy answers /config',
    );
    const places: [string, string][] = [
      ['control (debug) log', debugControl.output()],
      ['control log', mesh.control.output()],
      ['agent (debug) log', agent.output()],
      ['proxy (debug) logs', await mesh.proxyLogs()],
      ['agent /status', JSON.stringify(status)],
      ...configs.map((c, i) => [`proxy /config ${i}`, c] as [string, string]),
    ];
    for (const [where, text] of places)
      for (const [what, secret] of secrets)
        t.notOk(secret && text.includes(secret), `${what} is not in the ${where}`);
  });
});
