// The protocol a service's proxies serve, resolved from Consul the way agents resolve it
// (docs/agent.md, "Protocols"): the sidecar registration's `proxy.config.protocol`, else the
// service's `service-defaults`, else `proxy-defaults` (`global`), else tcp. Control uses it to warn
// about L7 intentions on a tcp service; `remora explain` to tell what a connection will meet.
import { PROTOCOLS, type Protocol } from '../proxy-api/index.ts';

export type ProtocolSource = 'registration' | 'service-defaults' | 'proxy-defaults' | 'default';

export interface ServedProtocol {
  protocol: Protocol;
  /** Where it came from: the sidecar's registration, a config entry, or the tcp default. */
  source: ProtocolSource;
}

/** The fields of a config entry this reads. */
interface EntryFields {
  Name: string;
  Protocol?: unknown;
  Config?: Record<string, unknown> | null;
}

/** The reads this needs; `lib/consul`'s client has them, and so can a fake. */
export interface ProtocolLookup {
  catalog: {
    service(
      name: string,
    ): Promise<{ ServiceProxy?: { Config?: Record<string, unknown> | null } | null }[]>;
  };
  /** Absent: config entries are not consulted (a registration without a protocol means tcp). */
  config?: { list(kind: string): Promise<{ entries: EntryFields[] }> };
}

/** A protocol as Consul stores it (any case), or null when it is not one Remora's proxies speak. */
export function knownProtocol(v: unknown): Protocol | null {
  if (typeof v !== 'string') return null;
  const p = v.toLowerCase();
  return (PROTOCOLS as readonly string[]).includes(p) ? (p as Protocol) : null;
}

/**
 * The protocol `service` serves, or null when no sidecar of it is registered (nothing serves it
 * yet). Rejects when Consul cannot be read.
 */
export async function servedProtocol(
  consul: ProtocolLookup,
  service: string,
): Promise<ServedProtocol | null> {
  const sidecars = await consul.catalog.service(`${service}-sidecar-proxy`);
  if (sidecars.length === 0) return null;
  const given = knownProtocol(sidecars[0]!.ServiceProxy?.Config?.['protocol']);
  if (given) return { protocol: given, source: 'registration' };
  if (!consul.config) return { protocol: 'tcp', source: 'default' };
  const [sd, pd] = await Promise.all([
    consul.config.list('service-defaults'),
    consul.config.list('proxy-defaults'),
  ]);
  const fromService = knownProtocol(sd.entries.find((e) => e.Name === service)?.Protocol);
  if (fromService) return { protocol: fromService, source: 'service-defaults' };
  const fromProxy = knownProtocol(
    pd.entries.find((e) => e.Name === 'global')?.Config?.['protocol'],
  );
  if (fromProxy) return { protocol: fromProxy, source: 'proxy-defaults' };
  return { protocol: 'tcp', source: 'default' };
}
