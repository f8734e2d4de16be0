// Consul's `jwt-provider` config entries, read for the proxies: each entry checked (a bad one is
// reported naming its field and left out), then its key set resolved: an inline `JWKS` decoded
// once, a `Filename` read when snapshots are built, a `Remote` URI fetched in the background with
// got — on a timer of `CacheDuration`, with retries — keeping the last good keys when a fetch
// fails. The proxies get keys in their snapshots and never fetch anything while a request waits.
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import type { JsonWebKey } from 'node:crypto';
import got from 'got';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import {
  DEFAULT_CLOCK_SKEW_S,
  DEFAULT_JWT_CACHE_SIZE,
  DEFAULT_JWT_LOCATIONS,
  jwkProblem,
  type JwtLocation,
  type JwtProvider,
} from '../lib/jwt/index.ts';
import { headerNameProblem } from '../lib/proxy-api/index.ts';
import { durationMs } from './definitions.ts';

export const JWT_PROVIDER = 'jwt-provider';
/** Consul's default `CacheDuration` of a remote key set. */
export const DEFAULT_JWKS_CACHE_MS = 5 * 60_000;
export const DEFAULT_JWKS_REQUEST_TIMEOUT_MS = 5_000;
const MAX_JWKS_BYTES = 1024 * 1024;
const MAX_RETRIES = 10;

export interface RemoteJwks {
  uri: string;
  cacheDurationMs: number;
  requestTimeoutMs: number;
  fetchAsynchronously: boolean;
  numRetries: number;
  baseIntervalMs: number;
  maxIntervalMs: number;
}

/** A checked entry: the provider without keys, and where its keys come from. */
export interface JwtProviderSettings {
  provider: Omit<JwtProvider, 'keys' | 'keysProblem'>;
  source: { inline: JsonWebKey[] } | { filename: string } | { remote: RemoteJwks };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

class EntryProblem extends Error {}

function problem(field: string, why: string): never {
  throw new EntryProblem(`${field} ${why}`);
}

/** The keys of a JWKS document (`{"keys": [...]}`), each usable; throws EntryProblem. */
export function jwksKeys(text: string, field: string): JsonWebKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return problem(field, 'is not a JSON Web Key Set (not JSON)');
  }
  if (!isObj(doc) || !Array.isArray(doc.keys))
    return problem(field, 'is not a JSON Web Key Set (no "keys" list)');
  return doc.keys.map((k: unknown, i: number) => {
    const why = jwkProblem(k);
    if (why !== null) problem(`${field} key #${i + 1}`, why);
    return k as JsonWebKey;
  });
}

function optInt(o: Obj, key: string, field: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    problem(
      `${field}.${key}`,
      `must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`,
    );
  return v;
}

function optSkew(e: Obj): number | undefined {
  const v = e.ClockSkewSeconds;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 86_400)
    problem('ClockSkewSeconds', `must be a whole number from 0 to 86400, got ${JSON.stringify(v)}`);
  // 0 is Consul's "not set": its default applies
  return v === 0 ? undefined : v;
}

function optDuration(o: Obj, key: string, field: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  const ms = typeof v === 'string' ? durationMs(v) : typeof v === 'number' ? v / 1e6 : null;
  if (ms === null)
    problem(`${field}.${key}`, `must be a duration such as "5m", got ${JSON.stringify(v)}`);
  return ms;
}

function optBool(o: Obj, key: string, field: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean')
    problem(`${field}.${key}`, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function optName(o: Obj, key: string, field: string, header: boolean): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') return problem(`${field}.${key}`, 'is required');
  const why = header ? headerNameProblem(v) : null;
  if (why !== null) problem(`${field}.${key}`, why);
  return v;
}

function keySource(set: unknown): JwtProviderSettings['source'] {
  if (!isObj(set)) return problem('JSONWebKeySet', 'is required');
  const { Local: local, Remote: remote } = set;
  if ((local == null) === (remote == null))
    problem('JSONWebKeySet', 'must set exactly one of Local and Remote');
  if (local != null) {
    if (!isObj(local)) return problem('JSONWebKeySet.Local', 'must be an object');
    if (typeof local.JWKS === 'string' && local.JWKS !== '') {
      const text = Buffer.from(local.JWKS, 'base64').toString('utf8');
      return { inline: jwksKeys(text, 'JSONWebKeySet.Local.JWKS (base64 of a JWKS)') };
    }
    if (typeof local.Filename === 'string' && local.Filename !== '') {
      if (!isAbsolute(local.Filename))
        problem(
          'JSONWebKeySet.Local.Filename',
          `must be an absolute path, got ${JSON.stringify(local.Filename)}`,
        );
      return { filename: local.Filename };
    }
    return problem('JSONWebKeySet.Local', 'must set JWKS (base64) or Filename');
  }
  const r = remote as Obj;
  if (!isObj(r)) return problem('JSONWebKeySet.Remote', 'must be an object');
  const f = 'JSONWebKeySet.Remote';
  let uri: URL;
  try {
    uri = new URL(String(r.URI));
  } catch {
    return problem(`${f}.URI`, `must be an http or https URL, got ${JSON.stringify(r.URI)}`);
  }
  if (uri.protocol !== 'http:' && uri.protocol !== 'https:')
    problem(`${f}.URI`, `must be an http or https URL, got ${JSON.stringify(r.URI)}`);
  const retry = r.RetryPolicy;
  if (retry != null && !isObj(retry)) problem(`${f}.RetryPolicy`, 'must be an object');
  const rp = retry ?? {};
  const backoff = rp.RetryPolicyBackoff;
  if (backoff != null && !isObj(backoff))
    problem(`${f}.RetryPolicy.RetryPolicyBackoff`, 'must be an object');
  const bo = backoff ?? {};
  const bf = `${f}.RetryPolicy.RetryPolicyBackoff`;
  const baseIntervalMs = optDuration(bo, 'BaseInterval', bf) ?? 1000;
  const maxIntervalMs = optDuration(bo, 'MaxInterval', bf) ?? baseIntervalMs * 10;
  if (maxIntervalMs < baseIntervalMs)
    problem(`${bf}.MaxInterval`, 'must not be shorter than BaseInterval');
  const cacheDurationMs = optDuration(r, 'CacheDuration', f) ?? DEFAULT_JWKS_CACHE_MS;
  if (cacheDurationMs < 1000) problem(`${f}.CacheDuration`, 'must be at least 1s');
  return {
    remote: {
      uri: uri.href,
      cacheDurationMs,
      requestTimeoutMs:
        optInt(r, 'RequestTimeoutMs', f, 1, 600_000) ?? DEFAULT_JWKS_REQUEST_TIMEOUT_MS,
      fetchAsynchronously: optBool(r, 'FetchAsynchronously', f) ?? false,
      numRetries: optInt(rp, 'NumRetries', `${f}.RetryPolicy`, 0, MAX_RETRIES) ?? 0,
      baseIntervalMs,
      maxIntervalMs,
    },
  };
}

function locationsOf(v: unknown): JwtLocation[] {
  if (v == null) return DEFAULT_JWT_LOCATIONS.map((l) => structuredClone(l));
  if (!Array.isArray(v)) return problem('Locations', 'must be a list');
  if (v.length === 0) return DEFAULT_JWT_LOCATIONS.map((l) => structuredClone(l));
  return v.map((l: unknown, i: number): JwtLocation => {
    const f = `Locations[${i}]`;
    if (!isObj(l)) return problem(f, 'must be an object');
    const kinds = ['Header', 'QueryParam', 'Cookie'].filter((k) => l[k] != null);
    if (kinds.length !== 1) problem(f, 'must set exactly one of Header, QueryParam and Cookie');
    const kind = kinds[0]!;
    const x = l[kind];
    if (!isObj(x)) return problem(`${f}.${kind}`, 'must be an object');
    if (kind === 'Header') {
      const header: { name: string; valuePrefix?: string; forward?: boolean } = {
        name: optName(x, 'Name', `${f}.Header`, true),
      };
      if (x.ValuePrefix != null) {
        if (typeof x.ValuePrefix !== 'string')
          problem(`${f}.Header.ValuePrefix`, 'must be a string');
        if (x.ValuePrefix !== '') header.valuePrefix = x.ValuePrefix;
      }
      const fwd = optBool(x, 'Forward', `${f}.Header`);
      if (fwd) header.forward = true;
      return { header };
    }
    if (kind === 'QueryParam')
      return { queryParam: { name: optName(x, 'Name', `${f}.QueryParam`, false) } };
    return { cookie: { name: optName(x, 'Name', `${f}.Cookie`, false) } };
  });
}

/**
 * A jwt-provider entry's settings, or null with the problem in `found` (key `j/<name>`): the
 * field and the reason, as a person fixes it.
 */
export function jwtProviderSettings(
  e: Obj,
  found?: Map<string, string>,
): JwtProviderSettings | null {
  const name = typeof e.Name === 'string' ? e.Name : '';
  try {
    const provider: JwtProviderSettings['provider'] = {
      name,
      locations: locationsOf(e.Locations),
      clockSkewSeconds: optSkew(e) ?? DEFAULT_CLOCK_SKEW_S,
      cacheSize: DEFAULT_JWT_CACHE_SIZE,
    };
    if (e.Issuer != null && e.Issuer !== '') {
      if (typeof e.Issuer !== 'string') problem('Issuer', 'must be a string');
      provider.issuer = e.Issuer;
    }
    if (e.Audiences != null) {
      if (!Array.isArray(e.Audiences) || !e.Audiences.every((a) => typeof a === 'string'))
        problem('Audiences', 'must be a list of strings');
      if (e.Audiences.length > 0) provider.audiences = [...e.Audiences];
    }
    if (e.Forwarding != null) {
      const fw = e.Forwarding;
      if (!isObj(fw)) return problem('Forwarding', 'must be an object');
      provider.forwarding = { headerName: optName(fw, 'HeaderName', 'Forwarding', true) };
      if (optBool(fw, 'PadForwardPayloadHeader', 'Forwarding'))
        provider.forwarding.padForwardPayloadHeader = true;
    }
    if (e.CacheConfig != null) {
      if (!isObj(e.CacheConfig)) return problem('CacheConfig', 'must be an object');
      const size = optInt(e.CacheConfig, 'Size', 'CacheConfig', 0, 100_000);
      if (size !== undefined && size > 0) provider.cacheSize = size;
    }
    return { provider, source: keySource(e.JSONWebKeySet) };
  } catch (err) {
    if (!(err instanceof EntryProblem)) throw err;
    found?.set(
      `j/${name}`,
      `jwt-provider ${name}: ${err.message}; the provider is left out, and intentions requiring it deny`,
    );
    return null;
  }
}

interface RemoteState {
  settings: RemoteJwks;
  keys: JsonWebKey[];
  problem: string | null;
  timer: NodeJS.Timeout | null;
  inFlight: boolean;
  stopped: boolean;
}

export interface JwksKeeper {
  /** The providers with their keys as known now (what snapshots carry). */
  providers(settings: readonly JwtProviderSettings[]): JwtProvider[];
  /** Problems reading files or fetching remote sets (for `remora status`). */
  problems(): RemoraError[];
  stop(): void;
}

/**
 * Keeps key sets: files read on every call of `providers`, remote sets fetched in the background
 * (first fetch at once, then every `CacheDuration`; a failed fetch is retried with backoff and the
 * last good keys stay). `onChange` is called when a remote set's keys (or its problem) change.
 */
export function createJwksKeeper(o: {
  logger: Logger;
  onChange(): void;
  fetchText?: (uri: string, timeoutMs: number) => Promise<string>;
}): JwksKeeper {
  const remotes = new Map<string, RemoteState>();
  const issues = new Map<string, RemoraError>();
  const fetchText =
    o.fetchText ??
    (async (uri: string, timeoutMs: number) => {
      // read as a stream, so an endless or huge answer is cut at the bound, not held whole
      const stream = got.stream(uri, {
        timeout: { request: timeoutMs },
        retry: { limit: 0 },
        headers: { accept: 'application/json' },
        followRedirect: true,
      });
      const chunks: Buffer[] = [];
      let bytes = 0;
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        bytes += chunk.length;
        if (bytes > MAX_JWKS_BYTES) {
          stream.destroy();
          throw new Error(`the answer is larger than ${MAX_JWKS_BYTES} bytes`);
        }
        chunks.push(chunk);
      }
      return Buffer.concat(chunks).toString('utf8');
    });

  function note(key: string, message: string | null): void {
    const had = issues.get(key);
    if (message === null) {
      issues.delete(key);
      return;
    }
    if (had?.message === message) return;
    const e = new RemoraError('REMORA_E_AGENT_JWKS_UNAVAILABLE', message, { provider: key });
    issues.set(key, e);
    logError(o.logger, e, undefined, 'warn');
  }

  async function fetchOnce(name: string, st: RemoteState): Promise<void> {
    const s = st.settings;
    let lastErr: unknown = null;
    for (let attempt = 0; attempt <= s.numRetries && !st.stopped; attempt++) {
      if (attempt > 0) {
        const wait = Math.min(s.maxIntervalMs, s.baseIntervalMs * 2 ** (attempt - 1));
        await new Promise((r) => setTimeout(r, wait * (0.5 + Math.random() / 2)).unref());
      }
      try {
        const keys = jwksKeys(
          await fetchText(s.uri, s.requestTimeoutMs),
          `the key set at ${s.uri}`,
        );
        const changed = JSON.stringify(keys) !== JSON.stringify(st.keys) || st.problem !== null;
        st.keys = keys;
        st.problem = null;
        note(name, null);
        if (changed && !st.stopped) o.onChange();
        return;
      } catch (err) {
        lastErr = err;
      }
    }
    if (st.stopped) return;
    const why = lastErr instanceof EntryProblem ? lastErr.message : toRemoraError(lastErr).message;
    const message = `jwt-provider ${name}: cannot fetch its keys from ${s.uri} (${why}); ${st.keys.length > 0 ? 'keeping the keys fetched last' : 'tokens of this provider are refused until a fetch succeeds'}`;
    const had = st.problem;
    st.problem = st.keys.length > 0 ? null : `its key set at ${s.uri} could not be fetched yet`;
    note(name, message);
    if (had !== st.problem) o.onChange();
  }

  function schedule(name: string, st: RemoteState, ms: number): void {
    if (st.stopped) return;
    st.timer = setTimeout(() => {
      st.timer = null;
      st.inFlight = true;
      void fetchOnce(name, st).finally(() => {
        st.inFlight = false;
        // after a failure with no keys, try again sooner than a whole cache period
        const next =
          st.keys.length === 0
            ? Math.min(st.settings.cacheDurationMs, 30_000)
            : st.settings.cacheDurationMs;
        schedule(name, st, next);
      });
    }, ms);
    st.timer.unref();
  }

  function remoteFor(name: string, s: RemoteJwks): RemoteState {
    const had = remotes.get(name);
    if (had && JSON.stringify(had.settings) === JSON.stringify(s)) return had;
    if (had) {
      had.stopped = true;
      if (had.timer) clearTimeout(had.timer);
    }
    const st: RemoteState = {
      settings: s,
      keys: [],
      problem: null,
      timer: null,
      inFlight: false,
      stopped: false,
    };
    remotes.set(name, st);
    schedule(name, st, 0);
    return st;
  }

  return {
    providers(settings) {
      const live = new Set<string>();
      const out: JwtProvider[] = [];
      for (const { provider, source } of settings) {
        live.add(provider.name);
        if ('inline' in source) {
          out.push({ ...provider, keys: source.inline });
        } else if ('filename' in source) {
          try {
            const keys = jwksKeys(
              readFileSync(source.filename, 'utf8'),
              `JSONWebKeySet.Local.Filename ${source.filename}`,
            );
            note(provider.name, null);
            out.push({ ...provider, keys });
          } catch (err) {
            const why =
              err instanceof EntryProblem
                ? err.message
                : `cannot read ${source.filename}: ${toRemoraError(err).message}`;
            note(
              provider.name,
              `jwt-provider ${provider.name}: ${why}; tokens of this provider are refused`,
            );
            out.push({
              ...provider,
              keys: [],
              keysProblem: `its key file ${source.filename} cannot be read`,
            });
          }
        } else {
          const st = remoteFor(provider.name, source.remote);
          out.push({
            ...provider,
            keys: st.keys,
            ...(st.keys.length === 0
              ? {
                  keysProblem: st.problem ?? `its key set at ${source.remote.uri} is being fetched`,
                }
              : {}),
          });
        }
      }
      for (const [name, st] of remotes)
        if (!live.has(name)) {
          st.stopped = true;
          if (st.timer) clearTimeout(st.timer);
          remotes.delete(name);
        }
      for (const name of issues.keys()) if (!live.has(name)) issues.delete(name);
      return out;
    },
    problems: () => [...issues.values()],
    stop() {
      for (const st of remotes.values()) {
        st.stopped = true;
        if (st.timer) clearTimeout(st.timer);
      }
      remotes.clear();
    },
  };
}
