/**
 * Consul's configuration entries (`/v1/config`), the kinds Remora's agents read:
 * `service-defaults` (per service), `proxy-defaults` (one, named `global`), `service-resolver`,
 * `service-splitter` and `service-router` (per service). Entries are stored as given, with the
 * keys Remora reads spelled Consul's way (`Kind`, `Name`, `Protocol`, `Config`, `Meta`) and the
 * protocol lowercased, as Consul normalizes it. What Consul checks is checked: a resolver's
 * timeouts must be durations, its balancing policy one Consul knows, its subsets DNS labels whose
 * filters parse (lib/consul/filter.ts) and its default subset one of them, a splitter's weights
 * must add up to 100, and a router's matches must be well formed. Other kinds Consul knows are
 * refused with a message naming what the embedded catalog supports.
 */
import { HttpError } from './http-error.ts';
import { checkFilterSyntax } from '../consul/filter.ts';

export const CONFIG_KINDS = [
  'service-defaults',
  'proxy-defaults',
  'service-resolver',
  'service-splitter',
  'service-router',
] as const;
export type ConfigKind = (typeof CONFIG_KINDS)[number];

/** Kinds real Consul accepts that the embedded catalog does not implement. */
const OTHER_CONSUL_KINDS = new Set([
  'service-intentions',
  'ingress-gateway',
  'terminating-gateway',
  'api-gateway',
  'http-route',
  'tcp-route',
  'inline-certificate',
  'file-system-certificate',
  'bound-api-gateway',
  'mesh',
  'exported-services',
  'sameness-group',
  'jwt-provider',
  'control-plane-request-limit',
  'rate-limit-ip-config',
]);

/** The name of the single proxy-defaults entry. */
export const PROXY_DEFAULTS_NAME = 'global';

/** One stored entry, as the API returns it. */
export type ConfigEntryRecord = Record<string, unknown> & {
  Kind: ConfigKind;
  Name: string;
  CreateIndex: number;
  ModifyIndex: number;
};

/** Top-level keys Consul also accepts in snake_case or lowercase, mapped to their JSON name. */
const KEY_NAMES: Record<string, string> = {
  kind: 'Kind',
  name: 'Name',
  protocol: 'Protocol',
  config: 'Config',
  meta: 'Meta',
  mode: 'Mode',
};

/** The kind named in a URL path, or a 400 naming the supported ones. */
export function configKind(raw: string): ConfigKind {
  if ((CONFIG_KINDS as readonly string[]).includes(raw)) return raw as ConfigKind;
  if (OTHER_CONSUL_KINDS.has(raw))
    throw new HttpError(
      400,
      `the embedded catalog (remora devconsul) does not implement config entries of kind ${JSON.stringify(raw)}; it supports ${CONFIG_KINDS.join(', ')}`,
    );
  throw new HttpError(400, `invalid config entry kind: ${raw}`);
}

/**
 * Decodes a `PUT /v1/config` body into an entry without indexes. Refuses what Consul refuses:
 * a body that is not an object, a missing kind or name, a proxy-defaults entry not named
 * `global`, and values of the wrong type for the keys above.
 */
export function decodeConfigEntry(
  body: string,
): Record<string, unknown> & { Kind: ConfigKind; Name: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    throw new HttpError(400, `Request decoding failed: ${(err as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new HttpError(400, 'Request decoding failed: the body must be a JSON object');
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    const key = KEY_NAMES[k.toLowerCase()] ?? k;
    if (key in out) throw new HttpError(400, `Request decoding failed: ${key} is given twice`);
    out[key] = v;
  }
  if (typeof out.Kind !== 'string' || out.Kind === '')
    throw new HttpError(400, 'Request decoding failed: Payload does not contain a kind/Kind key');
  const kind = configKind(out.Kind.toLowerCase());
  out.Kind = kind;
  if (typeof out.Name !== 'string' || out.Name === '')
    throw new HttpError(400, `config entry of kind ${kind} is missing a Name`);
  if (kind === 'proxy-defaults' && out.Name !== PROXY_DEFAULTS_NAME)
    throw new HttpError(
      400,
      `invalid name (${JSON.stringify(out.Name)}), only ${JSON.stringify(PROXY_DEFAULTS_NAME)} is supported`,
    );
  if (out.Protocol !== undefined) {
    if (kind !== 'service-defaults')
      throw new HttpError(
        400,
        `Request decoding failed: ${kind} has no Protocol; set Config.protocol instead`,
      );
    if (typeof out.Protocol !== 'string')
      throw new HttpError(400, 'Request decoding failed: Protocol must be a string');
    out.Protocol = out.Protocol.toLowerCase();
  }
  for (const key of ['Config', 'Meta']) {
    const v = out[key];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Array.isArray(v)))
      throw new HttpError(400, `Request decoding failed: ${key} must be an object`);
  }
  if (kind === 'service-resolver') checkResolver(out);
  if (kind === 'service-splitter') checkSplitter(out);
  if (kind === 'service-router') checkRouter(out);
  const config = out.Config as Record<string, unknown> | undefined | null;
  if (config && typeof config.protocol === 'string')
    out.Config = { ...config, protocol: config.protocol.toLowerCase() };
  // indexes are the store's, never the caller's
  delete out.CreateIndex;
  delete out.ModifyIndex;
  return out as Record<string, unknown> & { Kind: ConfigKind; Name: string };
}

/** Consul's load-balancing policies for a service-resolver. */
const RESOLVER_POLICIES = new Set([
  '',
  'random',
  'round_robin',
  'least_request',
  'ring_hash',
  'maglev',
]);

/** A Go duration ("1m30s", "250ms", "0s") or a number of nanoseconds, as Consul decodes them. */
function isGoDuration(v: unknown): boolean {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0;
  return typeof v === 'string' && /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$/.test(v);
}

/** What Consul refuses in a service-resolver that Remora reads. */
function checkResolver(e: Record<string, unknown>): void {
  for (const key of ['ConnectTimeout', 'RequestTimeout']) {
    const v = e[key];
    if (v !== undefined && v !== null && !isGoDuration(v))
      throw new HttpError(
        400,
        `Request decoding failed: ${key}: time: invalid duration ${JSON.stringify(v)}`,
      );
  }
  checkSubsets(e);
  checkRedirect(e);
  checkFailover(e);
  const lb = e.LoadBalancer;
  if (lb === undefined || lb === null) return;
  if (typeof lb !== 'object' || Array.isArray(lb))
    throw new HttpError(400, 'Request decoding failed: LoadBalancer must be an object');
  const policy = (lb as Record<string, unknown>).Policy;
  if (policy !== undefined && (typeof policy !== 'string' || !RESOLVER_POLICIES.has(policy)))
    throw new HttpError(400, `Bad LoadBalancer policy: ${JSON.stringify(policy)} is not supported`);
}

/**
 * What Consul refuses in a service-resolver's `Subsets` and `DefaultSubset`, with its messages
 * (agent/structs/config_entry_discoverychain.go): a subset name that is not a DNS label, a
 * `Filter` that does not parse (Consul creates its evaluator without a type, so its fields,
 * values and regular expressions are met only when it runs), a default subset not defined.
 */
function checkSubsets(e: Record<string, unknown>): void {
  const subsets = e.Subsets;
  if (
    subsets !== undefined &&
    subsets !== null &&
    (typeof subsets !== 'object' || Array.isArray(subsets))
  )
    throw new HttpError(
      400,
      'Request decoding failed: Subsets must be a map of subset names to subsets',
    );
  const names = Object.keys(subsets ?? {});
  for (const name of names) {
    if (name === '') throw new HttpError(400, 'Subset defined with empty name');
    const why =
      Buffer.byteLength(name) > 63
        ? 'must be non-empty and 63 characters or fewer'
        : !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(name)
          ? "must be 63 characters or fewer, begin or end with lower case alphanumeric characters, and contain lower case alphanumeric characters or '-' in between"
          : undefined;
    if (why) throw new HttpError(400, `Subset ${JSON.stringify(name)} is invalid: ${why}`);
    const def = (subsets as Record<string, unknown>)[name];
    const filter =
      def !== null && typeof def === 'object' ? (def as Record<string, unknown>).Filter : undefined;
    if (filter === undefined || filter === null || filter === '') continue;
    if (typeof filter !== 'string')
      throw new HttpError(400, `Request decoding failed: Subsets[${name}].Filter must be a string`);
    try {
      checkFilterSyntax(filter);
    } catch (err) {
      throw new HttpError(
        400,
        `Filter for subset ${JSON.stringify(name)} is not a valid expression: ${(err as Error).message}`,
      );
    }
  }
  const d = e.DefaultSubset;
  if (typeof d === 'string' && d !== '' && !names.includes(d))
    throw new HttpError(400, `DefaultSubset ${JSON.stringify(d)} is not a valid subset`);
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `o`'s string fields (absent: ''), or a decoding error naming `where` and the field. */
function strings<K extends string>(o: Obj, keys: readonly K[], where: string): Record<K, string> {
  const out = {} as Record<K, string>;
  for (const k of keys) {
    const v = o[k] ?? '';
    if (typeof v !== 'string')
      throw new HttpError(400, `Request decoding failed: ${where}.${k} must be a string`);
    out[k] = v;
  }
  return out;
}

/** Whether `name` is one of `e`'s subsets (Consul's `isSubset`). */
function isSubset(e: Obj, name: string): boolean {
  return isObj(e.Subsets) && Object.hasOwn(e.Subsets, name);
}

/** The fields of a `Redirect` and of a failover target. */
const TARGET_FIELDS = [
  'Service',
  'ServiceSubset',
  'Namespace',
  'Partition',
  'Datacenter',
  'Peer',
] as const;

/**
 * Consul's refusals of a `Redirect` or failover target that combines a peer, partition or
 * datacenter as it forbids, each field named through `name` (`Redirect.Peer`, or `Peer`).
 */
function checkTargetScope(
  r: Record<(typeof TARGET_FIELDS)[number], string>,
  name: (field: string) => string,
  fail: (message: string) => never,
): void {
  const both = (a: 'Peer' | 'Partition', b: string) =>
    fail(`${name(a)} cannot be set with ${name(b)}`);
  if (r.Peer !== '' && r.ServiceSubset !== '') both('Peer', 'ServiceSubset');
  if (r.Peer !== '' && r.Partition !== '') both('Partition', 'Peer');
  if (r.Peer !== '' && r.Datacenter !== '') both('Peer', 'Datacenter');
}

/**
 * What Consul refuses in a service-resolver's `Redirect`, with its messages and in its order
 * (agent/structs/config_entry_discoverychain.go, `ServiceResolverConfigEntry.Validate`).
 */
function checkRedirect(e: Obj): void {
  const raw = e.Redirect;
  if (raw === undefined || raw === null) return;
  if (!isObj(raw)) throw new HttpError(400, 'Request decoding failed: Redirect must be an object');
  const r = strings(raw, TARGET_FIELDS, 'Redirect');
  if (isObj(e.Failover) && Object.keys(e.Failover).length > 0)
    throw new HttpError(400, 'Redirect and Failover cannot both be set');
  if (TARGET_FIELDS.every((k) => r[k] === '')) throw new HttpError(400, 'Redirect is empty');
  const bad = (m: string) => new HttpError(400, m);
  checkTargetScope(
    r,
    (f) => `Redirect.${f}`,
    (m) => {
      throw bad(m);
    },
  );
  if (r.Service === '') {
    for (const k of ['ServiceSubset', 'Namespace', 'Partition', 'Peer'] as const)
      if (r[k] !== '') throw bad(`Redirect.${k} defined without Redirect.Service`);
  } else if (r.ServiceSubset !== '' && r.Service === e.Name && !isSubset(e, r.ServiceSubset))
    throw bad(
      `Redirect.ServiceSubset ${JSON.stringify(r.ServiceSubset)} is not a valid subset of ${JSON.stringify(e.Name)}`,
    );
}

const FAILOVER_FIELDS = ['Service', 'ServiceSubset', 'Namespace'] as const;

/**
 * What Consul refuses in a service-resolver's `Failover`, with its messages and in its order
 * (keys in sorted order, where Go's map order is random).
 */
function checkFailover(e: Obj): void {
  const raw = e.Failover;
  if (raw === undefined || raw === null) return;
  if (!isObj(raw))
    throw new HttpError(
      400,
      'Request decoding failed: Failover must be a map of subset names to failovers',
    );
  for (const key of Object.keys(raw).sort()) {
    const at = `Bad Failover[${JSON.stringify(key)}]`;
    const bad = (m: string) => new HttpError(400, `${at}${m}`);
    const def = raw[key];
    if (!isObj(def))
      throw new HttpError(400, `Request decoding failed: Failover[${key}] must be an object`);
    const f = strings(def, FAILOVER_FIELDS, `Failover[${key}]`);
    const dcs = def.Datacenters ?? [];
    const targets = def.Targets ?? [];
    if (!Array.isArray(dcs) || !dcs.every((d) => typeof d === 'string'))
      throw new HttpError(
        400,
        `Request decoding failed: Failover[${key}].Datacenters must be a list of names`,
      );
    if (!Array.isArray(targets) || !targets.every(isObj))
      throw new HttpError(
        400,
        `Request decoding failed: Failover[${key}].Targets must be a list of objects`,
      );
    if (key !== '*' && !isSubset(e, key)) throw bad(': not a valid subset subset');
    if (FAILOVER_FIELDS.every((k) => f[k] === '') && dcs.length === 0 && targets.length === 0)
      throw bad(': one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required');
    if (
      f.ServiceSubset !== '' &&
      (f.Service === '' || f.Service === e.Name) &&
      !isSubset(e, f.ServiceSubset)
    )
      throw bad(
        `: ServiceSubset ${JSON.stringify(f.ServiceSubset)} is not a valid subset of ${JSON.stringify(f.Service)}`,
      );
    if (dcs.length > 0 && targets.length > 0) throw bad(': Targets cannot be set with Datacenters');
    if (f.ServiceSubset !== '' && targets.length > 0)
      throw bad(': Targets cannot be set with ServiceSubset');
    if (f.Service !== '' && targets.length > 0) throw bad(': Targets cannot be set with Service');
    targets.forEach((x: Obj, i: number) => {
      const tg = strings(x, TARGET_FIELDS, `Failover[${key}].Targets[${i}]`);
      const tbad = (m: string) => new HttpError(400, `${at}.Targets[${i}]: ${m}`);
      checkTargetScope(
        tg,
        (f) => f,
        (m) => {
          throw tbad(m);
        },
      );
      if (tg.Partition !== '' && tg.Datacenter !== '')
        throw tbad('Partition cannot be set with Datacenter');
      if (
        tg.ServiceSubset !== '' &&
        (tg.Service === '' || tg.Service === e.Name) &&
        !isSubset(e, tg.ServiceSubset)
      )
        throw tbad(
          `ServiceSubset ${JSON.stringify(tg.ServiceSubset)} is not a valid subset of ${JSON.stringify(e.Name)}`,
        );
    });
    if (dcs.some((d) => d === ''))
      throw new HttpError(400, `${at}.Datacenters: found empty datacenter`);
  }
}

/** What Consul refuses in a service-splitter: no splits, a bad weight, weights not adding to 100. */
function checkSplitter(e: Record<string, unknown>): void {
  const splits = e.Splits;
  if (!Array.isArray(splits) || splits.length === 0)
    throw new HttpError(400, 'no splits configured');
  let sum = 0;
  for (const [i, split] of splits.entries()) {
    const w: unknown =
      split !== null && typeof split === 'object' ? (split as Record<string, unknown>).Weight : 0;
    if (typeof w !== 'number' || !Number.isFinite(w))
      throw new HttpError(400, `Request decoding failed: Splits[${i}].Weight must be a number`);
    if (w < 0) throw new HttpError(400, `split weight must be non-negative, not ${w}`);
    sum += Math.round(w * 100);
  }
  if (sum !== 10000)
    throw new HttpError(
      400,
      `the sum of all split weights must be 100, not ${(sum / 100).toFixed(6)}`,
    );
}

const HTTP_METHODS = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
]);

const obj = (v: unknown): Record<string, unknown> | null =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;

/**
 * Consul's checks of a route's header or query parameter matches: each names a field and sets
 * at most one of `Present` and `kinds`.
 */
function checkNamedMatches(route: number, field: string, list: unknown, kinds: string[]): void {
  if (!Array.isArray(list)) return;
  list.forEach((m: unknown, j) => {
    const at = `Route[${route}] ${field}[${j}]`;
    const o = obj(m) ?? {};
    if (typeof o.Name !== 'string' || o.Name === '')
      throw new HttpError(400, `${at} missing required Name field`);
    const set =
      kinds.filter((k) => typeof o[k] === 'string' && o[k] !== '').length +
      (o.Present === true ? 1 : 0);
    if (set > 1)
      throw new HttpError(
        400,
        `${at} should only contain one of Present, ${kinds.slice(0, -1).join(', ')}, or ${kinds.at(-1)}`,
      );
  });
}

/** What Consul refuses in a service-router's routes (its `Validate`, the parts Remora reads). */
function checkRouter(e: Record<string, unknown>): void {
  const routes = e.Routes ?? [];
  if (!Array.isArray(routes))
    throw new HttpError(400, 'Request decoding failed: Routes must be a list');
  const fail = (msg: string): never => {
    throw new HttpError(400, msg);
  };
  routes.forEach((r: unknown, i) => {
    const route = obj(r) ?? fail(`Route[${i}] must be an object`);
    const http = obj(obj(route.Match)?.HTTP) ?? {};
    const paths = ['PathExact', 'PathPrefix', 'PathRegex'].filter(
      (k) => typeof http[k] === 'string' && http[k] !== '',
    );
    if (paths.length > 1)
      fail(`Route[${i}] should only contain at most one of PathExact, PathPrefix, or PathRegex`);
    for (const k of ['PathExact', 'PathPrefix']) {
      const v = http[k];
      if (typeof v === 'string' && v !== '' && !v.startsWith('/'))
        fail(`Route[${i}] ${k} doesn't start with '/': ${JSON.stringify(v)}`);
    }
    checkNamedMatches(i, 'Header', http.Header, ['Exact', 'Prefix', 'Suffix', 'Regex']);
    checkNamedMatches(i, 'QueryParam', http.QueryParam, ['Exact', 'Regex']);
    const methods = Array.isArray(http.Methods) ? http.Methods : [];
    for (const m of methods)
      if (typeof m !== 'string' || !HTTP_METHODS.has(m.toUpperCase()))
        fail(`Route[${i}] Methods contains an invalid method ${JSON.stringify(m)}`);
    const rewrite = obj(route.Destination)?.PrefixRewrite;
    if (
      typeof rewrite === 'string' &&
      rewrite !== '' &&
      !paths.some((k) => k === 'PathExact' || k === 'PathPrefix')
    )
      fail(
        `Route[${i}] cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix`,
      );
  });
}

/**
 * Consul's discovery-chain check on a write: a service-splitter or service-router needs its
 * service to speak an HTTP-based protocol (`protocol` is what service-defaults or
 * proxy-defaults give it, else tcp).
 */
export function checkRoutingProtocol(name: string, protocol: string): void {
  if (protocol === 'http' || protocol === 'http2' || protocol === 'grpc') return;
  throw new HttpError(
    400,
    `discovery chain ${JSON.stringify(name)} uses a protocol ${JSON.stringify(protocol)} that does not permit advanced routing or splitting behavior`,
  );
}
