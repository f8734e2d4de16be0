export {
  createConsulClient,
  normalizeEntry,
  normalizeService,
  DEFAULT_CONSUL_TIMEOUT_MS,
  type ConsulClient,
  type ConsulClientOptions,
  type BlockingOptions,
} from './client.ts';
export {
  watchConnect,
  DEFAULT_WATCH_WAIT_SECONDS,
  WATCH_BACKOFF_BASE_MS,
  WATCH_BACKOFF_MAX_MS,
  WATCH_RATE_BURST,
  WATCH_RATE_REFILL_MS,
  type ConnectWatch,
  type WatchConnectOptions,
} from './watch.ts';
export type {
  AgentCheck,
  AgentService,
  CatalogNode,
  CatalogService,
  CheckDefinition,
  HealthCheck,
  HealthStatus,
  KvPair,
  ProxyConfig,
  ServiceDefinition,
  ServiceEntry,
  Upstream,
  Weights,
} from './types.ts';
