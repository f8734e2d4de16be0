/**
 * Consul's configuration entries (`/v1/config`), the kinds Remora's agents read:
 * `service-defaults` (per service), `proxy-defaults` (one, named `global`), `mesh` (one, named
 * `mesh`), `service-resolver`, `service-splitter` and `service-router` (per service), and
 * `jwt-provider` (per provider, checked as Consul checks it). Entries are stored as given, with the
 * keys Remora reads spelled Consul's way (`Kind`, `Name`, `Protocol`, `Config`, `Meta`) and the
 * protocol lowercased, as Consul normalizes it. What Consul checks is checked: a resolver's
 * timeouts must be durations, its balancing policy one Consul knows, its subsets DNS labels whose
 * filters parse (lib/consul/filter.ts) and its default subset one of them, its `Redirect` and
 * `Failover` what Consul's checks allow (one of them, naming subsets that exist, never combining
 * what Consul keeps apart), a splitter's weights must add up to 100, and a router's matches must
 * be well formed, and the mesh entry's `TLS` and `TransparentProxy` (`MeshDestinationsOnly`,
 * stored in Consul's spelling when written in snake_case) what Consul decodes, as is the `Expose`
 * block of service-defaults and proxy-defaults (types only, as Consul). A value of the
 * wrong type is refused first, as Consul's decoder runs before its checks. Other kinds Consul knows
 * are refused with a message naming what the embedded catalog supports.
 */
import { HttpError } from './http-error.ts';
import { checkFilterSyntax } from '../consul/filter.ts';

export const CONFIG_KINDS = [
  'service-defaults',
  'proxy-defaults',
  'service-resolver',
  'service-splitter',
  'service-router',
  'mesh',
  'jwt-provider',
  'ingress-gateway',
  'terminating-gateway',
] as const;
export type ConfigKind = (typeof CONFIG_KINDS)[number];

/** Kinds real Consul accepts that the embedded catalog does not implement. */
const OTHER_CONSUL_KINDS = new Set([
  'service-intentions',
  'api-gateway',
  'http-route',
  'tcp-route',
  'inline-certificate',
  'file-system-certificate',
  'bound-api-gateway',
  'exported-services',
  'sameness-group',
  'control-plane-request-limit',
  'rate-limit-ip-config',
]);

/** The name of the single proxy-defaults entry. */
export const PROXY_DEFAULTS_NAME = 'global';
/** The name of the single mesh entry (Consul names it itself). */
export const MESH_NAME = 'mesh';
/** TLS versions Consul's mesh entry accepts. */
const TLS_VERSIONS = ['TLS_AUTO', 'TLSv1_0', 'TLSv1_1', 'TLSv1_2', 'TLSv1_3'];

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
  transparentproxy: 'TransparentProxy',
  transparent_proxy: 'TransparentProxy',
  mutualtlsmode: 'MutualTLSMode',
  mutual_tls_mode: 'MutualTLSMode',
  expose: 'Expose',
  allowenablingpermissivemutualtls: 'AllowEnablingPermissiveMutualTLS',
  allow_enabling_permissive_mutual_tls: 'AllowEnablingPermissiveMutualTLS',
  listeners: 'Listeners',
  defaults: 'Defaults',
  tls: 'TLS',
  http: 'HTTP',
  ...Object.fromEntries(
    ['LocalConnectTimeoutMs', 'LocalRequestTimeoutMs', 'MaxInboundConnections'].flatMap((k) => [
      [k.toLowerCase(), k],
      [k.replace(/(?<=[a-z])([A-Z])/g, '_$1').toLowerCase(), k],
    ]),
  ),
};

/** service-defaults fields Consul decodes as integers. */
const SERVICE_DEFAULTS_INTS = [
  'LocalConnectTimeoutMs',
  'LocalRequestTimeoutMs',
  'MaxInboundConnections',
];

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
    if (Object.hasOwn(out, key))
      throw new HttpError(400, `Request decoding failed: ${key} is given twice`);
    // defined, not assigned: a key named `__proto__` stays a key and never becomes a prototype
    Object.defineProperty(out, key, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  if (typeof out.Kind !== 'string' || out.Kind === '')
    throw new HttpError(400, 'Request decoding failed: Payload does not contain a kind/Kind key');
  const kind = configKind(out.Kind.toLowerCase());
  out.Kind = kind;
  if (kind === 'mesh') {
    if (out.Name !== undefined && out.Name !== '' && out.Name !== MESH_NAME)
      throw new HttpError(
        400,
        `invalid name (${JSON.stringify(out.Name)}), only ${JSON.stringify(MESH_NAME)} is supported`,
      );
    out.Name = MESH_NAME;
    checkMeshTls(out.TLS);
    if (out.TransparentProxy !== undefined && out.TransparentProxy !== null)
      out.TransparentProxy = meshFlagObject(
        out.TransparentProxy,
        'TransparentProxy',
        'MeshDestinationsOnly',
        'mesh_destinations_only',
      );
    if (out.HTTP !== undefined && out.HTTP !== null)
      out.HTTP = meshFlagObject(
        out.HTTP,
        'HTTP',
        'SanitizeXForwardedClientCert',
        'sanitize_x_forwarded_client_cert',
      );
    const allow = out.AllowEnablingPermissiveMutualTLS;
    if (allow === null)
      delete out.AllowEnablingPermissiveMutualTLS; // Go's zero value: false
    else if (allow !== undefined && typeof allow !== 'boolean')
      throw new HttpError(
        400,
        'Request decoding failed: AllowEnablingPermissiveMutualTLS must be a bool',
      );
  }
  checkMutualTlsMode(kind, out);
  if (out.Expose !== undefined) out.Expose = decodeExpose(kind, out.Expose);
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
  for (const key of SERVICE_DEFAULTS_INTS) {
    const v = out[key];
    if (v === undefined || v === null) continue;
    if (kind !== 'service-defaults')
      throw new HttpError(400, `Request decoding failed: ${kind} has no ${key}`);
    if (typeof v !== 'number' || !Number.isInteger(v))
      throw new HttpError(400, `Request decoding failed: ${key} must be an integer`);
  }
  for (const key of ['Config', 'Meta']) {
    const v = out[key];
    if (v !== undefined && v !== null && (typeof v !== 'object' || Array.isArray(v)))
      throw new HttpError(400, `Request decoding failed: ${key} must be an object`);
  }
  if (kind === 'service-resolver') checkResolver(out);
  if (kind === 'service-splitter') checkSplitter(out);
  if (kind === 'service-router') checkRouter(out);
  if (kind === 'jwt-provider') checkJwtProvider(out);
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

/**
 * What Consul refuses in a service-resolver that Remora reads. Its decoder runs before its
 * `Validate` (agent/structs/config_entry_discoverychain.go), so a value of the wrong type is
 * refused before any check of the values; the checks then run in Consul's order.
 */
function checkResolver(e: Obj): void {
  for (const key of ['ConnectTimeout', 'RequestTimeout']) {
    const v = e[key];
    if (v !== undefined && v !== null && !isGoDuration(v))
      throw new HttpError(
        400,
        `Request decoding failed: ${key}: time: invalid duration ${JSON.stringify(v)}`,
      );
  }
  const subsets = decodeSubsets(e);
  const redirect = decodeRedirect(e.Redirect);
  const failover = decodeFailover(e.Failover);
  const lb = e.LoadBalancer ?? {};
  if (!isObj(lb))
    throw new HttpError(400, 'Request decoding failed: LoadBalancer must be an object');

  checkSubsets(e, subsets);
  if (redirect) checkRedirect(e, redirect, failover.length > 0);
  checkFailover(e, failover);
  const policy = lb.Policy;
  if (policy !== undefined && (typeof policy !== 'string' || !RESOLVER_POLICIES.has(policy)))
    throw new HttpError(400, `Bad LoadBalancer policy: ${goQuote(policy)} is not supported`);
  checkCookieConfigs(lb.HashPolicies);
}

/** Consul's checks of a hash policy's `CookieConfig` (only for a cookie; no TTL on a session one). */
function checkCookieConfigs(policies: unknown): void {
  if (!Array.isArray(policies)) return;
  policies.forEach((hp: unknown, i) => {
    if (!isObj(hp) || !isObj(hp.CookieConfig)) return;
    if (hp.Field !== 'cookie')
      throw new HttpError(
        400,
        `Bad LoadBalancer HashPolicy[${i}]: cookie_config provided for ${goQuote(hp.Field ?? '')}`,
      );
    const ttl = hp.CookieConfig.TTL;
    const nonzeroTtl =
      typeof ttl === 'number' ? ttl !== 0 : typeof ttl === 'string' && /[1-9]/.test(ttl);
    if (hp.CookieConfig.Session === true && nonzeroTtl)
      throw new HttpError(
        400,
        `Bad LoadBalancer HashPolicy[${i}]: a session cookie cannot have an associated TTL`,
      );
  });
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Go's `%q` (strconv.Quote) of a string decoded from JSON: printable characters as they are,
 * `"` and `\` escaped, the others as Go escapes them (`\n`, `\x01`, `\u2028`, `\U000e0001`), a
 * lone surrogate as the U+FFFD Go's JSON decoder makes of it. A value that is not a string (a
 * policy of the wrong type) is shown as JSON.
 */
export function goQuote(v: unknown): string {
  if (typeof v !== 'string') return JSON.stringify(v);
  const named: Record<string, string> = {
    '\x07': '\\a',
    '\b': '\\b',
    '\f': '\\f',
    '\n': '\\n',
    '\r': '\\r',
    '\t': '\\t',
    '\v': '\\v',
    '"': '\\"',
    '\\': '\\\\',
  };
  let out = '"';
  for (const ch of v) {
    const c = ch.codePointAt(0) ?? 0;
    if (c >= 0xd800 && c <= 0xdfff) {
      out += '\ufffd';
      continue;
    }
    const hex = (n: number) => c.toString(16).padStart(n, '0');
    if (named[ch]) out += named[ch];
    else if (ch === ' ' || /[\p{L}\p{M}\p{N}\p{P}\p{S}]/u.test(ch)) out += ch;
    else if (c < 0x80) out += `\\x${hex(2)}`;
    else if (c < 0x10000) out += `\\u${hex(4)}`;
    else out += `\\U${hex(8)}`;
  }
  return `${out}"`;
}

/** `o`'s string fields (absent or null: ''), or a decoding error naming `where` and the field. */
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

/** An object where Consul decodes a struct (null is the zero struct), or a decoding error. */
function struct(v: unknown, what: string): Obj {
  if (v === undefined || v === null) return {};
  if (!isObj(v)) throw new HttpError(400, `Request decoding failed: ${what} must be an object`);
  return v;
}

/** A service-resolver's subset names, with the filters of those that have one. */
interface Subsets {
  names: string[];
  filters: Map<string, string>;
  defaultSubset: string;
}

/** The types of a service-resolver's `Subsets` and `DefaultSubset`, as Consul decodes them. */
function decodeSubsets(e: Obj): Subsets {
  const subsets = e.Subsets ?? {};
  if (!isObj(subsets))
    throw new HttpError(
      400,
      'Request decoding failed: Subsets must be a map of subset names to subsets',
    );
  const filters = new Map<string, string>();
  for (const [name, def] of Object.entries(subsets)) {
    const filter = struct(def, `Subsets[${name}]`).Filter ?? '';
    if (typeof filter !== 'string')
      throw new HttpError(400, `Request decoding failed: Subsets[${name}].Filter must be a string`);
    if (filter !== '') filters.set(name, filter);
  }
  const defaultSubset = e.DefaultSubset ?? '';
  if (typeof defaultSubset !== 'string')
    throw new HttpError(400, 'Request decoding failed: DefaultSubset must be a string');
  return { names: Object.keys(subsets), filters, defaultSubset };
}

/**
 * What Consul refuses in a service-resolver's `Subsets` and `DefaultSubset`, with its messages:
 * a subset name that is not a DNS label, a `Filter` that does not parse (Consul creates its
 * evaluator without a type, so its fields, values and regular expressions are met only when it
 * runs), a default subset not defined.
 */
function checkSubsets(e: Obj, { names, filters, defaultSubset }: Subsets): void {
  for (const name of names) {
    if (name === '') throw new HttpError(400, 'Subset defined with empty name');
    const why =
      Buffer.byteLength(name) > 63
        ? 'must be non-empty and 63 characters or fewer'
        : !/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(name)
          ? "must be 63 characters or fewer, begin or end with lower case alphanumeric characters, and contain lower case alphanumeric characters or '-' in between"
          : undefined;
    if (why) throw new HttpError(400, `Subset ${goQuote(name)} is invalid: ${why}`);
    const filter = filters.get(name);
    if (filter === undefined) continue;
    try {
      checkFilterSyntax(filter);
    } catch (err) {
      throw new HttpError(
        400,
        `Filter for subset ${goQuote(name)} is not a valid expression: ${(err as Error).message}`,
      );
    }
  }
  if (defaultSubset !== '' && !isSubset(e, defaultSubset))
    throw new HttpError(400, `DefaultSubset ${goQuote(defaultSubset)} is not a valid subset`);
}

/** Whether `name` is one of `e`'s subsets (Consul's `isSubset`). */
function isSubset(e: Obj, name: string): boolean {
  return isObj(e.Subsets) && Object.hasOwn(e.Subsets, name);
}

/** The fields of a failover target; a `Redirect` has them and `SamenessGroup`. */
const TARGET_FIELDS = [
  'Service',
  'ServiceSubset',
  'Namespace',
  'Partition',
  'Datacenter',
  'Peer',
] as const;
const REDIRECT_FIELDS = [...TARGET_FIELDS, 'SamenessGroup'] as const;

type Target = Record<(typeof TARGET_FIELDS)[number], string>;
type Redirect = Record<(typeof REDIRECT_FIELDS)[number], string>;

/** A service-resolver's `Redirect` as Consul decodes it: none (absent or null), or its fields. */
function decodeRedirect(raw: unknown): Redirect | undefined {
  if (raw === undefined || raw === null) return undefined;
  return strings(struct(raw, 'Redirect'), REDIRECT_FIELDS, 'Redirect');
}

const FAILOVER_FIELDS = ['Service', 'ServiceSubset', 'Namespace'] as const;

/** One entry of a service-resolver's `Failover`, as Consul decodes it. */
interface Failover {
  key: string;
  fields: Record<(typeof FAILOVER_FIELDS)[number], string>;
  datacenters: string[];
  targets: Target[];
}

/**
 * A service-resolver's `Failover` as Consul decodes it, keys sorted (Go's map order is random;
 * this one makes the first refusal the same on every write). Null stands for a zero value, as in
 * Consul's decoder: an empty failover, target or datacenter, refused by the checks that follow.
 */
function decodeFailover(raw: unknown): Failover[] {
  if (raw === undefined || raw === null) return [];
  if (!isObj(raw))
    throw new HttpError(
      400,
      'Request decoding failed: Failover must be a map of subset names to failovers',
    );
  return Object.keys(raw)
    .sort()
    .map((key) => {
      const at = `Failover[${key}]`;
      const def = struct(raw[key], at);
      const datacenters = def.Datacenters ?? [];
      if (!Array.isArray(datacenters) || !datacenters.every((d) => d === null || isString(d)))
        throw new HttpError(
          400,
          `Request decoding failed: ${at}.Datacenters must be a list of names`,
        );
      const targets = def.Targets ?? [];
      if (!Array.isArray(targets) || !targets.every((x) => x === null || isObj(x)))
        throw new HttpError(
          400,
          `Request decoding failed: ${at}.Targets must be a list of objects`,
        );
      return {
        key,
        fields: strings(def, FAILOVER_FIELDS, at),
        datacenters: datacenters.map((d: string | null) => d ?? ''),
        targets: targets.map((x: Obj | null, i) =>
          strings(x ?? {}, TARGET_FIELDS, `${at}.Targets[${i}]`),
        ),
      };
    });
}

const isString = (v: unknown): v is string => typeof v === 'string';

/**
 * Consul's refusals of a `Redirect` or failover target that combines a peer, partition or
 * datacenter as it forbids, each field named through `name` (`Redirect.Peer`, or `Peer`).
 */
function checkTargetScope(
  r: Target,
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
 * Whether `subset`, named with `service` by a redirect or failover, is a subset this entry
 * should define but does not: one of the entry's own service (`service` empty or its name).
 */
const undefinedOwnSubset = (e: Obj, service: string, subset: string) =>
  subset !== '' && (service === '' || service === e.Name) && !isSubset(e, subset);

/**
 * What Consul refuses in a service-resolver's `Redirect`, with its messages and in its order
 * (`ServiceResolverConfigEntry.Validate`).
 */
function checkRedirect(e: Obj, r: Redirect, withFailover: boolean): void {
  const fail = (m: string): never => {
    throw new HttpError(400, m);
  };
  if (withFailover) fail('Redirect and Failover cannot both be set');
  if (REDIRECT_FIELDS.every((k) => r[k] === '')) fail('Redirect is empty');
  checkTargetScope(r, (f) => `Redirect.${f}`, fail);
  if (r.Service === '') {
    for (const k of ['ServiceSubset', 'Namespace', 'Partition', 'Peer'] as const)
      if (r[k] !== '') fail(`Redirect.${k} defined without Redirect.Service`);
  } else if (undefinedOwnSubset(e, r.Service, r.ServiceSubset))
    fail(
      `Redirect.ServiceSubset ${goQuote(r.ServiceSubset)} is not a valid subset of ${goQuote(e.Name)}`,
    );
}

/**
 * What Consul refuses in a service-resolver's `Failover`, with its messages and in its order,
 * one key after the other.
 */
function checkFailover(e: Obj, failover: Failover[]): void {
  for (const { key, fields: f, datacenters, targets } of failover) {
    const at = `Bad Failover[${goQuote(key)}]`;
    const fail = (m: string): never => {
      throw new HttpError(400, `${at}${m}`);
    };
    if (key !== '*' && !isSubset(e, key)) fail(': not a valid subset subset');
    if (FAILOVER_FIELDS.every((k) => f[k] === '') && !datacenters.length && !targets.length)
      fail(': one of Service, ServiceSubset, Namespace, Targets, or Datacenters is required');
    // Consul names the failover's service as written here, the entry's own name for a target
    if (undefinedOwnSubset(e, f.Service, f.ServiceSubset))
      fail(
        `: ServiceSubset ${goQuote(f.ServiceSubset)} is not a valid subset of ${goQuote(f.Service)}`,
      );
    if (targets.length) {
      if (datacenters.length) fail(': Targets cannot be set with Datacenters');
      if (f.ServiceSubset !== '') fail(': Targets cannot be set with ServiceSubset');
      if (f.Service !== '') fail(': Targets cannot be set with Service');
    }
    targets.forEach((tg, i) => {
      const tfail = (m: string): never => fail(`.Targets[${i}]: ${m}`);
      checkTargetScope(tg, (name) => name, tfail);
      if (tg.Partition !== '' && tg.Datacenter !== '')
        tfail('Partition cannot be set with Datacenter');
      if (undefinedOwnSubset(e, tg.Service, tg.ServiceSubset))
        tfail(
          `ServiceSubset ${goQuote(tg.ServiceSubset)} is not a valid subset of ${goQuote(e.Name)}`,
        );
    });
    if (datacenters.includes('')) fail('.Datacenters: found empty datacenter');
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

type FieldType = 'string' | 'int' | 'bool';

/** The fields of Consul's `ExposePath`, by their JSON name, and the snake_case it also decodes. */
const EXPOSE_PATH_FIELDS: Record<string, FieldType> = {
  ListenerPort: 'int',
  Path: 'string',
  LocalPathPort: 'int',
  Protocol: 'string',
  ParsedFromCheck: 'bool',
};
const EXPOSE_PATH_ALIASES: Record<string, string> = {
  listener_port: 'ListenerPort',
  local_path_port: 'LocalPathPort',
  parsed_from_check: 'ParsedFromCheck',
};

/**
 * The fields of `v` by their JSON name (matched whatever their case, or by a snake_case alias);
 * a key that names none is Consul's unused key, refused with its dotted name.
 */
function fieldsOf(
  v: Obj,
  where: string,
  names: readonly string[],
  aliases: Record<string, string> = {},
): Obj {
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    const name = names.find((n) => n.toLowerCase() === k.toLowerCase()) ?? aliases[k.toLowerCase()];
    if (name === undefined) throw new HttpError(400, `invalid config key "${where}.${k}"`);
    if (Object.hasOwn(out, name))
      throw new HttpError(400, `Request decoding failed: ${where}.${name} is given twice`);
    if (x !== null) out[name] = x;
  }
  return out;
}

/** A value of one of Go's plain types, or the decoder's refusal naming it. */
function typed(v: unknown, type: FieldType, where: string): unknown {
  const ok =
    type === 'int'
      ? typeof v === 'number' && Number.isInteger(v)
      : typeof v === (type === 'bool' ? 'boolean' : 'string');
  if (!ok)
    throw new HttpError(
      400,
      `Request decoding failed: ${where} must be ${type === 'int' ? 'an integer' : `a ${type}`}`,
    );
  return v;
}

/**
 * The `Expose` block of service-defaults and proxy-defaults, decoded as Consul decodes it
 * (`Checks`, `Paths` of `Path`, `LocalPathPort`, `ListenerPort`, `Protocol`) and stored in its
 * JSON spelling, zero values left out. Consul checks only the types here: a path not starting
 * with `/` or a port out of range is stored, and the agents report it (docs/agent.md).
 */
function decodeExpose(kind: ConfigKind, v: unknown): Obj {
  if (kind !== 'service-defaults' && kind !== 'proxy-defaults')
    throw new HttpError(400, 'invalid config key "Expose"');
  if (v === null) return {};
  if (!isObj(v)) throw new HttpError(400, 'Request decoding failed: Expose must be an object');
  const e = fieldsOf(v, 'Expose', ['Checks', 'Paths']);
  const out: Obj = {};
  if (e.Checks !== undefined && typed(e.Checks, 'bool', 'Expose.Checks') === true)
    out.Checks = true;
  if (e.Paths === undefined) return out;
  if (!Array.isArray(e.Paths))
    throw new HttpError(400, 'Request decoding failed: Expose.Paths must be an array');
  const paths = e.Paths.map((raw: unknown, i) => {
    const where = `Expose.Paths[${i}]`;
    if (!isObj(raw))
      throw new HttpError(400, `Request decoding failed: ${where} must be an object`);
    const p = fieldsOf(raw, where, Object.keys(EXPOSE_PATH_FIELDS), EXPOSE_PATH_ALIASES);
    const path: Obj = {};
    for (const [name, type] of Object.entries(EXPOSE_PATH_FIELDS)) {
      if (p[name] === undefined) continue;
      const x = typed(p[name], type, `${where}.${name}`);
      if (x !== '' && x !== 0 && x !== false) path[name] = x;
    }
    return path;
  });
  if (paths.length > 0) out.Paths = paths;
  return out;
}

/** Consul's `MutualTLSMode` values; `""` is unset. */
const MUTUAL_TLS_MODES = ['', 'strict', 'permissive'];

/**
 * `MutualTLSMode` of service-defaults and proxy-defaults, checked as Consul checks it: a string,
 * one of `""`, `strict`, `permissive` (case matters, as in Consul); no other kind has it.
 */
function checkMutualTlsMode(kind: ConfigKind, e: Obj): void {
  const v = e.MutualTLSMode;
  if (v === undefined || v === null) return;
  if (kind !== 'service-defaults' && kind !== 'proxy-defaults')
    throw new HttpError(400, 'invalid config key "MutualTLSMode"');
  if (typeof v !== 'string')
    throw new HttpError(400, 'Request decoding failed: MutualTLSMode must be a string');
  if (!MUTUAL_TLS_MODES.includes(v))
    throw new HttpError(
      400,
      `Invalid MutualTLSMode ${goQuote(v)}. Must be one of "", "strict", or "permissive".`,
    );
}

/**
 * Consul's gate on a write: service-defaults or proxy-defaults may set `MutualTLSMode =
 * "permissive"` only while the mesh entry (`mesh`, or none) sets
 * `AllowEnablingPermissiveMutualTLS`. Turning the flag off later is allowed: entries already
 * written keep their mode (agents report it and apply strict; docs/agent.md).
 */
export function checkPermissiveAllowed(
  entry: Obj & { Kind: ConfigKind },
  mesh: Obj | undefined,
): void {
  if (entry.Kind !== 'service-defaults' && entry.Kind !== 'proxy-defaults') return;
  if (entry.MutualTLSMode !== 'permissive') return;
  if (mesh?.AllowEnablingPermissiveMutualTLS === true) return;
  throw new HttpError(
    400,
    'cannot set MutualTLSMode=permissive because AllowEnablingPermissiveMutualTLS=false in the mesh config entry',
  );
}

/** The mesh entry's `TLS`, as Consul's decoder and checks see it. */
function checkMeshTls(tls: unknown): void {
  if (tls === undefined || tls === null) return;
  if (!isObj(tls)) throw new HttpError(400, 'Request decoding failed: TLS must be an object');
  for (const dir of ['Incoming', 'Outgoing']) {
    const d = tls[dir];
    if (d === undefined || d === null) continue;
    if (!isObj(d))
      throw new HttpError(400, `Request decoding failed: TLS.${dir} must be an object`);
    for (const key of ['TLSMinVersion', 'TLSMaxVersion']) {
      const v = d[key];
      if (v === undefined || v === '') continue;
      if (typeof v !== 'string')
        throw new HttpError(400, `Request decoding failed: TLS.${dir}.${key} must be a string`);
      if (!TLS_VERSIONS.includes(v))
        throw new HttpError(400, `TLS.${dir}.${key}: unsupported TLS version ${goQuote(v)}`);
    }
    const suites = d.CipherSuites;
    if (
      suites !== undefined &&
      suites !== null &&
      (!Array.isArray(suites) || suites.some((x) => typeof x !== 'string'))
    )
      throw new HttpError(
        400,
        `Request decoding failed: TLS.${dir}.CipherSuites must be a list of strings`,
      );
    if (Array.isArray(suites) && suites.length > 0 && d.TLSMinVersion === 'TLSv1_3')
      throw new HttpError(
        400,
        `TLS.${dir}: configuring CipherSuites is only supported for TLS 1.2 and earlier`,
      );
  }
}

/**
 * An object of the mesh entry holding one flag, as Consul decodes and stores it: the flag (in
 * Pascal or snake_case, any letter case) a boolean or null (Go's zero value, false), no other key.
 */
function meshFlagObject(v: unknown, object: string, flag: string, snake: string): Obj {
  if (!isObj(v)) throw new HttpError(400, `Request decoding failed: ${object} must be an object`);
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    if (![flag.toLowerCase(), snake].includes(k.toLowerCase()))
      throw new HttpError(400, `invalid config key ${JSON.stringify(`${object}.${k}`)}`);
    if (Object.hasOwn(out, flag))
      throw new HttpError(400, `Request decoding failed: ${object}.${flag} is given twice`);
    if (x === null) continue;
    if (typeof x !== 'boolean')
      throw new HttpError(400, `Request decoding failed: ${object}.${flag} must be a bool`);
    out[flag] = x;
  }
  return out;
}

/**
 * What Consul's jwt-provider checks refuse: no `JSONWebKeySet`, both or neither of `Local` and
 * `Remote` (and of `Local.JWKS` and `Local.Filename`), a remote set without `URI`, a location
 * with other than one of `Header`, `QueryParam`, `Cookie` or without a `Name`, `Forwarding`
 * without `HeaderName`, a negative `ClockSkewSeconds`, and values of the wrong type.
 */
function checkJwtProvider(e: Obj): void {
  const bad = (why: string): never => {
    throw new HttpError(400, `invalid jwt-provider ${JSON.stringify(e.Name)}: ${why}`);
  };
  const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (e.Issuer !== undefined && typeof e.Issuer !== 'string') bad('Issuer must be a string');
  if (
    e.Audiences !== undefined &&
    e.Audiences !== null &&
    (!Array.isArray(e.Audiences) || !e.Audiences.every((a) => typeof a === 'string'))
  )
    bad('Audiences must be a list of strings');
  const set = e.JSONWebKeySet;
  if (!isObj(set)) return bad('JSONWebKeySet is required');
  const local = set.Local;
  const remote = set.Remote;
  if ((local === undefined || local === null) === (remote === undefined || remote === null))
    bad('set exactly one of JSONWebKeySet.Local and JSONWebKeySet.Remote');
  if (local !== undefined && local !== null) {
    if (!isObj(local)) return bad('JSONWebKeySet.Local must be an object');
    const inline = typeof local.JWKS === 'string' && local.JWKS !== '';
    const file = typeof local.Filename === 'string' && local.Filename !== '';
    if (inline === file) bad('set exactly one of JSONWebKeySet.Local.JWKS and Local.Filename');
  }
  if (remote !== undefined && remote !== null) {
    if (!isObj(remote)) return bad('JSONWebKeySet.Remote must be an object');
    if (typeof remote.URI !== 'string' || remote.URI === '')
      bad('JSONWebKeySet.Remote.URI is required');
    if (remote.CacheDuration !== undefined && !isGoDuration(remote.CacheDuration))
      bad('JSONWebKeySet.Remote.CacheDuration must be a duration');
  }
  if (e.Locations !== undefined && e.Locations !== null) {
    if (!Array.isArray(e.Locations)) return bad('Locations must be a list');
    e.Locations.forEach((l: unknown, i: number) => {
      if (!isObj(l)) return bad(`Locations[${i}] must be an object`);
      const kinds = ['Header', 'QueryParam', 'Cookie'].filter(
        (k) => l[k] !== undefined && l[k] !== null,
      );
      if (kinds.length !== 1)
        bad(`Locations[${i}] must set exactly one of Header, QueryParam and Cookie`);
      const v = l[kinds[0]!];
      if (!isObj(v) || typeof v.Name !== 'string' || v.Name === '')
        bad(`Locations[${i}].${kinds[0]}.Name is required`);
    });
  }
  if (e.Forwarding !== undefined && e.Forwarding !== null) {
    const f = e.Forwarding;
    if (!isObj(f) || typeof f.HeaderName !== 'string' || f.HeaderName === '')
      bad('Forwarding.HeaderName is required');
  }
  const skew = e.ClockSkewSeconds;
  if (skew !== undefined && (typeof skew !== 'number' || !Number.isInteger(skew) || skew < 0))
    bad('ClockSkewSeconds must be a whole number ≥ 0');
}
