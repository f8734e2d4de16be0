// Upstream discovery: one Consul watch per upstream service on the host, shared by every
// instance that calls it. Consul being unreachable never empties an endpoint set; the last
// known set is also cached on disk so a restarted agent starts from it.
import type { Endpoint } from '../lib/proxy-api/index.ts';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import { readFileSync } from 'node:fs';
import { writeFileAtomic, type DataPaths } from './files.ts';
import type { ConnectEntry, ConsulPort } from './ports.ts';
import { targetsFromEntries, type ServiceTarget } from './transparent/targets.ts';
import { asProtocol, protocolFromEntries } from './transparent/derive.ts';
import type { Protocol } from '../lib/proxy-api/index.ts';

export interface UpstreamStatus {
  service: string;
  endpoints: number;
  /** True once Consul answered in this run. */
  synced: boolean;
  users: string[];
  lastError: { code: string; message: string; at: string } | null;
}

export interface Discovery {
  acquire(service: string, user: string): void;
  release(service: string, user: string): void;
  endpoints(service: string): Endpoint[];
  /**
   * The endpoints whose health entry `keep` accepts (a resolver subset's filter); every endpoint
   * while only an older agent's cache, which holds no entries, is known.
   */
  select(service: string, keep: (entry: ConnectEntry) => boolean): Endpoint[];
  /**
   * True when Consul lists terminating gateways for the service (it is linked from outside the
   * mesh): a subset is then the gateway's to pick, asked for by its SNI.
   */
  behindGateway(service: string): boolean;
  /** True once the set is known: from the cache, from Consul, or Consul answered with an error. */
  settled(service: string): boolean;
  /** The addresses clients dial for the service (transparent mode); known once Consul answered. */
  targets(service: string): ServiceTarget[];
  /**
   * True once Consul (or the cache) listed a sidecar of the service. It stays when the service
   * scales to zero, so a derived upstream's listener does too.
   */
  listed(service: string): boolean;
  /**
   * The `proxy.config.protocol` the service's sidecars were registered with; null when they give
   * none (Consul's config entries decide then) or none was ever listed.
   */
  protocol(service: string): Protocol | null;
  status(): UpstreamStatus[];
  stop(): void;
}

/**
 * What the agent keeps of a health entry, in memory and in its cache: every field a subset's
 * filter may read, without check outputs and Raft indexes (they change without changing the
 * instance).
 */
export function keptEntry(e: ConnectEntry): ConnectEntry {
  const strip = (o: object) => {
    const { CreateIndex: _c, ModifyIndex: _m, ...rest } = o as Record<string, unknown>;
    return rest;
  };
  const checks = (e.Checks ?? []).map((c) => {
    const { Output: _o, Notes: _n, ...rest } = strip(c);
    return rest;
  });
  return {
    ...e,
    Node: strip(e.Node) as ConnectEntry['Node'],
    Service: strip(e.Service) as ConnectEntry['Service'],
    Checks: checks,
  };
}

/** Maps Consul's healthy connect entries to proxy endpoints, sorted for stable snapshots. */
export function endpointsFromEntries(entries: readonly ConnectEntry[]): Endpoint[] {
  return entries
    .map((e) => ({
      id: e.Service.Proxy?.DestinationServiceID ?? e.Service.ID,
      address: e.Service.Address || e.Node.Address,
      port: e.Service.Port,
      weight: e.Service.Weights?.Passing ?? 1,
      node: e.Node.Node,
    }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.port - b.port));
}

/**
 * How long an endpoint set survives a Consul that answers again after an outage (or answers a
 * restarted agent for the first time, the set coming from its cache) but lists none of them: a restarted Consul agent re-syncs its registrations (and the agents on other hosts
 * re-register) within seconds, and routing to the last known endpoints meanwhile beats
 * refusing every call. A non-empty answer ends the wait at once.
 */
export const EMPTY_AFTER_OUTAGE_GRACE_MS = 15_000;

/**
 * Prefix of the discovery name of a service followed by its own healthy instances
 * (`/v1/health/service/<name>?passing`), not its sidecars: what a terminating gateway reaches.
 * `+` is in no service name.
 */
export const EXTERNAL_PREFIX = 'external+';

/** The discovery name of `service`'s own healthy instances. */
export function externalName(service: string): string {
  return EXTERNAL_PREFIX + service;
}

function isExternal(name: string): boolean {
  return name.startsWith(EXTERNAL_PREFIX);
}

interface Watch {
  service: string;
  users: Set<string>;
  endpoints: Endpoint[];
  /** The health entries `endpoints` come from (`keptEntry`), for subset filters; null: not known. */
  entries: ConnectEntry[] | null;
  targets: ServiceTarget[];
  /** A sidecar was listed once; `protocol` is what its registration gives. */
  listed: boolean;
  protocol: Protocol | null;
  /** Until when an empty answer right after an outage is held back (0: not holding). */
  graceUntil: number;
  graceTimer: NodeJS.Timeout | null;
  synced: boolean;
  settled: boolean;
  /** The set came from the endpoint cache of a previous agent (cleared by Consul's first answer). */
  fromCache: boolean;
  lastError: UpstreamStatus['lastError'];
  errors: number;
  handle: { stop(): void } | null;
}

export function createDiscovery(o: {
  consul: ConsulPort;
  paths: DataPaths;
  clock: Clock;
  logger: Logger;
  onChange(service: string): void;
}): Discovery {
  const watches = new Map<string, Watch>();
  let stopped = false;

  /**
   * Takes `entries` as the instance set (`force`: even when equal, for Consul's first answer).
   * The cache holds the entries, so that a restarted agent applies subset filters before Consul
   * answers.
   */
  function apply(w: Watch, entries: ConnectEntry[], force: boolean): void {
    const kept = entries.map(keptEntry);
    if (!force && JSON.stringify(kept) === JSON.stringify(w.entries)) return;
    const next = endpointsFromEntries(kept);
    const changed = JSON.stringify(next) !== JSON.stringify(w.endpoints);
    w.entries = kept;
    w.endpoints = next;
    writeFileAtomic(
      o.paths.cache(`endpoints-${w.service}`),
      JSON.stringify({ entries: kept }),
      0o600,
    ).catch((err: unknown) => logError(o.logger, err, 'cannot cache endpoints', 'warn'));
    o.logger.info(
      { upstream: w.service, endpoints: next.length },
      changed ? `endpoints of ${w.service} changed` : `instances of ${w.service} changed`,
    );
    o.onChange(w.service);
  }

  function start(w: Watch): void {
    // read synchronously so that no snapshot is ever built from an unknown (empty) set
    try {
      const cached = JSON.parse(
        readFileSync(o.paths.cache(`endpoints-${w.service}`), 'utf8'),
      ) as unknown;
      const entries = (cached as { entries?: unknown } | null)?.entries;
      if (Array.isArray(entries)) {
        // read whole before taking any of it: a damaged cache is no cache
        w.endpoints = endpointsFromEntries(entries as ConnectEntry[]);
        w.entries = entries as ConnectEntry[];
      } else if (Array.isArray(cached)) {
        // an older agent cached endpoints only: subsets have no fields to read until Consul
        // answers, and meanwhile take every endpoint
        w.endpoints = cached as Endpoint[];
        w.entries = null;
      }
      if (Array.isArray(entries) || Array.isArray(cached)) {
        w.settled = true;
        w.fromCache = w.endpoints.length > 0;
      }
    } catch {
      // no cache yet
    }
    try {
      // an empty file: sidecars were listed, registered without a protocol
      w.protocol = asProtocol(readFileSync(o.paths.cache(`protocol-${w.service}`), 'utf8'));
      w.listed = true;
    } catch {
      // never seen a sidecar of it
    }
    // a service outside the mesh (a terminating gateway's): its own healthy instances
    const external = isExternal(w.service);
    const watch: ConsulPort['watchConnect'] = external
      ? (_name, h) =>
          o.consul.watchService
            ? o.consul.watchService(w.service.slice(EXTERNAL_PREFIX.length), h)
            : (h.onError(new Error('this Consul port cannot watch health/service')), { stop() {} })
      : (name, h) => o.consul.watchConnect(name, h);
    w.handle = watch(w.service, {
      onChange(entries) {
        if (stopped || watches.get(w.service) !== w) return;
        const next = entries;
        const targets = targetsFromEntries(entries);
        // the protocol stays when the service scales to zero (an empty answer gives null)
        const seen = protocolFromEntries(entries);
        const protocolChanged = seen !== null && (!w.listed || seen.protocol !== w.protocol);
        if (seen && protocolChanged) {
          w.listed = true;
          w.protocol = seen.protocol;
          writeFileAtomic(o.paths.cache(`protocol-${w.service}`), seen.protocol ?? '', 0o600).catch(
            (err: unknown) => logError(o.logger, err, 'cannot cache a protocol', 'warn'),
          );
        }
        const firstAnswer = !w.synced;
        const recovering = w.errors > 0;
        // an agent restarted after its TTL checks expired: Consul lists the instances it (and
        // agents on other hosts) is about to re-register as critical for a moment — the same
        // re-sync as after an outage, so the cached set gets the same grace
        const afterRestart = firstAnswer && w.fromCache;
        w.fromCache = false;
        if (recovering)
          o.logger.info({ upstream: w.service }, `Consul answers again for ${w.service}`);
        w.synced = true;
        w.settled = true;
        w.errors = 0;
        w.lastError = null;
        if ((recovering || afterRestart) && next.length === 0 && w.endpoints.length > 0) {
          w.graceUntil = o.clock.now() + EMPTY_AFTER_OUTAGE_GRACE_MS;
          o.logger.warn(
            { upstream: w.service, kept: w.endpoints.length },
            `${recovering ? 'Consul answers again' : 'first answer since the agent started'} but lists no healthy ${w.service}; keeping the ${w.endpoints.length} last known endpoints for up to ${EMPTY_AFTER_OUTAGE_GRACE_MS} ms while registrations re-sync`,
          );
        }
        const holding = next.length === 0 && w.endpoints.length > 0 && o.clock.now() < w.graceUntil;
        if (holding) {
          // apply the empty set only if Consul still says so when the grace ends
          w.graceTimer ??= o.clock.setTimeout(() => {
            w.graceTimer = null;
            if (!stopped && watches.get(w.service) === w && w.graceUntil !== 0) {
              w.graceUntil = 0;
              w.targets = targets;
              apply(w, next, false);
            }
          }, w.graceUntil - o.clock.now());
          return;
        }
        w.graceUntil = 0;
        if (w.graceTimer) {
          o.clock.clearTimeout(w.graceTimer);
          w.graceTimer = null;
        }
        const targetsChanged = JSON.stringify(targets) !== JSON.stringify(w.targets);
        w.targets = targets;
        apply(w, next, firstAnswer || targetsChanged || protocolChanged);
      },
      onError(err) {
        if (stopped) return;
        const e = new RemoraError(
          'REMORA_E_AGENT_CONSUL_UNAVAILABLE',
          `cannot watch the healthy endpoints of ${w.service}: ${toRemoraError(err).message}; keeping the ${w.endpoints.length} last known`,
          { upstream: w.service },
          { cause: err },
        );
        w.lastError = {
          code: e.code,
          message: e.message,
          at: new Date(o.clock.now()).toISOString(),
        };
        if (w.errors % 20 === 0) logError(o.logger, e, undefined, 'warn');
        w.errors += 1;
        if (!w.settled) {
          // Consul is unreachable and nothing is cached: proceed with what is known (nothing)
          w.settled = true;
          o.onChange(w.service);
        }
      },
    });
  }

  return {
    acquire(service, user) {
      let w = watches.get(service);
      if (!w) {
        w = {
          service,
          users: new Set(),
          endpoints: [],
          entries: [],
          targets: [],
          listed: false,
          protocol: null,
          synced: false,
          lastError: null,
          errors: 0,
          handle: null,
          settled: false,
          fromCache: false,
          graceUntil: 0,
          graceTimer: null,
        };
        watches.set(service, w);
        start(w);
      }
      w.users.add(user);
    },
    release(service, user) {
      const w = watches.get(service);
      if (!w) return;
      w.users.delete(user);
      if (w.users.size === 0) {
        w.handle?.stop();
        if (w.graceTimer) o.clock.clearTimeout(w.graceTimer);
        watches.delete(service);
      }
    },
    endpoints: (service) => watches.get(service)?.endpoints ?? [],
    select(service, keep) {
      const w = watches.get(service);
      if (!w) return [];
      return w.entries ? endpointsFromEntries(w.entries.filter(keep)) : w.endpoints;
    },
    behindGateway(service) {
      const entries = watches.get(service)?.entries;
      return (
        entries !== undefined &&
        entries !== null &&
        entries.length > 0 &&
        entries.every((e) => e.Service.Kind === 'terminating-gateway')
      );
    },
    settled: (service) => watches.get(service)?.settled ?? false,
    targets: (service) => watches.get(service)?.targets ?? [],
    listed: (service) => watches.get(service)?.listed ?? false,
    protocol: (service) => watches.get(service)?.protocol ?? null,
    status: () =>
      [...watches.values()].map((w) => ({
        service: w.service,
        endpoints: w.endpoints.length,
        synced: w.synced,
        users: [...w.users].sort(),
        lastError: w.lastError,
      })),
    stop() {
      stopped = true;
      for (const w of watches.values()) {
        w.handle?.stop();
        if (w.graceTimer) o.clock.clearTimeout(w.graceTimer);
      }
      watches.clear();
    },
  };
}
