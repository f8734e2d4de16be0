// The public metrics listener (Consul's `envoy_prometheus_bind_addr`): `GET /metrics` in plain
// HTTP on an address a Prometheus server on another host reaches. Nothing else of the admin API
// (config, certificates, clusters, readiness) is served there. It is bound outside the snapshot's
// all-or-nothing switch: a port another process holds must not keep a sidecar from its
// certificates and endpoints, so a failed bind is logged and tried again.
import type { AddressInfo, Server } from 'node:net';
import { RemoraError } from '../../lib/errors/index.ts';
import { logError, type Logger } from '../../lib/log/index.ts';
import type { MetricsListener } from '../../lib/proxy-api/index.ts';
import type { ProxyResponse } from '../stages/types.ts';
import type { ProxyMetrics } from './metrics.ts';
import { answer, createPlainServer, metricsAnswer } from './server.ts';
import { bindShareable } from '../listen.ts';

/** How long a listener that could not bind waits before trying again. */
export const METRICS_RETRY_MS = 10_000;

export interface MetricsListenerSlot {
  /**
   * Binds, moves or closes the listener to match the snapshot's `metrics` (absent: none); with
   * `join`, a port the instance's previous proxy holds is shared (proxy/listen.ts).
   */
  sync(want: MetricsListener | undefined, join?: boolean): void;
  address(): AddressInfo | null;
  close(): void;
}

export function createMetricsListenerSlot(o: {
  metrics: ProxyMetrics;
  logger: Logger;
  retryMs?: number;
}): MetricsListenerSlot {
  const retryMs = o.retryMs ?? METRICS_RETRY_MS;
  let key: string | null = null;
  let bound: { server: Server; destroySockets(): void } | null = null;
  let retry: NodeJS.Timeout | null = null;
  // the last failure logged, so a port that stays taken is said once, not every retry
  let failed: string | null = null;

  async function handle(path: string): Promise<ProxyResponse> {
    if (path === '/metrics') return metricsAnswer(o.metrics);
    return answer(404, 'text/plain', 'not found: this port serves /metrics only\n');
  }

  function stop(): void {
    if (retry !== null) clearTimeout(retry);
    retry = null;
    if (bound !== null) {
      bound.destroySockets();
      bound.server.close();
    }
    bound = null;
  }

  function bind(want: MetricsListener, wantKey: string, join: boolean): void {
    const plain = createPlainServer(handle);
    bindShareable(plain.server, want.bindAddress, want.bindPort, join).then(
      () => {
        if (key !== wantKey) {
          plain.server.close();
          return;
        }
        bound = plain;
        failed = null;
        o.logger.info(
          { address: want.bindAddress, port: (plain.server.address() as AddressInfo).port },
          'serving /metrics for scrapers',
        );
      },
      (err: NodeJS.ErrnoException) => {
        if (key !== wantKey) return;
        const why = err.code ?? err.message;
        if (failed !== `${wantKey} ${why}`) {
          failed = `${wantKey} ${why}`;
          logError(
            o.logger,
            new RemoraError(
              'REMORA_E_PROXY_METRICS_LISTEN_FAILED',
              `cannot listen on ${wantKey} for /metrics (envoy_prometheus_bind_addr): ${why}; the sidecar serves on without it and tries again every ${retryMs / 1000} s. Free the port, or set another envoy_prometheus_bind_addr`,
              { address: want.bindAddress, port: want.bindPort, reason: why },
            ),
          );
        }
        retry = setTimeout(() => {
          retry = null;
          if (key === wantKey && bound === null) bind(want, wantKey, false);
        }, retryMs);
        retry.unref();
      },
    );
  }

  return {
    sync(want, join = false) {
      const wantKey = want ? `${want.bindAddress}:${want.bindPort}` : null;
      if (wantKey === key) return;
      stop();
      key = wantKey;
      failed = null;
      if (want && wantKey) bind(want, wantKey, join);
    },
    address: () => (bound?.server.address() as AddressInfo | null) ?? null,
    close() {
      key = null;
      stop();
    },
  };
}
