/**
 * A blocking-query watch of `/v1/health/connect/<service>?passing`, following Consul's rules for
 * blocking clients (api-docs/features/blocking.mdx): reset the index when it goes backwards,
 * never block on index 0, rate-limit with a small token bucket, back off on errors — and never
 * forget the last known endpoints while Consul is unreachable.
 */
import { toRemoraError, type RemoraError } from '../errors/index.ts';
import { createSilentLogger, logError, type Logger } from '../log/index.ts';
import { backoffDelay, createClock, type Clock } from '../util/index.ts';
import type { ConsulClient } from './client.ts';
import type { ServiceEntry } from './types.ts';

export const DEFAULT_WATCH_WAIT_SECONDS = 300;
export const WATCH_BACKOFF_BASE_MS = 250;
export const WATCH_BACKOFF_MAX_MS = 30_000;
/** Token bucket: two quick deliveries, then at most one query per refill interval. */
export const WATCH_RATE_BURST = 2;
export const WATCH_RATE_REFILL_MS = 1000;

export interface WatchConnectOptions {
  onChange(endpoints: ServiceEntry[]): void;
  onError?(err: RemoraError): void;
  logger?: Logger;
  /** In [0, 1): backoff jitter. */
  random?: () => number;
  /** Blocking wait per query, in seconds (Consul's default is 300). */
  waitSeconds?: number;
  clock?: Clock;
  /** Only instances whose checks all pass (the default, as the data plane wants). */
  passing?: boolean;
  /** Refill interval of the rate-limit bucket; tests may shorten it. */
  rateRefillMs?: number;
}

export interface ConnectWatch {
  stop(): void;
  /** The last endpoints delivered, or undefined before the first answer. */
  current(): ServiceEntry[] | undefined;
  /** Resolves after the first successful answer (or when stopped). */
  ready: Promise<void>;
}

/** A stable fingerprint of an endpoint set, so unchanged answers are not re-delivered. */
function fingerprint(entries: ServiceEntry[]): string {
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

export function watchConnect(
  client: ConsulClient,
  service: string,
  opts: WatchConnectOptions,
): ConnectWatch {
  const logger = opts.logger ?? createSilentLogger();
  const random = opts.random ?? Math.random;
  const clock = opts.clock ?? createClock();
  const wait = `${opts.waitSeconds ?? DEFAULT_WATCH_WAIT_SECONDS}s`;
  const refillMs = opts.rateRefillMs ?? WATCH_RATE_REFILL_MS;
  const passing = opts.passing ?? true;
  let stopped = false;
  let current: ServiceEntry[] | undefined;
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
        const res = await client.health.connect(service, {
          passing,
          ...(index > 0 ? { index, wait } : {}),
          signal: controller.signal,
        });
        if (stopped) break;
        failures = 0;
        if (res.index < index) {
          // blocking.mdx: an index that goes backwards (snapshot restore, a restarted catalog)
          // restarts the loop from 0.
          logger.info(
            { service, previous: index, now: res.index },
            'Consul index went backwards; resetting',
          );
          index = 0;
        } else {
          // ... and an index must be at least 1 so that the next query really blocks.
          index = Math.max(res.index, 1);
        }
        const print = fingerprint(res.entries);
        if (current === undefined || print !== currentPrint) {
          current = res.entries;
          currentPrint = print;
          try {
            opts.onChange(res.entries);
          } catch (err) {
            logError(logger, err, `onChange handler for ${service} failed`);
          }
        }
        markReady();
      } catch (err) {
        if (stopped) break;
        const e = toRemoraError(err);
        // Keep the last known endpoints; start over with a non-blocking query once Consul
        // answers again, since a restarted catalog may hold a lower index.
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
            service,
            attempt: failures,
            retryInMs: delay,
            kept: current?.length ?? 0,
          },
          `watch of ${service} failed; keeping last known endpoints: ${e.message}`,
        );
        try {
          opts.onError?.(e);
        } catch (hookErr) {
          logError(logger, hookErr, `onError handler for ${service} failed`);
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
