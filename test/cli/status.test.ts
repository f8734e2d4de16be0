import t from 'tap';
import { renderStatus } from '../../cli/commands/status.ts';
import type { AgentStatus } from '../../agent/agent.ts';

t.test(
  'remora status names the instances that call an upstream by intentions, routes or splits',
  async (t) => {
    const status: AgentStatus = {
      node: 'client',
      datacenter: 'dc1',
      startedAt: '2026-11-28T05:00:00.000Z',
      waitingFor: [],
      trustBundle: { known: true, live: true, lastError: null },
      intentions: { known: true, live: true, lastError: null, revision: 4 },
      instances: [],
      upstreams: [
        { service: 'api', endpoints: 2, synced: true, users: ['web-1'], lastError: null },
        {
          service: 'ledger',
          endpoints: 1,
          synced: true,
          users: ['web-1/derived'],
          lastError: null,
        },
        {
          service: 'api-v2',
          endpoints: 1,
          synced: true,
          users: ['web-1/targets'],
          lastError: null,
        },
      ],
      problems: [],
    };
    const out = renderStatus(status, Date.parse('2026-11-28T06:00:00.000Z'));
    t.match(out, /^api\s+2\s+yes\s+web-1$/m, 'an explicit upstream');
    t.match(out, /^ledger\s+1\s+yes\s+web-1 \(by intentions\)$/m, 'a derived one says so');
    t.match(
      out,
      /^api-v2\s+1\s+yes\s+web-1 \(routes, splits, redirect, failover\)$/m,
      'a route or split target too',
    );
  },
);

t.test("remora status shows each instance's protocol and config-entry problems", async (t) => {
  const status: AgentStatus = {
    node: 'client',
    datacenter: 'dc1',
    startedAt: '2026-11-28T05:00:00.000Z',
    waitingFor: ['Consul (config entries; using the protocols last known)'],
    trustBundle: { known: true, live: true, lastError: null },
    intentions: { known: true, live: true, lastError: null, revision: 4 },
    instances: [
      {
        id: 'api-1',
        service: 'api',
        file: '/etc/remora/services.d/api.json',
        sidecarPort: 21001,
        registered: true,
        registrationError: null,
        proxy: null,
        certificate: null,
        protocol: 'http',
        upstreams: [],
        warnings: [],
        transparent: null,
      },
    ],
    upstreams: [],
    problems: [
      {
        code: 'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
        message:
          'service-defaults of api sets protocol "htttp", which is not one of tcp, http, http2, grpc; the value is ignored',
        file: undefined,
        field: undefined,
      },
    ],
  };
  const out = renderStatus(status, Date.parse('2026-11-28T06:00:00.000Z'));
  t.match(out, /^INSTANCE\s+SERVICE\s+PROTOCOL\s+SIDECAR/m);
  t.match(out, /^api-1\s+api\s+http\s+21001\s+yes/m);
  t.match(out, 'waiting for: Consul (config entries; using the protocols last known)');
  t.match(
    out,
    /REMORA_E_AGENT_CENTRAL_CONFIG_INVALID: service-defaults of api sets protocol "htttp"/,
  );
});

t.test(
  'remora status shows where a resolver redirects an upstream and where it fails over',
  async (t) => {
    const upstream = (destination: string, extra: object) => ({
      destination,
      localBindPort: 9191,
      protocol: 'http',
      endpoints: 1,
      synced: true,
      derived: false,
      ...extra,
    });
    const status: AgentStatus = {
      node: 'client',
      datacenter: 'dc1',
      startedAt: '2026-11-28T05:00:00.000Z',
      waitingFor: [],
      trustBundle: { known: true, live: true, lastError: null },
      intentions: { known: true, live: true, lastError: null, revision: 4 },
      instances: [
        {
          id: 'web-1',
          service: 'web',
          file: '/etc/remora/services.d/web.json',
          sidecarPort: 21000,
          registered: true,
          registrationError: null,
          proxy: null,
          certificate: null,
          protocol: 'http',
          upstreams: [
            upstream('api', { failover: ['api-dr', 'api/v1'] }),
            upstream('billing-old', { redirectedTo: 'billing/v2' }),
            upstream('db', {}),
          ],
          warnings: [],
          transparent: null,
        },
      ],
      upstreams: [],
      problems: [],
    };
    const out = renderStatus(status, Date.parse('2026-11-28T06:00:00.000Z'));
    t.match(out, /^web-1 → api: fails over to api-dr, then api\/v1$/m);
    t.match(out, /^web-1 → billing-old: redirected to billing\/v2$/m);
    t.notMatch(out, /web-1 → db/, 'an upstream with neither is not listed');
  },
);

t.test(
  'remora status says which instances take plain connections (permissive mutual TLS)',
  async (t) => {
    const instance = (id: string, mutualTls: AgentStatus['instances'][number]['mutualTls']) => ({
      id,
      service: id.replace(/-\d+$/, ''),
      file: `/etc/remora/services.d/${id}.json`,
      sidecarPort: 21001,
      registered: true,
      registrationError: null,
      proxy: null,
      certificate: null,
      protocol: 'http',
      mutualTls,
      upstreams: [],
      warnings: [],
      transparent: null,
    });
    const status: AgentStatus = {
      node: 'client',
      datacenter: 'dc1',
      startedAt: '2026-11-28T05:00:00.000Z',
      waitingFor: [],
      trustBundle: { known: true, live: true, lastError: null },
      intentions: { known: true, live: true, lastError: null, revision: 4 },
      instances: [
        instance('api-1', { mode: 'permissive', source: 'service-defaults' }),
        instance('web-1', { mode: 'strict', source: 'default' }),
      ],
      upstreams: [],
      problems: [],
    };
    const out = renderStatus(status, Date.parse('2026-11-28T06:00:00.000Z'));
    t.match(
      out,
      "api-1: mutual TLS permissive (by service-defaults): plain connections to its app's port reach the app without mTLS or intentions",
    );
    t.notMatch(out, /web-1: mutual TLS/, 'a strict instance is not singled out');
  },
);
