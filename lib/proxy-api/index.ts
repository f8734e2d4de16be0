export * from './types.ts';
export { CIPHER_SUITES, tlsOptions, tlsParamsProblem } from './mesh-tls.ts';
export type { MeshTlsConfig, TlsParams } from './mesh-tls.ts';
export {
  CONSUL_TLS_VERSIONS,
  INGRESS_CIPHER_SUITES,
  ingressTlsOptions,
  ingressTlsProblem,
  type IngressTlsKey,
  type IngressTlsParams,
} from './ingress-tls.ts';
export { encodeFrame, FrameDecoder, decodeAgentFrame, decodeProxyFrame } from './frames.ts';
export type { FrameDecoderOptions } from './frames.ts';
export {
  decodeProxySnapshot,
  PROTOCOLS,
  LOAD_BALANCER_POLICIES,
  ACCESS_LOG_TYPES,
  EXPOSE_PROTOCOLS,
  exposePathProblem,
  ingressHostProblem,
  hashCookieProblem,
  MAX_HASH_COOKIE_TTL_S,
  RATE_LIMIT_MAX,
  MAX_RATE_LIMIT_ROUTES,
} from './snapshot.ts';
export { attachFrameChannel } from './channel.ts';
export type { FrameChannel, FrameChannelOptions } from './channel.ts';
export {
  DEFAULT_RESILIENCE,
  DEFAULT_PROTOCOL,
  DEFAULT_LOCAL_CONNECT_TIMEOUT_MS,
  INBOUND_LIMITS,
  defaultLoadBalancer,
  PROXY_NODE_OPTIONS,
} from './defaults.ts';
export { compileRoute } from './routes.ts';
export {
  headerNameProblem,
  headerValueProblem,
  modifyH1Headers,
  modifyH2Headers,
} from './header-modifiers.ts';
