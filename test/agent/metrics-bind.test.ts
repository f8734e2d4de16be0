// envoy_prometheus_bind_addr: where each proxy also serves /metrics for scrapers on other hosts —
// from the definition's proxy config, else proxy-defaults' Config; one port per host, the
// instance with the earlier ID keeps it, a port the host's sidecars use is refused, all said.
import t from 'tap';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConsulPort } from '../../agent/ports.ts';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import { decodeDefinitionFile, metricsBindOf } from '../../agent/definitions.ts';
import { waitFor } from '../../lib/util/index.ts';
import { createFakeConfigEntries, startHost } from './fakes.ts';

const PROXY_DEFAULTS = 'proxy-defaults';

function consulWith(entries: ReturnType<typeof createFakeConfigEntries>): ConsulPort {
  return {
    async registerService() {},
    async deregisterService() {},
    async updateTtl() {},
    async agentAddress() {
      return '10.0.0.5';
    },
    watchConnect: () => ({ stop: () => undefined }),
    watchServices: () => ({ stop: () => undefined }),
    watchConfigEntries: entries.watchConfigEntries,
  };
}

const service = (id: string, sidecarPort: number, config: Record<string, unknown> = {}) => ({
  service: {
    name: id.replace(/-\d+$/, ''),
    id,
    port: 8081,
    connect: { sidecar_service: { port: sidecarPort, proxy: { config } } },
  },
});

t.test('the value is an IP address and a port, as Envoy takes it', async (t) => {
  t.same(metricsBindOf('0.0.0.0:20200'), { bindAddress: '0.0.0.0', bindPort: 20200 });
  t.same(metricsBindOf('[::]:9102'), { bindAddress: '::', bindPort: 9102 });
  t.same(metricsBindOf('10.1.2.3:1'), { bindAddress: '10.1.2.3', bindPort: 1 });
  for (const bad of [
    'localhost:9102',
    '0.0.0.0',
    ':9102',
    '0.0.0.0:0',
    '0.0.0.0:65536',
    '::1:9102',
    '[10.0.0.1]:9102',
    9102,
  ])
    t.match(metricsBindOf(bad), /^must be "<IP address>:<port>"/, JSON.stringify(bad));
  const file = JSON.stringify(service('api-1', 21001, { envoy_prometheus_bind_addr: 'host:1' }));
  const r = decodeDefinitionFile(file, 'api.json');
  t.same(r.services, [], 'a definition with a bad value is refused');
  t.match(
    r.problems[0]!.message,
    /connect\.sidecar_service\.proxy\.config\.envoy_prometheus_bind_addr must be "<IP address>:<port>"/,
  );
});

t.test(
  'definitions win over proxy-defaults; a shared port goes to the earlier ID, and moves when it leaves',
  async (t) => {
    const entries = createFakeConfigEntries({
      [PROXY_DEFAULTS]: [
        {
          Kind: PROXY_DEFAULTS,
          Name: 'global',
          Config: { envoy_prometheus_bind_addr: '0.0.0.0:20200' },
        },
      ],
    });
    const snaps = new Map<string, ProxySnapshot>();
    const host = await startHost(
      t,
      consulWith(entries),
      [],
      {
        'a.json': service('api-1', 21001),
        'b.json': service('billing-1', 21002),
        'c.json': service('cache-1', 21003, { envoy_prometheus_bind_addr: '127.0.0.1:20300' }),
        'd.json': service('db-1', 21004, { envoy_prometheus_bind_addr: '0.0.0.0:21001' }),
      },
      {},
      (s) => snaps.set(s.instance.id, s),
    );
    await waitFor('four snapshots', () => snaps.size === 4);
    t.same(
      snaps.get('api-1')!.metrics,
      { bindAddress: '0.0.0.0', bindPort: 20200 },
      'from proxy-defaults',
    );
    t.equal(snaps.get('billing-1')!.metrics, undefined, "api-1's already");
    t.same(snaps.get('cache-1')!.metrics, { bindAddress: '127.0.0.1', bindPort: 20300 }, 'its own');
    t.equal(snaps.get('db-1')!.metrics, undefined, "api-1's sidecar port");
    const warnings = Object.fromEntries(
      host.agent.status().instances.map((i) => [i.id, i.warnings.map((w) => [w.code, w.message])]),
    );
    t.same(warnings['api-1'], []);
    t.same(warnings['cache-1'], []);
    t.match(warnings['billing-1'], [
      [
        'REMORA_E_AGENT_METRICS_PORT_TAKEN',
        /billing-1: envoy_prometheus_bind_addr 0\.0\.0\.0:20200: api-1 on this host serves \/metrics on port 20200 already/,
      ],
    ]);
    t.match(warnings['db-1'], [
      [
        'REMORA_E_AGENT_METRICS_PORT_TAKEN',
        /port 21001 is already a listener of this host's sidecars/,
      ],
    ]);

    await rm(join(host.configDir, 'a.json'));
    await host.agent.reload();
    await waitFor(
      'billing-1 gets the port api-1 left',
      () => snaps.get('billing-1')!.metrics?.bindPort === 20200,
    );
    t.same(
      host.agent.status().instances.find((i) => i.id === 'billing-1')!.warnings,
      [],
      'and its warning goes',
    );
    entries.set(PROXY_DEFAULTS, [
      {
        Kind: PROXY_DEFAULTS,
        Name: 'global',
        Config: { envoy_prometheus_bind_addr: '*:20200' },
      },
    ]);
    await waitFor('a bad value leaves it out', () => snaps.get('billing-1')!.metrics === undefined);
    t.match(host.agent.status().problems, [
      {
        code: 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        message:
          /proxy-defaults global: Config\.envoy_prometheus_bind_addr must be "<IP address>:<port>".*got "\*:20200"/,
      },
    ]);
    entries.set(PROXY_DEFAULTS, [{ Kind: PROXY_DEFAULTS, Name: 'global' }]);
    await waitFor(
      'proxy-defaults no longer asks',
      () => snaps.get('billing-1')!.metrics === undefined,
    );
    t.same(snaps.get('cache-1')!.metrics?.bindPort, 20300, 'a definition keeps its own');
  },
);
