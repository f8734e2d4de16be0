// Test fixture: a mesh CA and workload leaves made with lib/pki (real RSA keys, real X.509).
import {
  createCsr,
  createRootCa,
  generateKeyPair,
  issueLeaf,
  type RootCa,
} from '../../lib/pki/index.ts';
import { createTrustDomain, formatSpiffeId } from '../../lib/identity/index.ts';
import type { ProxySnapshot, UpstreamConfig } from '../../lib/proxy-api/index.ts';
import { DEFAULT_RESILIENCE } from '../../lib/proxy-api/index.ts';
import type { IntentionsSnapshot } from '../../lib/intentions/types.ts';

export interface MeshLeaf {
  spiffeId: string;
  service: string;
  certPem: string;
  keyPem: string;
  notAfter: Date;
}

export interface MeshCerts {
  trustDomain: string;
  datacenter: string;
  ca: RootCa;
  spiffeIdFor(service: string): string;
  /** A leaf for `service` signed by this CA (or another one), valid from `now` for `ttlMs`. */
  leaf(
    service: string,
    options?: { ttlMs?: number; now?: number; ca?: RootCa; dnsNames?: string[] },
  ): MeshLeaf;
  /** A second, unrelated CA for the same trust domain (a "foreign" CA). */
  otherCa(): RootCa;
  /** One leaf per service, made on first use and reused (RSA key generation is slow). */
  cachedLeaf(service: string): MeshLeaf;
}

export function createMeshCerts(options: { datacenter?: string; now?: number } = {}): MeshCerts {
  const now = options.now ?? Date.now();
  const datacenter = options.datacenter ?? 'dc1';
  const trustDomain = createTrustDomain();
  const ca = createRootCa({ trustDomain, ttlMs: 365 * 86400_000, now });
  const spiffeIdFor = (service: string) => formatSpiffeId({ trustDomain, datacenter, service });
  const cache = new Map<string, MeshLeaf>();
  const mesh: MeshCerts = {
    trustDomain,
    datacenter,
    ca,
    spiffeIdFor,
    leaf(service, o = {}) {
      const spiffeId = spiffeIdFor(service);
      const keys = generateKeyPair();
      const csrPem = createCsr({ ...keys, spiffeId });
      const issued = issueLeaf({
        ca: o.ca ?? ca,
        csrPem,
        spiffeId,
        ...(o.dnsNames ? { dnsNames: o.dnsNames } : {}),
        ttlMs: o.ttlMs ?? 3600_000,
        now: o.now ?? Date.now(),
      });
      return {
        spiffeId,
        service,
        certPem: issued.certPem,
        keyPem: keys.keyPem,
        notAfter: issued.notAfter,
      };
    },
    otherCa: () => createRootCa({ trustDomain, ttlMs: 365 * 86400_000, now }),
    cachedLeaf(service) {
      let l = cache.get(service);
      if (l === undefined) {
        l = mesh.leaf(service);
        cache.set(service, l);
      }
      return l;
    },
  };
  return mesh;
}

/** A valid snapshot for `leaf`'s service; override any part. */
export function makeSnapshot(
  mesh: MeshCerts,
  leaf: MeshLeaf,
  o: {
    version?: number;
    bindPort?: number;
    appPort?: number;
    protocol?: ProxySnapshot['inbound']['protocol'];
    upstreams?: UpstreamConfig[];
    intentions?: Partial<IntentionsSnapshot>;
    roots?: string[];
  } = {},
): ProxySnapshot {
  return {
    version: o.version ?? 1,
    instance: {
      id: `${leaf.service}-1`,
      service: leaf.service,
      datacenter: mesh.datacenter,
      node: 'node-1',
      trustDomain: mesh.trustDomain,
      spiffeId: leaf.spiffeId,
    },
    inbound: {
      bindAddress: '127.0.0.1',
      bindPort: o.bindPort ?? 0,
      localAppAddress: '127.0.0.1',
      localAppPort: o.appPort ?? 9,
      protocol: o.protocol ?? 'http',
    },
    upstreams: o.upstreams ?? [],
    tls: { certPem: leaf.certPem, keyPem: leaf.keyPem, rootsPem: o.roots ?? [mesh.ca.certPem] },
    intentions: {
      revision: 1,
      defaultPolicy: 'allow',
      auditMode: false,
      intentions: [],
      ...o.intentions,
    },
    tracing: { endpoint: '', sampleRatio: 1, headers: {} },
  };
}

/** An upstream entry pointing at sidecars listening on `ports`. */
export function makeUpstream(
  mesh: MeshCerts,
  destination: string,
  ports: number[],
  o: Partial<UpstreamConfig> = {},
): UpstreamConfig {
  return {
    destinationName: destination,
    destinationSpiffeId: mesh.spiffeIdFor(destination),
    localBindAddress: '127.0.0.1',
    localBindPort: 0,
    protocol: 'http',
    loadBalancer: 'peak_ewma',
    resilience: structuredClone(DEFAULT_RESILIENCE),
    endpoints: ports.map((port, i) => ({
      id: `${destination}-${i + 1}`,
      address: '127.0.0.1',
      port,
      weight: 1,
      node: `node-${i + 1}`,
    })),
    ...o,
  };
}
