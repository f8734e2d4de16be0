/**
 * Consul's response shapes, in its own PascalCase (api/agent.go, api/health.go,
 * api/catalog.go). The client normalises JSON nulls so that `Tags` is always an array, `Meta`
 * and `Proxy.Config` always objects and `Proxy.Upstreams` always an array.
 */

export type HealthStatus = 'passing' | 'warning' | 'critical';

/**
 * A service definition in Consul's own format, as the agent endpoint accepts it: snake_case
 * (`connect.sidecar_service.proxy.upstreams[].destination_name`) or PascalCase keys. It is sent
 * as given; Consul (or the embedded catalog) validates it.
 */
export interface ServiceDefinition {
  id?: string;
  name?: string;
  kind?: string;
  tags?: string[];
  address?: string;
  port?: number;
  meta?: Record<string, string>;
  check?: CheckDefinition;
  checks?: CheckDefinition[];
  connect?: {
    native?: boolean;
    sidecar_service?: ServiceDefinition;
  };
  proxy?: {
    destination_service_name?: string;
    destination_service_id?: string;
    local_service_address?: string;
    local_service_port?: number;
    config?: Record<string, unknown>;
    upstreams?: Array<{
      destination_name: string;
      destination_type?: string;
      datacenter?: string;
      local_bind_address?: string;
      local_bind_port?: number;
      config?: Record<string, unknown>;
    }>;
  };
  weights?: { passing?: number; warning?: number };
  enable_tag_override?: boolean;
  /** PascalCase keys (ID, Name, Connect.SidecarService, ...) are accepted as well. */
  [key: string]: unknown;
}

export interface CheckDefinition {
  /** Consul has no snake alias for these two: `check_id`/`alias_service` are rejected as unknown. */
  check_id?: never;
  CheckID?: string;
  name?: string;
  ttl?: string;
  http?: string;
  tcp?: string;
  interval?: string;
  timeout?: string;
  status?: HealthStatus;
  notes?: string;
  deregister_critical_service_after?: string;
  alias_service?: never;
  AliasService?: string;
  [key: string]: unknown;
}

export interface Upstream {
  DestinationType?: string;
  DestinationName: string;
  Datacenter?: string;
  LocalBindAddress?: string;
  LocalBindPort?: number;
  Config: Record<string, unknown>;
  MeshGateway?: Record<string, unknown>;
}

export interface ProxyConfig {
  DestinationServiceName?: string;
  DestinationServiceID?: string;
  LocalServiceAddress?: string;
  LocalServicePort?: number;
  Mode?: string;
  Config: Record<string, unknown>;
  Upstreams: Upstream[];
  MeshGateway?: Record<string, unknown>;
  Expose?: Record<string, unknown>;
}

export interface Weights {
  Passing: number;
  Warning: number;
}

/** A service as `/v1/agent/services` and the `Service` of a health entry show it. */
export interface AgentService {
  Kind?: string;
  ID: string;
  Service: string;
  Tags: string[];
  Meta: Record<string, string>;
  Port: number;
  Address: string;
  TaggedAddresses?: Record<string, { Address: string; Port: number }>;
  Weights: Weights;
  EnableTagOverride: boolean;
  Proxy?: ProxyConfig;
  Connect?: { Native?: boolean };
  Datacenter?: string;
  ContentHash?: string;
  CreateIndex?: number;
  ModifyIndex?: number;
}

export interface AgentCheck {
  Node: string;
  CheckID: string;
  Name: string;
  Status: HealthStatus;
  Notes: string;
  Output: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[];
  Type: string;
  Interval?: string;
  Timeout?: string;
  Definition?: Record<string, unknown>;
  CreateIndex?: number;
  ModifyIndex?: number;
}

export type HealthCheck = AgentCheck;

export interface CatalogNode {
  ID: string;
  Node: string;
  Address: string;
  Datacenter: string;
  TaggedAddresses: Record<string, string>;
  Meta: Record<string, string>;
  CreateIndex?: number;
  ModifyIndex?: number;
}

/** One entry of `/v1/health/service/:name` or `/v1/health/connect/:name`. */
export interface ServiceEntry {
  Node: CatalogNode;
  Service: AgentService;
  Checks: HealthCheck[];
}

/** One entry of `/v1/catalog/service/:name`. */
export interface CatalogService {
  ID: string;
  Node: string;
  Address: string;
  Datacenter: string;
  TaggedAddresses: Record<string, string>;
  NodeMeta: Record<string, string>;
  ServiceKind: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[];
  ServiceAddress: string;
  ServiceWeights: Weights;
  ServiceMeta: Record<string, string>;
  ServicePort: number;
  ServiceEnableTagOverride: boolean;
  ServiceProxy?: ProxyConfig;
  ServiceConnect?: { Native?: boolean };
  CreateIndex: number;
  ModifyIndex: number;
}

export interface KvPair {
  key: string;
  value: string;
  modifyIndex: number;
}

/**
 * A configuration entry (`/v1/config`). Remora reads `Protocol` of service-defaults and
 * `Config.protocol` of proxy-defaults; other fields pass through.
 */
export interface ConfigEntry {
  Kind: string;
  Name: string;
  Protocol?: string;
  Config?: Record<string, unknown>;
  Meta?: Record<string, string>;
  CreateIndex?: number;
  ModifyIndex?: number;
  [field: string]: unknown;
}
