// What every part of the proxy gets from its owner: dependencies in, no globals.
import type { AccessLog } from './access-log.ts';
import type { Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import type { ProxySnapshot } from '../lib/proxy-api/index.ts';
import type { ProxyMetrics } from './admin/metrics.ts';
import type { HeadLimits } from './http/h1-parse.ts';
import type { TlsContexts } from './tls/identity.ts';
import type { Stage } from './stages/types.ts';

export interface HttpLimits extends HeadLimits {
  headerTimeoutMs: number;
  /** Keep-alive idle time of client connections on the proxy's listeners. */
  clientIdleTimeoutMs: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxHeadBytes: 16 * 1024,
  maxHeaderCount: 100,
  headerTimeoutMs: 10_000,
  clientIdleTimeoutMs: 120_000,
};

/** The applied configuration; replaced as a whole when a new snapshot is applied. */
export interface ActiveConfig {
  snapshot: ProxySnapshot;
  tls: TlsContexts;
}

export interface ProxyEnv {
  logger: Logger;
  clock: Clock;
  random: () => number;
  metrics: ProxyMetrics;
  limits: HttpLimits;
  active(): ActiveConfig;
  /** Tracing seam: a SERVER (inbound) or CLIENT (outbound) span stage; null when tracing is off. */
  tracingStage(kind: 'server' | 'client', peer: string): Stage | null;
  /** Access logs (off unless the snapshot asks for them). */
  accessLog: AccessLog;
}
