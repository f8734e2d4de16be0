// State the agent mirrors from control: the trust bundle and the intentions snapshot. Each is
// fetched at start, updated by change messages, re-fetched periodically, and cached in the data
// directory so a restarted agent can serve its proxies while NATS or control are down.
import type { IntentionsSnapshot } from '../lib/intentions/types.ts';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import { backoffDelay, type Clock } from '../lib/util/index.ts';
import { readJsonOrNull, writeFileAtomic } from './files.ts';
import type { TrustBundle } from './ports.ts';

export interface MirrorStatus {
  known: boolean;
  /** True once a value came from control in this run (not only from the cache). */
  live: boolean;
  lastError: { code: string; message: string; at: string } | null;
}

export interface Mirror<T> {
  start(): Promise<void>;
  current(): T | null;
  /** Offers a value from a change message. */
  offer(value: T): void;
  /** Fetches now (also used by the periodic timer). */
  refresh(): Promise<void>;
  status(): MirrorStatus;
  stop(): void;
}

interface MirrorOptions<T> {
  what: string;
  fetch(): Promise<T>;
  /** True when `next` should replace `prev`. */
  accept(prev: T | null, next: T): boolean;
  onChange(next: T, prev: T | null): void;
  cachePath: string;
  refreshMs: number;
  clock: Clock;
  random: () => number;
  logger: Logger;
}

function createMirror<T>(o: MirrorOptions<T>): Mirror<T> {
  let value: T | null = null;
  let live = false;
  let timer: NodeJS.Timeout | null = null;
  let attempt = 0;
  let stopped = false;
  let lastError: MirrorStatus['lastError'] = null;

  function set(next: T, fromControl: boolean): void {
    if (fromControl) live = true;
    if (!o.accept(value, next)) return;
    const prev = value;
    value = next;
    if (fromControl) {
      writeFileAtomic(o.cachePath, JSON.stringify(next), 0o600).catch((err: unknown) =>
        logError(o.logger, err, `cannot cache ${o.what}`, 'warn'),
      );
    }
    o.onChange(next, prev);
  }

  function schedule(ms: number): void {
    if (stopped) return;
    if (timer) o.clock.clearTimeout(timer);
    timer = o.clock.setTimeout(() => {
      timer = null;
      void refresh();
    }, ms);
  }

  async function refresh(): Promise<void> {
    try {
      const next = await o.fetch();
      if (stopped) return;
      attempt = 0;
      lastError = null;
      set(next, true);
      // jittered so that agents do not all ask at once
      schedule(Math.floor(o.refreshMs * (0.9 + 0.2 * o.random())));
    } catch (err) {
      if (stopped) return;
      const e = new RemoraError(
        'REMORA_E_AGENT_CONTROL_UNAVAILABLE',
        `cannot fetch ${o.what} from control: ${toRemoraError(err).message}; ${value ? 'keeping the last known one' : `waiting for ${o.what}`}, retrying`,
        { what: o.what },
        { cause: err },
      );
      lastError = { code: e.code, message: e.message, at: new Date(o.clock.now()).toISOString() };
      if (attempt === 0 || attempt % 10 === 0) logError(o.logger, e, undefined, 'warn');
      schedule(
        backoffDelay(attempt, {
          baseMs: 500,
          maxMs: Math.min(30_000, o.refreshMs),
          random: o.random,
        }),
      );
      attempt += 1;
    }
  }

  return {
    async start() {
      const cached = await readJsonOrNull<T>(o.cachePath);
      if (cached && !stopped) set(cached, false);
      // the first fetch runs in the background: a slow or absent control never blocks start
      void refresh();
    },
    current: () => value,
    offer(next) {
      if (!stopped) set(next, true);
    },
    refresh,
    status: () => ({ known: value !== null, live, lastError }),
    stop() {
      stopped = true;
      if (timer) o.clock.clearTimeout(timer);
    },
  };
}

export interface MirrorDeps {
  clock: Clock;
  random: () => number;
  logger: Logger;
}

/** Intentions: a change message or a fetch applies only when its revision is higher. */
export function createIntentionsMirror(
  o: MirrorDeps & {
    fetch(): Promise<IntentionsSnapshot>;
    cachePath: string;
    refreshMs: number;
    onChange(next: IntentionsSnapshot): void;
  },
): Mirror<IntentionsSnapshot> {
  return createMirror<IntentionsSnapshot>({
    ...o,
    what: 'the intentions',
    accept: (prev, next) => prev === null || next.revision > prev.revision,
    onChange: (next) => o.onChange(next),
  });
}

function rootSetKey(b: TrustBundle): string {
  return `${b.trustDomain}|${b.activeRootId}|${b.roots
    .map((r) => r.id)
    .sort()
    .join(',')}`;
}

/** The trust bundle; `rotated` is true when the active root or trust domain changed. */
export function createRootsMirror(
  o: MirrorDeps & {
    fetch(): Promise<TrustBundle>;
    cachePath: string;
    refreshMs: number;
    onChange(next: TrustBundle, rotated: boolean): void;
  },
): Mirror<TrustBundle> {
  return createMirror<TrustBundle>({
    ...o,
    what: 'the trust bundle',
    accept: (prev, next) => prev === null || rootSetKey(prev) !== rootSetKey(next),
    onChange: (next, prev) =>
      o.onChange(
        next,
        prev !== null &&
          (prev.activeRootId !== next.activeRootId || prev.trustDomain !== next.trustDomain),
      ),
  });
}
