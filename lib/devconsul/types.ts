/** Wire shapes of the embedded catalog, in Consul's PascalCase (see api/agent.go, api/health.go). */

export type HealthStatus = 'passing' | 'warning' | 'critical';

export interface WireUpstream {
  DestinationType: string;
  DestinationNamespace?: string;
  DestinationPartition?: string;
  DestinationPeer?: string;
  DestinationName: string;
  Datacenter: string;
  LocalBindAddress?: string;
  LocalBindPort?: number;
  LocalBindSocketPath?: string;
  LocalBindSocketMode?: string;
  Config?: Record<string, unknown>;
  MeshGateway: Record<string, unknown>;
}

export interface WireProxy {
  DestinationServiceName?: string;
  DestinationServiceID?: string;
  LocalServiceAddress?: string;
  LocalServicePort?: number;
  LocalServiceSocketPath?: string;
  Mode: string;
  Config?: Record<string, unknown>;
  Upstreams?: WireUpstream[];
  MeshGateway: Record<string, unknown>;
  Expose: Record<string, unknown>;
  TransparentProxy?: Record<string, unknown>;
  AccessLogs?: Record<string, unknown>;
}

/** One service instance as the catalog stores it (structs.NodeService). */
export interface ServiceRecord {
  Kind: string;
  ID: string;
  Service: string;
  Tags: string[];
  Address: string;
  TaggedAddresses: Record<string, { Address: string; Port: number }>;
  Meta: Record<string, string>;
  Port: number;
  SocketPath: string;
  Weights: { Passing: number; Warning: number };
  EnableTagOverride: boolean;
  Proxy: WireProxy;
  Connect: { Native?: boolean };
  Locality?: { Region?: string; Zone?: string };
  CreateIndex: number;
  ModifyIndex: number;
  /** ID of the service whose `connect.sidecar_service` created this one (local lineage). */
  sidecarOf?: string;
  /** Whether the sidecar port came from the automatic range (kept on re-registration). */
  autoPort?: boolean;
}

/** A check definition after decoding (structs.CheckType), durations in nanoseconds. */
export interface CheckTypeDef {
  CheckID?: string;
  Name?: string;
  Status?: string;
  Notes?: string;
  ScriptArgs?: string[];
  HTTP?: string;
  H2PING?: string;
  Header?: Record<string, string[]>;
  Method?: string;
  Body?: string;
  DisableRedirects?: boolean;
  TCP?: string;
  UDP?: string;
  GRPC?: string;
  OSService?: string;
  Interval?: number;
  AliasNode?: string;
  AliasService?: string;
  DockerContainerID?: string;
  TLSServerName?: string;
  TLSSkipVerify?: boolean;
  Timeout?: number;
  TTL?: number;
  DeregisterCriticalServiceAfter?: number;
  OutputMaxSize?: number;
  SuccessBeforePassing?: number;
  FailuresBeforeWarning?: number;
  FailuresBeforeCritical?: number;
}

export interface CheckRecord {
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
  Interval: string;
  Timeout: string;
  ExposedPort: number;
  Definition: Record<string, unknown>;
  CreateIndex: number;
  ModifyIndex: number;
}

export interface KvEntry {
  LockIndex: number;
  Key: string;
  Flags: number;
  Value: string | null;
  CreateIndex: number;
  ModifyIndex: number;
}
