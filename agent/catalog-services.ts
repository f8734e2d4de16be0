// The catalog's service names (docs/transparent.md): the services upstreams derived from
// intentions and a gateway's `*` are taken from. Watched while an instance needs them, and
// cached so that a restarted agent knows them before Consul answers.
import { readFileSync } from 'node:fs';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import { EMPTY_AFTER_OUTAGE_GRACE_MS } from './discovery.ts';
import { writeFileAtomic, type DataPaths } from './files.ts';
import type { Instance } from './instance.ts';
import type { ConsulPort } from './ports.ts';

export interface CatalogServicesContext {
  consul: Pick<ConsulPort, 'watchServices'>;
  clock: Clock;
  logger: Logger;
  paths: Pick<DataPaths, 'cache'>;
  instances: ReadonlyMap<string, Instance>;
  isStopped(): boolean;
  /** Consul listed the services anew. */
  onChange(): void;
  /** Names that left the list are no candidates any more (their grace ran out). */
  onLeft(): void;
}

export interface CatalogServices {
  /** The catalog's service names (sorted): from Consul's watch, or the cache of an earlier run. */
  services(): string[] | null;
  /** Names that just left the list, still candidates for EMPTY_AFTER_OUTAGE_GRACE_MS. */
  leaving(): string[];
  /** The catalog watch runs while some instance derives upstreams (or is a gateway). */
  sync(): void;
  stop(): void;
  /** Forgets the names that were leaving (the agent stops). */
  clearLeaving(): void;
}

export function createCatalogServices(o: CatalogServicesContext): CatalogServices {
  const { consul, clock, logger, paths, instances } = o;
  let catalogServices: string[] | null = readCachedServices();
  let servicesWatch: { stop(): void } | null = null;
  let servicesErrors = 0;
  /**
   * Names that just left the catalog's list, still candidates for EMPTY_AFTER_OUTAGE_GRACE_MS: a
   * restarted Consul agent lists its services again within seconds, and dropping their
   * listeners and rules meanwhile would send calls around the mesh.
   */
  const catalogLeaving = new Map<string, NodeJS.Timeout>();

  function readCachedServices(): string[] | null {
    try {
      const v = JSON.parse(readFileSync(paths.cache('catalog-services'), 'utf8')) as unknown;
      return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : null;
    } catch {
      return null;
    }
  }

  function sync(): void {
    const needed =
      !o.isStopped() &&
      [...instances.values()].some(
        (i) => !i.stopping && (i.def.sidecar?.deriveUpstreams || i.def.kind !== undefined),
      );
    if (needed && !servicesWatch) {
      servicesWatch = consul.watchServices({
        onChange(names) {
          if (o.isStopped()) return;
          const next = new Set(names);
          for (const name of catalogServices ?? []) {
            if (next.has(name) || catalogLeaving.has(name)) continue;
            catalogLeaving.set(
              name,
              clock.setTimeout(() => {
                catalogLeaving.delete(name);
                o.onLeft();
              }, EMPTY_AFTER_OUTAGE_GRACE_MS),
            );
          }
          for (const name of next) {
            const timer = catalogLeaving.get(name);
            if (timer === undefined) continue;
            clock.clearTimeout(timer);
            catalogLeaving.delete(name);
          }
          catalogServices = [...names].sort();
          writeFileAtomic(
            paths.cache('catalog-services'),
            JSON.stringify(catalogServices),
            0o600,
          ).catch((err: unknown) => logError(logger, err, 'cannot cache the service list', 'warn'));
          o.onChange();
        },
        onError(err) {
          if (servicesErrors++ % 20 !== 0) return;
          logError(
            logger,
            new RemoraError(
              'REMORA_E_AGENT_CONSUL_UNAVAILABLE',
              `cannot watch the catalog's services: ${toRemoraError(err).message}; derived upstreams stay as they are`,
              {},
              { cause: err },
            ),
            undefined,
            'warn',
          );
        },
      });
    } else if (!needed && servicesWatch) {
      servicesWatch.stop();
      servicesWatch = null;
    }
  }

  return {
    services: () => catalogServices,
    leaving: () => [...catalogLeaving.keys()],
    sync,
    stop() {
      servicesWatch?.stop();
      servicesWatch = null;
    },
    clearLeaving() {
      for (const timer of catalogLeaving.values()) clock.clearTimeout(timer);
      catalogLeaving.clear();
    },
  };
}
