export {
  createConsulClient,
  consulClientOptions,
  normalizeEntry,
  normalizeService,
  DEFAULT_CONSUL_TIMEOUT_MS,
  DEFAULT_CONSUL_MAX_RESPONSE_BYTES,
  type ConsulClient,
  type ConsulClientOptions,
  type BlockingOptions,
} from './client.ts';
export {
  watchConnect,
  watchServices,
  watchConfigEntries,
  DEFAULT_WATCH_WAIT_SECONDS,
  WATCH_BACKOFF_BASE_MS,
  WATCH_BACKOFF_MAX_MS,
  WATCH_RATE_BURST,
  WATCH_RATE_REFILL_MS,
  type ConnectWatch,
  type WatchConnectOptions,
  type ServicesWatch,
  type WatchServicesOptions,
  type ConfigEntriesWatch,
  type WatchConfigEntriesOptions,
} from './watch.ts';
export {
  checkFilterSyntax,
  compileFilter,
  FilterError,
  HEALTH_ENTRY_SCHEMA,
  type FieldType,
  type Fields,
  type FilterSchema,
} from './filter.ts';
export {
  servedProtocol,
  type ProtocolLookup,
  type ProtocolSource,
  type ServedProtocol,
} from './protocol.ts';
export { ingressDnsSans, ingressTlsEnabled, isSanDnsName } from './ingress-sans.ts';
export type {
  AgentCheck,
  AgentService,
  CatalogNode,
  CatalogService,
  CheckDefinition,
  ConfigEntry,
  HealthCheck,
  HealthStatus,
  KvPair,
  ProxyConfig,
  ServiceDefinition,
  ServiceEntry,
  Upstream,
  Weights,
} from './types.ts';
