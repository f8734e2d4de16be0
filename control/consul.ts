// What control needs from Consul: KV with check-and-set and catalog reads. lib/consul's client
// satisfies this shape; unit tests pass a small in-memory fake.
import { RemoraError, hasCode } from '../lib/errors/index.ts';

export interface KvEntry {
  value: string;
  modifyIndex: number;
}

export interface ControlKv {
  get(key: string): Promise<KvEntry | undefined>;
  /** With `cas: 0` the write succeeds only if the key does not exist. False when CAS lost. */
  put(key: string, value: string, options?: { cas?: number }): Promise<boolean>;
}

/** One entry of `GET /v1/catalog/service/<name>` (Consul's field names). */
export interface CatalogServiceEntry {
  Node: string;
  ServiceID: string;
  ServiceName: string;
  ServiceMeta?: Record<string, string> | null;
  /**
   * `terminating-gateway`, `ingress-gateway`, `connect-proxy`; empty for a typical service (DNS
   * SANs are granted to ingress gateways only).
   */
  ServiceKind?: string;
  /** A sidecar's proxy settings; `Config.protocol` is the protocol it was registered with. */
  ServiceProxy?: { Config?: Record<string, unknown> | null } | null;
}

/** One entry of `GET /v1/config/<kind>`, the fields control reads. */
export interface ConfigEntry {
  Kind: string;
  Name: string;
  Protocol?: unknown;
  Config?: Record<string, unknown>;
  /** terminating-gateway: the services the gateway links (`Name`, possibly `*`). */
  Services?: unknown;
  /** Any other field of the entry (an ingress-gateway's `TLS`, `Listeners`). */
  [field: string]: unknown;
}

export interface ControlCatalog {
  service(name: string): Promise<CatalogServiceEntry[]>;
}

export interface ControlConsul {
  kv: ControlKv;
  catalog: ControlCatalog;
  /** Config entries, for the protocol of a service an L7 intention names (optional). */
  config?: { list(kind: string): Promise<{ entries: ConfigEntry[] }> };
}

/** Maps a Consul failure to REMORA_E_CONTROL_CONSUL_UNAVAILABLE (coded control errors pass). */
export function consulUnavailable(err: unknown, what: string): RemoraError {
  // control's own coded errors (conflicts, corrupt state) pass through unchanged
  if (
    hasCode(err, 'REMORA_E_CONTROL_CONSUL_UNAVAILABLE') ||
    hasCode(err, 'REMORA_E_CONTROL_KV_CONFLICT') ||
    hasCode(err, 'REMORA_E_CONTROL_STATE_CORRUPT')
  )
    return err;
  return new RemoraError(
    'REMORA_E_CONTROL_CONSUL_UNAVAILABLE',
    `cannot ${what}: ${(err as Error)?.message ?? String(err)}; check consul.address and that Consul is up, then retry`,
    { operation: what },
    { cause: err },
  );
}
