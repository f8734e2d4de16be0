// An agent running an ingress gateway, with fakes for Consul, control and the proxy: its
// registration, and the snapshot built from its ingress-gateway entry (listeners, upstreams
// without listeners, the gateway's identity), following entry and catalog changes.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { gatewayCheckId, registrationFor } from '../../agent/agent.ts';
import type { ConnectEntry, ConsulPort } from '../../agent/ports.ts';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import { decodeDefinitionFile } from '../../agent/definitions.ts';
import { waitFor } from '../../lib/util/index.ts';
import { createFakeConfigEntries, startHost } from './fakes.ts';

t.test(
  'a gateway is registered as Consul holds one: kind, no sidecar, its own check',
  async (t) => {
    const def = decodeDefinitionFile(
      JSON.stringify({
        service: { kind: 'ingress-gateway', name: 'ingress', port: 8443, meta: { team: 'edge' } },
      }),
      'gw.json',
    ).services[0]!;
    const body = registrationFor(def, {
      node: 'n1',
      sidecarPort: 8443,
      advertiseAddress: '10.0.0.5',
      checkTtlMs: 30_000,
      ready: false,
    });
    t.same(body, {
      kind: 'ingress-gateway',
      id: 'ingress',
      name: 'ingress',
      port: 8443,
      tags: [],
      meta: { team: 'edge', 'remora-node': 'n1' },
      address: '10.0.0.5',
      checks: [
        {
          CheckID: 'remora-ready:ingress',
          Name: 'Remora ingress gateway ready',
          TTL: '30s',
          Status: 'critical',
        },
      ],
    });
  },
);

function connectEntry(service: string, port: number, protocol: string): ConnectEntry {
  return {
    Node: { Node: 'n2', Address: '10.0.0.9' },
    Service: {
      ID: `${service}-1-sidecar-proxy`,
      Service: `${service}-sidecar-proxy`,
      Address: '10.0.0.9',
      Port: port,
      Proxy: {
        DestinationServiceID: `${service}-1`,
        DestinationServiceName: service,
        Config: { protocol },
      },
    },
  };
}

t.test('the gateway’s snapshot follows its entry and the catalog', async (t) => {
  const events: string[] = [];
  const registered: Record<string, unknown>[] = [];
  const catalog: Record<string, [number, string]> = {
    api: [21001, 'http'],
    web: [21002, 'http'],
    db: [21003, 'tcp'],
  };
  const entries = createFakeConfigEntries({
    // `*` picks services by these, as Consul's wildcard does
    'service-defaults': ['api', 'web'].map((Name) => ({
      Kind: 'service-defaults',
      Name,
      Protocol: 'http',
    })),
    'ingress-gateway': [
      {
        Kind: 'ingress-gateway',
        Name: 'ingress',
        Listeners: [
          {
            Port: 8080,
            Protocol: 'http',
            Services: [{ Name: 'api', Hosts: ['api.example.com'], MaxConcurrentRequests: 9 }],
          },
          { Port: 9000, Protocol: 'tcp', Services: [{ Name: 'db' }] },
          { Port: 9001, Protocol: 'tcp', Services: [{ Name: 'api' }] },
        ],
      } as never,
    ],
  });
  let services: ((names: string[]) => void) | null = null;
  const consul: ConsulPort = {
    async registerService(def) {
      registered.push(def);
    },
    async deregisterService() {},
    async updateTtl(id, status) {
      events.push(`ttl ${id} ${status}`);
    },
    watchConnect(service, h) {
      const c = catalog[service];
      queueMicrotask(() => h.onChange(c ? [connectEntry(service, c[0], c[1])] : []));
      return { stop: () => undefined };
    },
    watchServices(h) {
      services = (names) => h.onChange(names);
      queueMicrotask(() => h.onChange(['api', 'db', 'ingress']));
      return { stop: () => undefined };
    },
    watchConfigEntries: entries.watchConfigEntries,
  };
  let last: ProxySnapshot | null = null;
  const { agent } = await startHost(
    t,
    consul,
    [],
    { 'gw.json': { service: { kind: 'ingress-gateway', name: 'ingress', port: 8443 } } },
    { proxyBindAddress: '127.0.0.1' },
    (s) => (last = s),
  );
  const snap = (): ProxySnapshot => last!;
  await waitFor('a snapshot', () => last !== null);
  t.equal(snap().instance.service, 'ingress');
  t.match(snap().instance.spiffeId, /\/svc\/ingress$/, 'the gateway’s own identity');
  t.same(
    snap().upstreams.map((u) => [u.destinationName, u.protocol, u.listener, u.endpoints.length]),
    [
      ['api', 'http', false, 1],
      ['db', 'tcp', false, 1],
    ],
    'each service an upstream without a listener of its own, with its endpoints',
  );
  t.equal(snap().upstreams[0]!.resilience.circuitBreaker.maxRequests, 9, 'the entry’s limit');
  t.match(snap().upstreams[0]!.destinationSpiffeId, /\/svc\/api$/);
  t.same(snap().ingress, {
    listeners: [
      {
        bindAddress: '127.0.0.1',
        bindPort: 8080,
        protocol: 'http',
        services: [{ upstream: 'api', hosts: ['api.example.com'] }],
      },
      {
        bindAddress: '127.0.0.1',
        bindPort: 9000,
        protocol: 'tcp',
        services: [{ upstream: 'db', hosts: [] }],
      },
    ],
  });
  await waitFor('the gateway check passing', () =>
    events.includes(`ttl ${gatewayCheckId('ingress')} passing`),
  );
  t.equal(registered[0]?.kind, 'ingress-gateway');
  const problems = agent
    .status()
    .problems.filter((p) => p.code === 'REMORA_E_AGENT_INGRESS_NOT_APPLIED');
  t.equal(problems.length, 1, 'api on a tcp listener is reported');
  t.match(problems[0]?.message, /service api is http .* the listener tcp; api is left out/);
  const gw = agent.status().instances[0]!;
  t.equal(gw.kind, 'ingress-gateway');
  t.same(
    gw.upstreams.map((u) => u.destination),
    ['api', 'db'],
  );

  // the entry changes: a wildcard listener; the catalog then lists web
  entries.set('ingress-gateway', [
    {
      Kind: 'ingress-gateway',
      Name: 'ingress',
      Listeners: [{ Port: 8081, Protocol: 'http', Services: [{ Name: '*' }] }],
    } as never,
  ]);
  await waitFor('the wildcard listener', () => snap().ingress?.listeners[0]?.bindPort === 8081);
  t.same(snap().ingress?.listeners[0]?.services, [{ upstream: 'api', hosts: ['api.ingress.*'] }]);
  t.same(
    snap().upstreams.map((u) => u.destinationName),
    ['api'],
    'db (tcp) is not reached by an http wildcard, and its listener is gone',
  );
  services!(['api', 'db', 'ingress', 'web', 'web-sidecar-proxy']);
  await waitFor('web reached by the wildcard', () => snap().upstreams.length === 2);
  t.same(
    snap().ingress?.listeners[0]?.services.map((s) => s.upstream),
    ['api', 'web'],
  );
  t.same(
    agent.status().problems.filter((p) => p.code === 'REMORA_E_AGENT_INGRESS_NOT_APPLIED'),
    [],
  );

  // TLS: the listener carries its parameters, the certificate the entry's names
  entries.set('ingress-gateway', [
    {
      Kind: 'ingress-gateway',
      Name: 'ingress',
      TLS: { Enabled: true, TLSMinVersion: 'TLSv1_2' },
      Listeners: [
        {
          Port: 8443,
          Protocol: 'http',
          Services: [{ Name: 'api', Hosts: ['api.example.com'] }],
        },
        {
          Port: 8444,
          Protocol: 'http',
          TLS: { CipherSuites: ['TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'] },
          Services: [{ Name: 'web' }],
        },
      ],
    } as never,
  ]);
  const names = ['*.ingress.consul', '*.ingress.dc1.consul', 'api.example.com'];
  const sans = (pem: string) => new X509Certificate(pem).subjectAltName ?? '';
  await waitFor('the certificate with the entry’s names', () =>
    names.every((n) => sans(snap().tls.certPem).includes(`DNS:${n}`)),
  );
  t.match(sans(snap().tls.certPem), /^URI:spiffe:\/\/.*\/svc\/ingress, DNS:/, 'and its identity');
  t.same(
    snap().ingress?.listeners.map((l) => [l.bindPort, l.tls]),
    [[8443, { minVersion: 'TLSv1_2' }]],
    'the listener whose suites cannot serve an RSA certificate is left out',
  );
  t.match(
    agent.status().problems.find((p) => p.code === 'REMORA_E_AGENT_INGRESS_TLS_INVALID'),
    {
      field: 'ingress-gateway ingress Listeners[1].TLS.CipherSuites',
      message: /only ECDSA suites.*port 8444 is left out/,
    },
  );
  t.match(agent.status().instances[0]?.listeners, [{ port: 8443, tls: true }]);

  // the entry is deleted: no listener, said
  entries.set('ingress-gateway', []);
  await waitFor('no listener', () => snap().ingress?.listeners.length === 0);
  t.match(
    agent.status().problems.find((p) => p.code === 'REMORA_E_AGENT_INGRESS_NOT_APPLIED')?.message,
    /has no ingress-gateway config entry named ingress/,
  );
});
