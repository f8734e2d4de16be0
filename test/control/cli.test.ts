// The operator commands (token, intention, ca) run in-process against a real nats-server and a
// control replica on an in-memory Consul.
import t from 'tap';
import { Writable } from 'node:stream';
import { createProgram } from '../../cli/program.ts';
import { CliExit, type CliContext } from '../../cli/context.ts';
import { createControl } from '../../control/index.ts';
import { createFakeConsul } from './fake-consul.ts';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats.ts';
import { connectNats, requestIntentions, type NatsConnection } from '../../lib/nats/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createClock } from '../../lib/util/index.ts';
import { hasCode } from '../../lib/errors/index.ts';

const OP = 'cli-operator';
const logger = createSilentLogger();
let nats: NatsServerHandle;
let nc: NatsConnection;
let stopControl: () => Promise<void>;
const consul = createFakeConsul();

t.before(async () => {
  nats = await startNatsServer();
  nc = await connectNats({ servers: nats.url, name: 'cli-test', logger });
  const cnc = await connectNats({ servers: nats.url, name: 'control', logger });
  const control = createControl({
    config: {
      datacenter: 'dc1',
      kvPrefix: 'remora/',
      leafTtlHours: 72,
      rootTtlDays: 3650,
      operatorToken: OP,
      defaultPolicy: 'deny',
      auditMode: false,
    },
    nats: cnc,
    consul,
    clock: createClock(),
    logger,
  });
  await control.start();
  stopControl = async () => {
    await control.stop();
    await cnc.close();
  };
});
t.teardown(async () => {
  await stopControl();
  await nc.close();
  await nats.stop();
});

async function remora(args: string[], env: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  const sink = (f: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        f(chunk.toString());
        cb();
      },
    });
  const ctx: CliContext = {
    env: { REMORA_CLI_NATS_SERVERS: nats.url, REMORA_CLI_OPERATOR_TOKEN: OP, ...env },
    stdout: sink((s) => (stdout += s)),
    stderr: sink((s) => (stderr += s)),
    stopSignal: new AbortController().signal,
    onReload: () => () => undefined,
    cwd: process.cwd(),
  };
  let exit = 0;
  let code: string | undefined;
  let message = '';
  try {
    const argv = ['node', 'remora', ...args];
    await (await createProgram(ctx, argv)).parseAsync(argv);
  } catch (err) {
    if (err instanceof CliExit) exit = err.exitCode;
    else if (hasCode(err)) {
      exit = 1;
      code = err.code;
      message = err.message;
    } else throw err;
  }
  return { stdout, stderr, exit, code, message };
}

t.test('token create prints only the token and refuses bad arguments', async (t) => {
  const r = await remora(['token', 'create', 'node-1', 'web', 'api-*', '--ttl', '24']);
  t.equal(r.exit, 0);
  t.match(r.stdout.trim(), /^rmt1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
  t.match(r.stderr, /services web api-\*, expires /);
  t.equal((await remora(['token', 'create', 'bad node', 'web'])).code, 'REMORA_E_USAGE');
  t.equal((await remora(['token', 'create', 'n', 'a.b'])).code, 'REMORA_E_USAGE');
  t.equal((await remora(['token', 'create', 'n', 'web', '--ttl', 'soon'])).code, 'REMORA_E_USAGE');
  const noOp = await remora(['token', 'create', 'n', 'web'], { REMORA_CLI_OPERATOR_TOKEN: '' });
  t.equal(noOp.code, 'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED');
  const wrongOp = await remora(['token', 'create', 'n', 'web'], { REMORA_CLI_OPERATOR_TOKEN: 'x' });
  t.equal(wrongOp.code, 'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED');
});

t.test('intention create, list, check, policy and delete', async (t) => {
  t.equal((await remora(['intention', 'create', '--deny', '*', 'api'])).exit, 0);
  const l7 = await remora([
    'intention',
    'create',
    'web',
    'api',
    '--description',
    'web reads v1',
    '--permissions',
    '[{"action":"allow","http":{"pathPrefix":"/v1","methods":["GET"]}}]',
  ]);
  t.equal(l7.exit, 0, l7.stderr);
  t.match(l7.stdout, 'Created: web => api (L7 (1 permission), precedence 9)');
  const list = await remora(['intention', 'list']);
  t.match(list.stdout, /PRECEDENCE\s+SOURCE\s+DESTINATION\s+ACTION\s+DESCRIPTION/);
  t.match(list.stdout, /9\s+web\s+api\s+L7 \(1 permission\)\s+web reads v1/);
  t.match(list.stdout, /default policy: deny; revision 3/);
  const json = JSON.parse((await remora(['intention', 'list', '--json'])).stdout);
  t.equal(json.intentions.length, 2);

  const conn = await remora(['intention', 'check', 'web', 'api']);
  t.equal(conn.exit, 0);
  t.match(conn.stdout, 'L7 permissions decide each request');
  const get = await remora([
    'intention',
    'check',
    'web',
    'api',
    '--method',
    'get',
    '--path',
    '/v1/x',
  ]);
  t.equal(get.exit, 0);
  t.match(get.stdout, 'Allowed: intention "web" → api permission #1 allow (precedence 9)');
  const post = await remora([
    'intention',
    'check',
    'web',
    'api',
    '--method',
    'POST',
    '--path',
    '/v1/x',
    '--header',
    'x-a=b',
  ]);
  t.equal(post.exit, 2);
  t.match(post.stdout, 'no permission matches POST /v1/x; default policy deny');
  t.equal(
    (await remora(['intention', 'check', 'web', 'api', '--path', '/', '--header', 'nope'])).code,
    'REMORA_E_USAGE',
  );

  const audit = await remora(['intention', 'policy', '--default', 'allow', '--audit', 'on']);
  t.match(audit.stdout, 'default policy: allow; audit mode: on');
  const shown = await remora(['intention', 'policy']);
  t.match(shown.stdout, /default policy: allow; audit mode: on .*revision 4/);
  const auditDenied = await remora(['intention', 'check', 'billing', 'api']);
  t.equal(auditDenied.exit, 2);
  t.match(auditDenied.stdout, 'Denied (audit mode: logged, not enforced)');
  t.equal((await remora(['intention', 'policy', '--default', 'maybe'])).code, 'REMORA_E_USAGE');
  t.equal((await remora(['intention', 'policy', '--audit', 'yes'])).code, 'REMORA_E_USAGE');

  t.equal(
    (await remora(['intention', 'create', '--deny', '--allow', 'a', 'b'])).code,
    'REMORA_E_USAGE',
  );
  t.equal(
    (await remora(['intention', 'create', '--deny', 'a', 'b', '--permissions', '[]'])).code,
    'REMORA_E_USAGE',
  );
  t.equal(
    (await remora(['intention', 'create', 'a', 'b', '--permissions', '{'])).code,
    'REMORA_E_USAGE',
  );
  t.equal(
    (await remora(['intention', 'create', 'a', 'b', '--permissions', '[]'])).code,
    'REMORA_E_INTENTIONS_INVALID',
  );

  const del = await remora(['intention', 'delete', '*', 'api']);
  t.match(del.stdout, 'Deleted: * => api; revision 5');
  t.equal(
    (await remora(['intention', 'delete', '*', 'api'])).code,
    'REMORA_E_CONTROL_INTENTION_NOT_FOUND',
  );
  t.equal((await requestIntentions(nc, 'dc1')).revision, 5);
});

t.test('an L7 intention for a service that serves tcp is saved with a warning', async (t) => {
  const permissions = '[{"action":"deny","http":{"pathPrefix":"/admin"}}]';
  const create = () =>
    remora(['intention', 'create', 'web', 'ledger', '--permissions', permissions]);
  t.teardown(() => remora(['intention', 'delete', 'web', 'ledger']));
  const unknown = await create();
  t.equal(unknown.exit, 0, unknown.stderr);
  t.equal(unknown.stderr, '', 'ledger has no sidecar registered yet: nothing to say');

  // a sidecar registered without a protocol, and no config entries: tcp
  consul.services.push({
    Node: 'n1',
    ServiceID: 'ledger-1-sidecar-proxy',
    ServiceName: 'ledger-sidecar-proxy',
    ServiceProxy: { Config: {} },
  });
  t.teardown(() => void (consul.services = []));
  const tcp = await create();
  t.equal(tcp.exit, 0, 'saved all the same');
  t.match(tcp.stdout, 'Created: web => ledger');
  t.match(tcp.stderr, /^warning: ledger serves tcp, where requests cannot be checked/);
  t.match(tcp.stderr, /Protocol = "http" in its service-defaults/);

  consul.configEntries.set('service-defaults', [
    { Kind: 'service-defaults', Name: 'ledger', Protocol: 'http' },
  ]);
  t.teardown(() => void consul.configEntries.clear());
  t.equal((await create()).stderr, '', 'service-defaults says http: no warning');
  consul.configEntries.set('service-defaults', []);
  consul.configEntries.set('proxy-defaults', [
    { Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'grpc' } },
  ]);
  t.equal((await create()).stderr, '', 'proxy-defaults says grpc: no warning');
  consul.services[0]!.ServiceProxy = { Config: { protocol: 'tcp' } };
  t.match((await create()).stderr, /^warning: ledger serves tcp/, 'the registration wins');
  t.equal(
    (await remora(['intention', 'create', 'web', 'ledger'])).stderr,
    '',
    'an L4 intention is fine on tcp',
  );

  // Consul hangs on the lookup: the save is answered anyway, without a warning
  consul.services[0]!.ServiceProxy = { Config: {} };
  consul.hang = true;
  t.teardown(() => void (consul.hang = false));
  const slow = await create();
  t.equal(slow.exit, 0, slow.stderr);
  t.match(slow.stdout, 'Created: web => ledger');
  t.equal(slow.stderr, '', 'no warning when Consul cannot tell in time');
});

t.test('an intention requiring a JWT is refused for a service that serves tcp', async (t) => {
  const jwt = '{"providers":[{"name":"okta","verifyClaims":[{"path":["role"],"value":"admin"}]}]}';
  const create = () => remora(['intention', 'create', 'web', 'vault', '--jwt', jwt]);
  t.teardown(() => remora(['intention', 'delete', 'web', 'vault']));
  const unknown = await create();
  t.equal(unknown.exit, 0, 'vault has no sidecar registered yet: saved');
  t.match(
    unknown.stdout,
    'Created: web => vault (allow, requires a JWT from okta with role = "admin"',
  );

  consul.services.push({
    Node: 'n1',
    ServiceID: 'vault-1-sidecar-proxy',
    ServiceName: 'vault-sidecar-proxy',
    ServiceProxy: { Config: {} },
  });
  t.teardown(() => void (consul.services = []));
  const tcp = await create();
  t.equal(tcp.code, 'REMORA_E_INTENTIONS_INVALID');
  t.match(tcp.message, /requires a JWT, but vault serves tcp .*Set its protocol to http/);
  const l7 = await remora([
    'intention',
    'create',
    'web',
    'vault',
    '--permissions',
    '[{"action":"allow","http":{"pathPrefix":"/"},"jwt":{"providers":[{"name":"okta"}]}}]',
  ]);
  t.equal(l7.code, 'REMORA_E_INTENTIONS_INVALID', 'a permission requiring a JWT too');

  consul.services[0]!.ServiceProxy = { Config: { protocol: 'http' } };
  t.equal((await create()).exit, 0, 'an http service takes it');
  const explained = await remora(['explain', 'web', 'vault', '--method', 'GET', '--path', '/']);
  t.match(explained.stdout, 'web → vault: allowed');
  t.match(explained.stdout, 'requires a JWT from okta with role = "admin" on every request');
  t.match(
    explained.stdout,
    /one without them is answered 401 \(x-remora-error: REMORA_E_PROXY_JWT_MISSING/,
  );
  t.equal(
    (await remora(['intention', 'create', 'web', 'vault', '--jwt', '{'])).code,
    'REMORA_E_USAGE',
  );
  t.equal(
    (await remora(['intention', 'create', 'web', 'vault', '--deny', '--jwt', jwt])).code,
    'REMORA_E_INTENTIONS_INVALID',
    'never on a deny',
  );
});

t.test('ca roots and ca rotate', async (t) => {
  const before = await remora(['ca', 'roots']);
  t.match(before.stdout, /trust domain: [0-9a-f-]+\.remora\nactive\s+[0-9a-f]{64}/);
  const pem = await remora(['ca', 'roots', '--pem']);
  t.match(pem.stdout, /^-----BEGIN CERTIFICATE-----/);
  const rotated = await remora(['ca', 'rotate']);
  t.match(rotated.stdout, /rotated: new active root [0-9a-f]{64}/);
  const json = JSON.parse((await remora(['ca', 'roots', '--json'])).stdout);
  t.equal(json.roots.length, 2);
  t.equal(
    (await remora(['ca', 'rotate'], { REMORA_CLI_OPERATOR_TOKEN: 'x' })).code,
    'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED',
  );
});

t.test('operator commands fail with a coded error when NATS is unreachable', async (t) => {
  const r = await remora(['ca', 'roots'], { REMORA_CLI_NATS_SERVERS: 'nats://127.0.0.1:1' });
  t.equal(r.code, 'REMORA_E_NATS_CONNECT_FAILED');
});
