// Fault scenarios on the control path, under bounded GET+POST load through real proxies:
// nats-server down, one of two control replicas killed, the CA root rotated (every certificate
// renewed), the catalog down (last: a restarted embedded catalog starts empty).
import t from 'tap';
import { waitFor } from '../../lib/util/index.ts';
import { freePort } from '../helpers/nats.ts';
import { runRemora } from '../helpers/cli.ts';
import { REMORA_BIN, startProc, httpGet } from '../integration/agent/harness.ts';
import { LONG, OUTAGE_MS, startLoad } from './load.ts';
import { checkScenario, startFaultMesh } from './setup.ts';

// the operator token the agent harness gives its control replica
const OPERATOR_TOKEN = 'test-operator-token-0123456789abcdef';

t.setTimeout(LONG ? 900_000 : 300_000);
const fm = await startFaultMesh(t);
const { mesh } = fm;
const cliEnv = {
  REMORA_CLI_NATS_SERVERS: mesh.nats.url,
  REMORA_CLI_OPERATOR_TOKEN: OPERATOR_TOKEN,
};

async function certificates(): Promise<Record<string, string | null>> {
  const s = await mesh.status();
  return Object.fromEntries(s.instances.map((i) => [i.id, i.certificate?.notAfter ?? null]));
}

t.test('nats-server down under load fails and duplicates nothing', async (t) => {
  const load = startLoad({ url: fm.url, scenario: 'nats-down' });
  await load.okMore(20, 'requests before the outage');
  await mesh.nats.stop();
  await load.hold(OUTAGE_MS);
  await mesh.nats.restart();
  await waitFor(
    'the agent to follow control again',
    async () => {
      const s = await mesh.status().catch(() => null);
      return (s && s.waitingFor.length === 0 && s.trustBundle.lastError === null) || null;
    },
    60_000,
    100,
  );
  await load.okMore(20, 'requests after NATS returned');
  await checkScenario(t, 'nats-down', await load.stop(), fm);
});

const metricsPort = await freePort();
const replica2 = startProc([REMORA_BIN, 'control', '--log-level', 'info'], {
  REMORA_CONTROL_NATS_SERVERS: mesh.nats.url,
  REMORA_CONTROL_CONSUL_ADDRESS: mesh.consul.url,
  REMORA_CONTROL_OPERATOR_TOKEN: OPERATOR_TOKEN,
  REMORA_CONTROL_DEFAULT_POLICY: 'allow',
  REMORA_CONTROL_TRACING_ENDPOINT: '',
  REMORA_CONTROL_METRICS_PORT: String(metricsPort),
});
t.teardown(() => replica2.stop('SIGTERM', 5000));

t.test('one of two control replicas killed: traffic and token issuance go on', async (t) => {
  await waitFor(
    'the second control replica to serve metrics',
    async () =>
      (await httpGet(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => null))?.status ===
        200 || null,
    60_000,
    200,
  );
  const load = startLoad({ url: fm.url, scenario: 'control-replica-killed' });
  await load.okMore(20, 'requests before the kill');
  await mesh.control.stop('SIGKILL');
  await load.hold(OUTAGE_MS);
  const token = await runRemora(['token', 'create', 'node-b', 'api'], {
    env: cliEnv,
    timeoutMs: 60_000,
  });
  t.equal(token.code, 0, `the remaining replica creates a node token ${token.stderr}`);
  await load.okMore(20, 'requests after the kill');
  await checkScenario(t, 'control-replica-killed', await load.stop(), fm);
});

t.test(
  'the CA root rotated under load: every certificate is renewed by the remaining replica',
  async (t) => {
    const before = await certificates();
    t.equal(Object.keys(before).length, 3, 'three instances hold certificates');
    const load = startLoad({ url: fm.url, scenario: 'ca-rotated' });
    await load.okMore(20, 'requests before the rotation');
    const rotate = await runRemora(['ca', 'rotate'], { env: cliEnv, timeoutMs: 60_000 });
    t.equal(rotate.code, 0, `remora ca rotate succeeds ${rotate.stderr}`);
    const after = await waitFor(
      'every instance to hold a renewed certificate',
      async () => {
        const now = await certificates();
        return Object.entries(now).every(([id, na]) => na && na !== before[id]) ? now : null;
      },
      90_000,
      200,
    );
    await load.okMore(20, 'requests after the renewal');
    await checkScenario(t, 'ca-rotated', await load.stop(), fm);
    t.equal(Object.keys(after).length, 3, 'all three certificates were renewed');
    t.ok(
      (replica2.output().match(/issued workload certificate/g) ?? []).length >= 3,
      'the surviving replica signed the renewals',
    );
  },
);

t.test('the catalog down under load: proxies keep their endpoints', async (t) => {
  const load = startLoad({ url: fm.url, scenario: 'catalog-down' });
  await load.okMore(20, 'requests before the outage');
  await mesh.consul.stop();
  await load.hold(OUTAGE_MS);
  await mesh.consul.restart();
  await waitFor(
    'both api instances to be registered again',
    async () => (await mesh.healthy('api')).length === 2 || null,
    90_000,
    200,
  );
  await load.okMore(20, 'requests after the catalog returned');
  await checkScenario(t, 'catalog-down', await load.stop(), fm);
});
