// The config entries of one kind of gateway (`ingress-gateway`, `terminating-gateway`;
// docs/gateways.md), watched in Consul while the agent runs a gateway of that kind.
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Instance } from './instance.ts';
import type { ConsulPort } from './ports.ts';

export interface GatewayEntriesContext {
  consul: Pick<ConsulPort, 'watchConfigEntries'>;
  logger: Logger;
  instances: ReadonlyMap<string, Instance>;
  /** The gateways' `kind` (their definitions' and their entries'). */
  kind: string;
  /** What the gateways keep while Consul does not answer ("listeners", "services"). */
  keeps: string;
  isStopped(): boolean;
  /** The entries changed, or are known for the first time. */
  onChange(): void;
}

export interface GatewayEntries {
  /** The entries by name; null until Consul answered (or failed) once. */
  current(): Map<string, Record<string, unknown>> | null;
  /** The watch runs while the agent runs a gateway of the kind (its entries are forgotten then). */
  sync(): void;
  /** Stops the watch (the agent stops). */
  stop(): void;
}

export function watchGatewayEntries(o: GatewayEntriesContext): GatewayEntries {
  const { consul, logger, instances, kind } = o;
  let entries: Map<string, Record<string, unknown>> | null = null;
  let watch: { stop(): void } | null = null;
  let errors = 0;

  function sync(): void {
    const needed =
      !o.isStopped() && [...instances.values()].some((i) => !i.stopping && i.def.kind === kind);
    if (needed && !watch) {
      watch = consul.watchConfigEntries(kind, {
        onChange(next) {
          if (o.isStopped()) return;
          if (errors > 0) logger.info({ kind }, `Consul answers again for ${kind}`);
          errors = 0;
          entries = new Map(next.map((e) => [e.Name, e as unknown as Record<string, unknown>]));
          o.onChange();
        },
        onError(err) {
          if (o.isStopped()) return;
          if (errors++ % 20 === 0)
            logError(
              logger,
              new RemoraError(
                'REMORA_E_AGENT_CONSUL_UNAVAILABLE',
                `cannot watch Consul's ${kind} config entries: ${toRemoraError(err).message}; gateways keep the ${o.keeps} last applied`,
                { kind },
                { cause: err },
              ),
              undefined,
              'warn',
            );
          // a gateway that never heard of its entry starts without listeners (or linked
          // services) rather than never
          if (entries === null) {
            entries = new Map();
            o.onChange();
          }
        },
      });
    } else if (!needed && watch) {
      watch.stop();
      watch = null;
      entries = null;
    }
  }

  return {
    current: () => entries,
    sync,
    stop() {
      watch?.stop();
      watch = null;
    },
  };
}
