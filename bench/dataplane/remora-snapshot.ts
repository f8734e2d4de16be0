// The two static snapshots of a Remora pair, as the agent would send them: web's proxy (one
// upstream to api) and api's proxy (inbound to the app), with lib/pki certificates and an
// intentions snapshot that allows web → api and denies everything else.
import type { IntentionsSnapshot } from '../../lib/intentions/types.ts';
import type { Protocol, ProxySnapshot, ResilienceConfig } from '../../lib/proxy-api/types.ts';
import { DEFAULT_RESILIENCE, defaultLoadBalancer } from '../../lib/proxy-api/index.ts';
import type { BenchPki, Leaf } from '../lib/certs.ts';

export const BENCH_INTENTIONS: IntentionsSnapshot = {
  revision: 1,
  defaultPolicy: 'deny',
  auditMode: false,
  intentions: [{ source: 'web', destination: 'api', action: 'allow' }],
};

/** What the agent puts in a snapshot when the service definition sets nothing. */
export const BENCH_RESILIENCE: ResilienceConfig = DEFAULT_RESILIENCE;

export interface PairPorts {
  /** web's outbound listener (what the load generator hits). */
  clientUpstreamPort: number;
  /** web's own inbound mTLS listener (unused by the bench, but every proxy has one). */
  clientInboundPort: number;
  /** api's inbound mTLS listener. */
  serverInboundPort: number;
  /** the app behind api's proxy. */
  appPort: number;
  /** the app behind web's proxy (never called). */
  clientAppPort: number;
}

function instance(pki: BenchPki, service: string, leaf: Leaf): ProxySnapshot['instance'] {
  return {
    id: `${service}-1`,
    service,
    datacenter: 'dc1',
    node: 'bench',
    trustDomain: pki.trustDomain,
    spiffeId: leaf.spiffeId,
  };
}

export function buildPairSnapshots(
  pki: BenchPki,
  protocol: Protocol,
  ports: PairPorts,
): { client: ProxySnapshot; server: ProxySnapshot } {
  const { web, api } = pki.remora;
  const tracing = { endpoint: '', sampleRatio: 0, headers: {} };
  const client: ProxySnapshot = {
    version: 1,
    instance: instance(pki, 'web', web),
    inbound: {
      bindAddress: '127.0.0.1',
      bindPort: ports.clientInboundPort,
      localAppAddress: '127.0.0.1',
      localAppPort: ports.clientAppPort,
      protocol,
    },
    upstreams: [
      {
        destinationName: 'api',
        destinationSpiffeId: api.spiffeId,
        localBindAddress: '127.0.0.1',
        localBindPort: ports.clientUpstreamPort,
        protocol,
        loadBalancer: defaultLoadBalancer(protocol),
        resilience: BENCH_RESILIENCE,
        endpoints: [
          {
            id: 'api-1',
            address: '127.0.0.1',
            port: ports.serverInboundPort,
            weight: 1,
            node: 'bench',
          },
        ],
      },
    ],
    tls: { certPem: web.certPem, keyPem: web.keyPem, rootsPem: [pki.caPem] },
    intentions: BENCH_INTENTIONS,
    tracing,
  };
  const server: ProxySnapshot = {
    version: 1,
    instance: instance(pki, 'api', api),
    inbound: {
      bindAddress: '127.0.0.1',
      bindPort: ports.serverInboundPort,
      localAppAddress: '127.0.0.1',
      localAppPort: ports.appPort,
      protocol,
    },
    upstreams: [],
    tls: { certPem: api.certPem, keyPem: api.keyPem, rootsPem: [pki.caPem] },
    intentions: BENCH_INTENTIONS,
    tracing,
  };
  return { client, server };
}
