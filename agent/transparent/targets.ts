// The addresses a client would dial for a mesh service, read from the same healthy connect
// entries discovery already watches: each sidecar's address (or its node's, when the sidecar has
// none — what Consul DNS answers too) with the port its sidecar forwards to (Consul's
// `Proxy.LocalServicePort`, which defaults to the service's port). Loopback addresses are left
// out: they name no other host, and a rule for 127.0.0.1:<port> would capture local calls.
import type { ConnectEntry } from '../ports.ts';

export interface ServiceTarget {
  address: string;
  port: number;
}

export function targetsFromEntries(entries: readonly ConnectEntry[]): ServiceTarget[] {
  const out = new Map<string, ServiceTarget>();
  for (const e of entries) {
    const port = e.Service.Proxy?.LocalServicePort;
    if (typeof port !== 'number' || port < 1 || port > 65535) continue;
    const address = e.Service.Address || e.Node.Address;
    if (!address || address.startsWith('127.') || address === '::1') continue;
    out.set(`${address}:${port}`, { address, port });
  }
  return [...out.values()].sort((a, b) =>
    a.address !== b.address ? (a.address < b.address ? -1 : 1) : a.port - b.port,
  );
}
