/**
 * Blocking-query watches of `/v1/health/connect/<service>?passing`, `/v1/catalog/services` and
 * `/v1/config/<kind>`,
 * following Consul's rules for blocking clients (api-docs/features/blocking.mdx): reset the index
 * when it goes backwards, never block on index 0, rate-limit with a small token bucket, back off
 * on errors — and never forget the last known answer while Consul is unreachable. All share one
 * loop, `watchBlocking`.
 */
import { toRemoraError, type RemoraError } from '../errors/index.ts';
import { createSilentLogger, logError, type Logger } from '../log/index.ts';
import { backoffDelay, createClock, type Clock } from '../util/index.ts';
import type { ConsulClient } from './client.ts';
import type { ConfigEntry, ServiceEntry } from './types.ts';

export const DEFAULT_WATCH_WAIT_SECONDS = 300;
export const WATCH_BACKOFF_BASE_MS = 250;
export const WATCH_BACKOFF_MAX_MS = 30_000;
/** Token bucket: two quick deliveries, then at most one query per refill interval. */
export const WATCH_RATE_BURST = 2;
export const WATCH_RATE_REFILL_MS = 1000;

/** What every blocking watch takes; `onChange` gets each answer that differs from the last. */
export interface BlockingWatchOptions<T> {
  onChange(value: T): void;
  onError?(err: RemoraError): void;
  logger?: Logger;
  /** In [0, 1): backoff jitter. */
  random?: () => number;
  /** Blocking wait per query, in seconds (Consul's default is 300). */
  waitSeconds?: number;
  clock?: Clock;
  /** Refill interval of the rate-limit bucket; tests may shorten it. */
  rateRefillMs?: number;
}

export interface BlockingWatch<T> {
  stop(): void;
  /** The last value delivered, or undefined before the first answer. */
  current(): T | undefined;
  /** Resolves after the first successful answer (or when stopped). */
  ready: Promise<void>;
}

export interface WatchConnectOptions extends BlockingWatchOptions<ServiceEntry[]> {
  /** Only instances whose checks all pass (the default, as the data plane wants). */
  passing?: boolean;
}

export type ConnectWatch = BlockingWatch<ServiceEntry[]>;

/** Service names mapped to their tags, as `/v1/catalog/services` lists them. */
export type WatchServicesOptions = BlockingWatchOptions<Record<string, string[]>>;

export type ServicesWatch = BlockingWatch<Record<string, string[]>>;

/** The entries of one config-entry kind, as `/v1/config/<kind>` lists them. */
export type WatchConfigEntriesOptions = BlockingWatchOptions<ConfigEntry[]>;

export type ConfigEntriesWatch = BlockingWatch<ConfigEntry[]>;

/** A stable fingerprint of an endpoint set, so unchanged answers are not re-delivered. */
function connectFingerprint(entries: ServiceEntry[]): string {
  return JSON.stringify(
    entries
      .map((e) => ({
        id: e.Service.ID,
        node: e.Node.Node,
        addr: e.Service.Address || e.Node.Address,
        port: e.Service.Port,
        tags: e.Service.Tags,
        meta: e.Service.Meta,
        weights: e.Service.Weights,
        proxy: e.Service.Proxy ?? null,
        checks: e.Checks.map((c) => `${c.CheckID}=${c.Status}`).sort(),
      }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
  );
}

/** A stable fingerprint of a service list: names and tags, in any order Consul sends them. */
function servicesFingerprint(services: Record<string, string[]>): string {
  return JSON.stringify(
    Object.keys(services)
      .sort()
      .map((name) => [name, [...(services[name] ?? [])].sort()]),
  );
}

/** What a blocking watch is called in its logs. */
interface WatchLabel<T> {
  /** What is watched, e.g. a service name: "watch of <name> failed". */
  name: string;
  /** What is kept on failure: "keeping <kept>". */
  kept: string;
  /** Fields every log line of the watch carries. */
  fields: Record<string, unknown>;
  /** The size of a value, logged as `kept` on failure. */
  size(value: T | undefined): number;
}

type BlockingQuery<T> = (o: {
  index?: number;
  wait?: string;
  signal: AbortSignal;
}) => Promise<{ value: T; index: number }>;

/**
 * The blocking loop shared by the watches: queries until stopped, delivering each answer whose
 * fingerprint differs from the last one delivered.
 */
function watchBlocking<T>(
  label: WatchLabel<T>,
  query: BlockingQuery<T>,
  fingerprint: (value: T) => string,
  opts: BlockingWatchOptions<T>,
): BlockingWatch<T> {
  const logger = opts.logger ?? createSilentLogger();
  const random = opts.random ?? Math.random;
  const clock = opts.clock ?? createClock();
  const wait = `${opts.waitSeconds ?? DEFAULT_WATCH_WAIT_SECONDS}s`;
  const refillMs = opts.rateRefillMs ?? WATCH_RATE_REFILL_MS;
  let stopped = false;
  let current: T | undefined;
  let currentPrint = '';
  let index = 0;
  let failures = 0;
  let tokens = WATCH_RATE_BURST;
  let lastRefill = clock.now();
  let controller: AbortController | undefined;
  let sleeper: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      if (stopped || ms <= 0) return resolve();
      const timer = clock.setTimeout(() => {
        sleeper = undefined;
        resolve();
      }, ms);
      sleeper = { timer, resolve };
    });

  async function takeToken(): Promise<void> {
    const now = clock.now();
    const refill = Math.floor((now - lastRefill) / refillMs);
    if (refill > 0) {
      tokens = Math.min(WATCH_RATE_BURST, tokens + refill);
      lastRefill += refill * refillMs;
    }
    if (tokens > 0) {
      tokens -= 1;
      return;
    }
    await sleep(lastRefill + refillMs - now);
    lastRefill = clock.now();
  }

  async function loop(): Promise<void> {
    while (!stopped) {
      await takeToken();
      if (stopped) break;
      controller = new AbortController();
      try {
        const res = await query({
          ...(index > 0 ? { index, wait } : {}),
          signal: controller.signal,
        });
        if (stopped) break;
        failures = 0;
        if (res.index < index) {
          // blocking.mdx: an index that goes backwards (snapshot restore, a restarted catalog)
          // restarts the loop from 0.
          logger.info(
            { ...label.fields, previous: index, now: res.index },
            'Consul index went backwards; resetting',
          );
          index = 0;
        } else {
          // ... and an index must be at least 1 so that the next query really blocks.
          index = Math.max(res.index, 1);
        }
        const print = fingerprint(res.value);
        if (current === undefined || print !== currentPrint) {
          current = res.value;
          currentPrint = print;
          try {
            opts.onChange(res.value);
          } catch (err) {
            logError(logger, err, `onChange handler for ${label.name} failed`);
          }
        }
        markReady();
      } catch (err) {
        if (stopped) break;
        const e = toRemoraError(err);
        // Keep the last known value; start over with a non-blocking query once Consul answers
        // again, since a restarted catalog may hold a lower index.
        index = 0;
        const delay = backoffDelay(failures, {
          baseMs: WATCH_BACKOFF_BASE_MS,
          maxMs: WATCH_BACKOFF_MAX_MS,
          random,
        });
        failures += 1;
        logger.warn(
          {
            code: e.code,
            ...label.fields,
            attempt: failures,
            retryInMs: delay,
            kept: label.size(current),
          },
          `watch of ${label.name} failed; keeping ${label.kept}: ${e.message}`,
        );
        try {
          opts.onError?.(e);
        } catch (hookErr) {
          logError(logger, hookErr, `onError handler for ${label.name} failed`);
        }
        await sleep(delay);
      } finally {
        controller = undefined;
      }
    }
    markReady();
  }

  void loop();

  return {
    stop() {
      if (stopped) return;
      stopped = true;
      controller?.abort();
      if (sleeper) {
        clock.clearTimeout(sleeper.timer);
        sleeper.resolve();
        sleeper = undefined;
      }
    },
    current: () => current,
    ready,
  };
}

export function watchConnect(
  client: ConsulClient,
  service: string,
  opts: WatchConnectOptions,
): ConnectWatch {
  return watchHealth(client, 'connect', service, opts);
}

/**
 * Watches a service's own healthy instances (`/v1/health/service/<service>?passing`), as
 * `watchConnect` does its sidecars: for services outside the mesh a terminating gateway reaches.
 */
export function watchService(
  client: ConsulClient,
  service: string,
  opts: WatchConnectOptions,
): ConnectWatch {
  return watchHealth(client, 'service', service, opts);
}

/** A blocking watch of `/v1/health/<what>/<service>`, keeping the last known entries. */
function watchHealth(
  client: ConsulClient,
  what: 'connect' | 'service',
  service: string,
  opts: WatchConnectOptions,
): ConnectWatch {
  const passing = opts.passing ?? true;
  return watchBlocking<ServiceEntry[]>(
    {
      name: service,
      kept: what === 'connect' ? 'last known endpoints' : 'last known instances',
      fields: { service },
      size: (entries) => entries?.length ?? 0,
    },
    async (o) => {
      const res = await client.health[what](service, { passing, ...o });
      return { value: res.entries, index: res.index };
    },
    connectFingerprint,
    opts,
  );
}

/**
 * Watches the catalog's service list (`/v1/catalog/services`): `onChange` gets every service
 * name with its tags, first once Consul answers and then whenever names or tags change.
 */
export function watchServices(client: ConsulClient, opts: WatchServicesOptions): ServicesWatch {
  return watchBlocking<Record<string, string[]>>(
    {
      name: "the catalog's service list",
      kept: 'the last known service list',
      fields: { watch: 'catalog/services' },
      size: (services) => (services ? Object.keys(services).length : 0),
    },
    async (o) => {
      const res = await client.catalog.servicesBlocking(o);
      return { value: res.services, index: res.index };
    },
    servicesFingerprint,
    opts,
  );
}

/**
 * Watches the configuration entries of one kind (`/v1/config/<kind>`): `onChange` gets the
 * entries, first once Consul answers and then whenever one is written or deleted (an entry
 * rewritten with the same content is not re-delivered).
 */
export function watchConfigEntries(
  client: ConsulClient,
  kind: string,
  opts: WatchConfigEntriesOptions,
): ConfigEntriesWatch {
  return watchBlocking<ConfigEntry[]>(
    {
      name: `the ${kind} config entries`,
      kept: `the last known ${kind} entries`,
      fields: { watch: `config/${kind}` },
      size: (entries) => entries?.length ?? 0,
    },
    async (o) => {
      const res = await client.config.list(kind, o);
      return { value: res.entries, index: res.index };
    },
    (entries) =>
      JSON.stringify(
        entries
          .map(({ CreateIndex: _c, ModifyIndex: _m, ...rest }) => rest)
          .sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0)),
      ),
    opts,
  );
}
