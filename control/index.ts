export {
  DEFAULT_REFRESH_INTERVAL_MS,
  MAX_RSA_BITS,
  MIN_RSA_BITS,
  NODE_META_KEY,
  createControl,
  type Control,
  type ControlConfig,
  type ControlTracing,
  type CreateControlOptions,
} from './control.ts';
export type {
  CatalogServiceEntry,
  ConfigEntry,
  ControlCatalog,
  ControlConsul,
  ControlKv,
  KvEntry,
} from './consul.ts';
export {
  createNodeToken,
  serviceMatchesGlobs,
  verifyNodeToken,
  type NodeTokenClaims,
} from './tokens.ts';
export {
  createCaState,
  rotateCaState,
  rootsMessage,
  trustedRoots,
  type CaState,
} from './ca-state.ts';
export type { ControlMetrics } from './metrics.ts';
