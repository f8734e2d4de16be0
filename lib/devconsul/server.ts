/**
 * The HTTP face of the embedded catalog: Consul's routes, methods, query parameters, headers,
 * status codes and plain-text error bodies (agent/http.go, agent/http_register.go).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log/index.ts';
import { Catalog } from './catalog.ts';
import {
  DecodeError,
  checkDefinitionSpec,
  checkUpdateSpec,
  decodeBody,
  serviceDefinitionSpec,
} from './decode.ts';
import {
  checkPermissiveAllowed,
  checkRoutingProtocol,
  configKind,
  decodeConfigEntry,
  MESH_NAME,
} from './config-entries.ts';
import { checkIngressGateway, checkIngressProtocols } from './ingress-gateway.ts';
import { checkTerminatingGateway, gatewaysLinking } from './terminating-gateway.ts';
import { NS_PER_MS, parseGoDuration } from './duration.ts';
import { HttpError } from './http-error.ts';
import { KV_MAX_VALUE_SIZE } from './catalog.ts';
import {
  compileFilter,
  FilterError,
  HEALTH_ENTRY_SCHEMA,
  type FilterSchema,
} from '../consul/filter.ts';
import type { CheckRecord, HealthStatus, ServiceRecord, WireProxy } from './types.ts';

/** Blocking query defaults from Consul's docs: 5 minutes by default, at most 10. */
export const DEFAULT_BLOCKING_WAIT_MS = 5 * 60_000;
export const MAX_BLOCKING_WAIT_MS = 10 * 60_000;
const MAX_BODY_BYTES = 8 * 1024 * 1024;

interface Reply {
  status?: number;
  json?: unknown;
  text?: string;
  raw?: Buffer;
  headers?: Record<string, string>;
}

interface Ctx {
  req: IncomingMessage;
  url: URL;
  method: string;
  rest: string;
  query: URLSearchParams;
  body: () => Promise<Buffer>;
  signal: AbortSignal;
}

type Handler = (ctx: Ctx) => Promise<Reply> | Reply;

interface Route {
  path: string;
  prefix: boolean;
  methods: string[];
  handler: Handler;
}

interface QueryOptions {
  minIndex: number;
  waitMs: number;
  consistency: 'leader' | 'stale' | 'consistent';
  hash: string;
}

export interface HandlerOptions {
  catalog: Catalog;
  logger: Logger;
  random: () => number;
  datacenter: string;
  nodeName: string;
  /** The address the server listens on, reported by /v1/status/leader. */
  advertise: () => string;
  /** `Member.Addr` of /v1/agent/self: where its probes come from (default 127.0.0.1). */
  memberAddress?: string;
}

/** ConnectProxyConfig's omitempty fields vanish when unset, as in Consul's JSON. */
function proxyOut(p: WireProxy): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    if (
      k === 'Mode' ||
      k === 'MeshGateway' ||
      k === 'Expose' ||
      (v !== '' && v !== 0 && v !== undefined)
    )
      out[k] = v;
  }
  return out;
}

function has(q: URLSearchParams, name: string): boolean {
  return q.has(name);
}

/** Go's strconv.ParseBool. */
function parseBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

function boolParam(q: URLSearchParams, name: string): boolean | undefined {
  if (!q.has(name)) return false;
  const v = q.get(name) ?? '';
  if (v === '') return true;
  return parseBool(v);
}

function parseUint(name: string, v: string): number {
  if (!/^\d+$/.test(v))
    throw new Error(`strconv.ParseUint: parsing ${JSON.stringify(v)}: invalid syntax`);
  return Number(v);
}

export function createHandler(o: HandlerOptions) {
  const { catalog } = o;

  /**
   * `?filter`, compiled against `schema` for the endpoints that implement it (Consul answers a bad
   * expression with a 500 naming it: the error comes back from its servers untyped); refused on
   * the others. An empty filter is no filter, as in Consul.
   */
  function filterParam(ctx: Ctx, schema?: FilterSchema): ((entry: unknown) => boolean) | undefined {
    const expr = ctx.query.get('filter') ?? '';
    if (expr === '') return undefined;
    if (!schema)
      throw new HttpError(
        400,
        'the embedded catalog (remora devconsul) implements ?filter only on /v1/health/service/:name and /v1/health/connect/:name; use real Consul or drop the parameter',
      );
    try {
      return compileFilter(expr, schema);
    } catch (err) {
      if (err instanceof FilterError)
        throw new HttpError(500, `Failed to create boolean expression evaluator: ${err.message}`);
      throw err;
    }
  }

  /** The query options of a read; `filterable` routes read `?filter` themselves. */
  function parseQuery(ctx: Ctx, filterable = false): QueryOptions {
    const q = ctx.query;
    const dc = q.get('dc');
    if (dc && dc !== o.datacenter) throw new HttpError(500, 'No path to datacenter');
    if (has(q, 'stale') && has(q, 'consistent'))
      throw new HttpError(400, 'Cannot specify ?stale with ?consistent, conflicting semantics.');
    let waitMs = 0;
    const wait = q.get('wait');
    if (wait) {
      try {
        waitMs = parseGoDuration(wait) / NS_PER_MS;
      } catch {
        throw new HttpError(400, 'Invalid wait time');
      }
    }
    let minIndex = 0;
    const idx = q.get('index');
    if (idx) {
      if (!/^\d+$/.test(idx)) throw new HttpError(400, 'Invalid index');
      minIndex = Number(idx);
    }
    if (!filterable) filterParam(ctx);
    return {
      minIndex,
      waitMs,
      consistency: has(q, 'stale') ? 'stale' : has(q, 'consistent') ? 'consistent' : 'leader',
      hash: q.get('hash') ?? '',
    };
  }

  /** Waits until `current()` differs from what the client holds, or the wait elapses. */
  function block(ctx: Ctx, qo: QueryOptions, changed: () => boolean): Promise<void> {
    if (changed() || catalog.isClosed) return Promise.resolve();
    let wait = qo.waitMs > 0 ? qo.waitMs : DEFAULT_BLOCKING_WAIT_MS;
    if (wait > MAX_BLOCKING_WAIT_MS) wait = MAX_BLOCKING_WAIT_MS;
    wait += Math.floor(o.random() * (wait / 16));
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        off();
        ctx.signal.removeEventListener('abort', finish);
        resolve();
      };
      const timer = setTimeout(finish, wait);
      const off = catalog.onChange(() => {
        if (catalog.isClosed || changed()) finish();
      });
      ctx.signal.addEventListener('abort', finish);
    });
  }

  async function indexed(
    ctx: Ctx,
    indexOf: () => number,
    build: () => { status?: number; json?: unknown; raw?: Buffer; text?: string },
    qo: QueryOptions = parseQuery(ctx),
  ): Promise<Reply> {
    if (qo.minIndex > 0) await block(ctx, qo, () => indexOf() > qo.minIndex);
    const out = build();
    return {
      ...out,
      headers: {
        'X-Consul-Index': String(Math.max(indexOf(), 1)),
        'X-Consul-KnownLeader': 'true',
        'X-Consul-LastContact': '0',
        'X-Consul-Effective-Consistency': qo.consistency,
        'X-Consul-Default-Acl-Policy': 'allow',
      },
    };
  }

  // ------------------------------------------------------------------ shapes

  function agentService(s: ServiceRecord): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    if (s.Kind) out.Kind = s.Kind;
    out.ID = s.ID;
    out.Service = s.Service;
    out.Tags = [...s.Tags];
    out.Meta = { ...s.Meta };
    out.Port = s.Port;
    out.Address = s.Address;
    if (s.SocketPath) out.SocketPath = s.SocketPath;
    if (Object.keys(s.TaggedAddresses).length > 0) out.TaggedAddresses = s.TaggedAddresses;
    out.Weights = s.Weights;
    out.EnableTagOverride = s.EnableTagOverride;
    if (s.Kind === 'connect-proxy' || s.Kind.endsWith('gateway')) out.Proxy = proxyOut(s.Proxy);
    if (s.Connect.Native) out.Connect = { Native: true };
    if (s.Locality) out.Locality = s.Locality;
    out.Datacenter = o.datacenter;
    return out;
  }

  function nodeService(s: ServiceRecord): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    if (s.Kind) out.Kind = s.Kind;
    out.ID = s.ID;
    out.Service = s.Service;
    out.Tags = s.Tags.length > 0 ? [...s.Tags] : null;
    out.Address = s.Address;
    if (Object.keys(s.TaggedAddresses).length > 0) out.TaggedAddresses = s.TaggedAddresses;
    out.Meta = Object.keys(s.Meta).length > 0 ? { ...s.Meta } : null;
    out.Port = s.Port;
    if (s.SocketPath) out.SocketPath = s.SocketPath;
    out.Weights = s.Weights;
    out.EnableTagOverride = s.EnableTagOverride;
    out.Proxy = proxyOut(s.Proxy);
    out.Connect = s.Connect;
    if (s.Locality) out.Locality = s.Locality;
    out.CreateIndex = s.CreateIndex;
    out.ModifyIndex = s.ModifyIndex;
    return out;
  }

  function checkOut(c: CheckRecord): Record<string, unknown> {
    return { ...c, ServiceTags: [...c.ServiceTags] };
  }

  function catalogService(s: ServiceRecord): Record<string, unknown> {
    const n = catalog.node;
    return {
      ID: n.ID,
      Node: n.Node,
      Address: n.Address,
      Datacenter: n.Datacenter,
      TaggedAddresses: n.TaggedAddresses,
      NodeMeta: n.Meta,
      ServiceKind: s.Kind,
      ServiceID: s.ID,
      ServiceName: s.Service,
      ServiceTags: [...s.Tags],
      ServiceAddress: s.Address,
      ServiceTaggedAddresses:
        Object.keys(s.TaggedAddresses).length > 0 ? s.TaggedAddresses : undefined,
      ServiceWeights: s.Weights,
      ServiceMeta: { ...s.Meta },
      ServicePort: s.Port,
      ServiceSocketPath: s.SocketPath,
      ServiceEnableTagOverride: s.EnableTagOverride,
      ServiceProxy: proxyOut(s.Proxy),
      ServiceConnect: s.Connect,
      ServiceLocality: s.Locality,
      CreateIndex: s.CreateIndex,
      ModifyIndex: s.ModifyIndex,
    };
  }

  function hasTags(s: ServiceRecord, tags: string[]): boolean {
    return tags.every((t) => s.Tags.includes(t));
  }

  function healthEntries(ctx: Ctx, connect: boolean): Promise<Reply> {
    const name = ctx.rest;
    if (name === '') throw new HttpError(400, 'Missing service name');
    const passing = boolParam(ctx.query, 'passing');
    if (passing === undefined) throw new HttpError(400, 'Invalid value for ?passing');
    const tags = ctx.query.getAll('tag');
    const qo = parseQuery(ctx, true);
    const filter = filterParam(ctx, HEALTH_ENTRY_SCHEMA);
    const indexOf = connect ? () => connectIndex(name) : () => catalog.serviceViewIndex(name);
    return indexed(
      ctx,
      indexOf,
      () => {
        const list = connect ? connectInstances(name) : catalog.instances(name);
        const entries = [];
        for (const s of list) {
          if (!hasTags(s, tags)) continue;
          const checks = catalog.checksOf(s);
          if (passing && checks.some((c) => c.Status !== 'passing')) continue;
          const entry = {
            Node: { ...catalog.node },
            Service: nodeService(s),
            Checks: checks.map(checkOut),
          };
          if (!filter || filter(entry)) entries.push(entry);
        }
        return { json: entries };
      },
      qo,
    );
  }

  /**
   * The instances that take mesh calls for `name`, as Consul's connect view lists them: its
   * sidecars and Connect-native instances, then the terminating gateways that link it.
   */
  function connectInstances(name: string): ServiceRecord[] {
    const gateways = linkingGateways(name).flatMap((g) =>
      catalog.instances(g).filter((s) => s.Kind === 'terminating-gateway'),
    );
    return [...catalog.connectInstances(name), ...gateways];
  }

  function linkingGateways(name: string): string[] {
    const entries = catalog.configList('terminating-gateway');
    if (entries.length === 0) return [];
    return gatewaysLinking(entries, name, (n) => catalog.instances(n).some((s) => s.Kind === ''));
  }

  /**
   * The index of `name`'s connect view: its own, moved on by a write of a terminating-gateway
   * entry, a change of a gateway that links it, and (for `*`) of the catalog's service list.
   */
  function connectIndex(name: string): number {
    const own = catalog.connectViewIndex(name);
    if (catalog.configList('terminating-gateway').length === 0)
      return Math.max(own, catalog.configKindIndex('terminating-gateway'));
    let index = Math.max(
      own,
      catalog.configKindIndex('terminating-gateway'),
      catalog.servicesIndex(),
    );
    for (const g of linkingGateways(name)) index = Math.max(index, catalog.serviceViewIndex(g));
    return index;
  }

  // ------------------------------------------------------------------ config entries

  function casParam(q: URLSearchParams): number | undefined {
    if (!has(q, 'cas')) return undefined;
    try {
      return parseUint('cas', q.get('cas') ?? '');
    } catch (err) {
      throw new HttpError(400, (err as Error).message);
    }
  }

  async function configPut(ctx: Ctx): Promise<Reply> {
    parseQuery(ctx);
    const cas = casParam(ctx.query);
    const entry = decodeConfigEntry((await ctx.body()).toString('utf8'));
    if (entry.Kind === 'service-splitter' || entry.Kind === 'service-router')
      checkRoutingProtocol(entry.Name, protocolOf(entry.Name));
    checkPermissiveAllowed(entry, catalog.configGet('mesh', MESH_NAME));
    if (entry.Kind === 'terminating-gateway') checkTerminatingGateway(entry);
    if (entry.Kind === 'ingress-gateway') {
      checkIngressGateway(entry);
      checkIngressProtocols(entry, protocolOf);
    }
    return { json: catalog.configPut(entry, cas) };
  }

  /** A service's protocol from its service-defaults, else proxy-defaults, else tcp. */
  function protocolOf(name: string): string {
    const own = catalog.configGet('service-defaults', name)?.Protocol;
    if (typeof own === 'string' && own !== '') return own;
    const config = catalog.configGet('proxy-defaults', 'global')?.Config as
      Record<string, unknown> | undefined;
    return typeof config?.protocol === 'string' && config.protocol !== '' ? config.protocol : 'tcp';
  }

  function configRead(ctx: Ctx): Promise<Reply> | Reply {
    const parts = ctx.rest.split('/');
    if (parts.length > 2 || parts[0] === '')
      throw new HttpError(400, 'Must provide either a kind or both kind and name');
    const kind = configKind(parts[0]!);
    const name = parts[1] ?? '';
    if (ctx.method === 'DELETE') {
      parseQuery(ctx);
      if (name === '') throw new HttpError(400, 'Must provide both kind and name');
      const cas = casParam(ctx.query);
      const deleted = catalog.configDelete(kind, name, cas);
      return { json: cas === undefined ? {} : { Deleted: deleted } };
    }
    if (parts.length === 2 && name === '') throw new HttpError(400, 'Must provide a name');
    return indexed(
      ctx,
      () => catalog.configKindIndex(kind),
      () => {
        if (name === '') return { json: catalog.configList(kind) };
        const e = catalog.configGet(kind, name);
        return e
          ? { json: e }
          : {
              status: 404,
              text: `Config entry not found for ${JSON.stringify(kind)} / ${JSON.stringify(name)}`,
            };
      },
    );
  }

  // ------------------------------------------------------------------ KV

  async function kv(ctx: Ctx): Promise<Reply> {
    const key = ctx.rest;
    const q = ctx.query;
    switch (ctx.method) {
      case 'GET': {
        if (has(q, 'keys')) {
          const sep = q.get('separator') ?? '';
          return indexed(
            ctx,
            () => catalog.kvKeys(key, sep).index,
            () => {
              const r = catalog.kvKeys(key, sep);
              return r.keys.length > 0 ? { json: r.keys } : { status: 404 };
            },
          );
        }
        if (has(q, 'recurse')) {
          return indexed(
            ctx,
            () => catalog.kvList(key).index,
            () => {
              const r = catalog.kvList(key);
              return r.entries.length > 0 ? { json: r.entries } : { status: 404 };
            },
          );
        }
        if (key === '') throw new HttpError(400, 'Missing key name');
        return indexed(
          ctx,
          () => catalog.kvGet(key).index,
          () => {
            const r = catalog.kvGet(key);
            if (!r.entry) return { status: 404 };
            if (has(q, 'raw')) return { raw: r.raw ?? Buffer.alloc(0) };
            return { json: [r.entry] };
          },
        );
      }
      case 'PUT': {
        parseQuery(ctx);
        if (key === '') throw new HttpError(400, 'Missing key name');
        conflicting(q, ['cas', 'acquire', 'release']);
        if (has(q, 'acquire') || has(q, 'release'))
          throw new HttpError(
            400,
            'the embedded catalog (remora devconsul) does not implement sessions (?acquire/?release)',
          );
        let flags = 0;
        let cas: number | undefined;
        try {
          if (has(q, 'flags')) flags = parseUint('flags', q.get('flags') ?? '');
          if (has(q, 'cas')) cas = parseUint('cas', q.get('cas') ?? '');
        } catch (err) {
          throw new HttpError(500, (err as Error).message);
        }
        const length = Number(ctx.req.headers['content-length'] ?? '0');
        if (length > KV_MAX_VALUE_SIZE) throw tooLarge(length);
        const body = await ctx.body();
        if (body.length > KV_MAX_VALUE_SIZE) throw tooLarge(body.length);
        return { json: catalog.kvPut(key, body, flags, cas) };
      }
      case 'DELETE': {
        parseQuery(ctx);
        conflicting(q, ['recurse', 'cas']);
        const recurse = has(q, 'recurse');
        if (!recurse && key === '') throw new HttpError(400, 'Missing key name');
        let cas: number | undefined;
        try {
          if (has(q, 'cas')) cas = parseUint('cas', q.get('cas') ?? '');
        } catch (err) {
          throw new HttpError(500, (err as Error).message);
        }
        return { json: catalog.kvDelete(key, recurse, cas) };
      }
      default:
        throw new HttpError(405, `method ${ctx.method} not allowed`);
    }
  }

  function tooLarge(n: number): HttpError {
    return new HttpError(
      413,
      `Request body(${n} bytes) too large, max size: ${KV_MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.`,
    );
  }

  function conflicting(q: URLSearchParams, flags: string[]): void {
    if (flags.filter((f) => q.has(f)).length > 1) {
      const sorted = [...q.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const enc = sorted
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
        .join('&');
      throw new HttpError(400, `Conflicting flags: ${enc}`);
    }
  }

  // ------------------------------------------------------------------ body helpers

  async function decoded(
    ctx: Ctx,
    spec: Parameters<typeof decodeBody>[1],
  ): Promise<Record<string, unknown>> {
    const body = (await ctx.body()).toString('utf8');
    try {
      return decodeBody(body, spec);
    } catch (err) {
      if (err instanceof DecodeError)
        throw new HttpError(400, `Request decode failed: ${err.message}`);
      throw err;
    }
  }

  function ttl(status: HealthStatus): Handler {
    return (ctx) => {
      catalog.updateTtl(ctx.rest, status, ctx.query.get('note') ?? '');
      return {};
    };
  }

  // ------------------------------------------------------------------ routes

  const routes: Route[] = [
    {
      path: '/v1/agent/self',
      prefix: false,
      methods: ['GET'],
      handler: () => ({
        json: {
          Config: {
            Datacenter: o.datacenter,
            NodeName: o.nodeName,
            NodeID: catalog.node.ID,
            Server: true,
            Revision: 'remora-devconsul',
            Version: '1.20.0',
            PrimaryDatacenter: o.datacenter,
          },
          DebugConfig: {},
          Coord: null,
          Member: {
            Name: o.nodeName,
            Addr: o.memberAddress ?? '127.0.0.1',
            Port: 8301,
            Tags: { dc: o.datacenter, role: 'consul', build: '1.20.0' },
            Status: 1,
          },
          Meta: catalog.node.Meta,
          Stats: {},
          xDS: null,
        },
      }),
    },
    {
      path: '/v1/agent/services',
      prefix: false,
      methods: ['GET'],
      handler: (ctx) => {
        parseQuery(ctx);
        const out: Record<string, unknown> = {};
        for (const s of catalog.agentServices()) out[s.ID] = agentService(s);
        return { json: out };
      },
    },
    {
      path: '/v1/agent/service/register',
      prefix: false,
      methods: ['PUT'],
      handler: async (ctx) => {
        const def = await decoded(ctx, serviceDefinitionSpec);
        const replace = ctx.query.has('replace-existing-checks')
          ? ['', 'true'].includes(ctx.query.get('replace-existing-checks') ?? '')
          : false;
        catalog.registerService(def, replace);
        return {};
      },
    },
    {
      path: '/v1/agent/service/deregister/',
      prefix: true,
      methods: ['PUT'],
      handler: (ctx) => {
        catalog.deregisterService(ctx.rest);
        return {};
      },
    },
    {
      path: '/v1/agent/service/maintenance/',
      prefix: true,
      methods: ['PUT'],
      handler: (ctx) => {
        if (ctx.rest === '') throw new HttpError(400, 'Missing service ID');
        if (!ctx.query.has('enable')) throw new HttpError(400, 'Missing value for enable');
        const raw = ctx.query.get('enable') ?? '';
        const enable = parseBool(raw);
        if (enable === undefined)
          throw new HttpError(400, `Invalid value for enable: ${JSON.stringify(raw)}`);
        catalog.setMaintenance(ctx.rest, enable, ctx.query.get('reason') ?? '');
        return {};
      },
    },
    {
      path: '/v1/agent/service/',
      prefix: true,
      methods: ['GET'],
      handler: async (ctx) => {
        const qo = parseQuery(ctx);
        const view = (): Record<string, unknown> | undefined => {
          const s = catalog.agentService(ctx.rest);
          if (!s) return undefined;
          const out = agentService(s);
          return { ...out, ContentHash: Catalog.contentHash(out) };
        };
        if (qo.hash) await block(ctx, qo, () => view()?.ContentHash !== qo.hash);
        const v = view();
        if (!v) throw new HttpError(404, `unknown service ID: ${ctx.rest}`);
        return { json: v, headers: { 'X-Consul-ContentHash': String(v.ContentHash) } };
      },
    },
    {
      path: '/v1/agent/checks',
      prefix: false,
      methods: ['GET'],
      handler: (ctx) => {
        parseQuery(ctx);
        const out: Record<string, unknown> = {};
        for (const c of catalog.agentChecks()) out[c.CheckID] = checkOut(c);
        return { json: out };
      },
    },
    {
      path: '/v1/agent/check/register',
      prefix: false,
      methods: ['PUT'],
      handler: async (ctx) => {
        catalog.registerCheck(await decoded(ctx, checkDefinitionSpec));
        return {};
      },
    },
    {
      path: '/v1/agent/check/deregister/',
      prefix: true,
      methods: ['PUT'],
      handler: (ctx) => {
        catalog.deregisterCheck(ctx.rest);
        return {};
      },
    },
    { path: '/v1/agent/check/pass/', prefix: true, methods: ['PUT'], handler: ttl('passing') },
    { path: '/v1/agent/check/warn/', prefix: true, methods: ['PUT'], handler: ttl('warning') },
    { path: '/v1/agent/check/fail/', prefix: true, methods: ['PUT'], handler: ttl('critical') },
    {
      path: '/v1/agent/check/update/',
      prefix: true,
      methods: ['PUT'],
      handler: async (ctx) => {
        const u = await decoded(ctx, checkUpdateSpec);
        const status = typeof u.Status === 'string' ? u.Status : '';
        if (!['passing', 'warning', 'critical'].includes(status))
          throw new HttpError(400, `Invalid check status: '${status}'`);
        catalog.updateTtl(
          ctx.rest,
          status as HealthStatus,
          typeof u.Output === 'string' ? u.Output : '',
        );
        return {};
      },
    },
    {
      path: '/v1/health/service/',
      prefix: true,
      methods: ['GET'],
      handler: (ctx) => healthEntries(ctx, false),
    },
    {
      path: '/v1/health/connect/',
      prefix: true,
      methods: ['GET'],
      handler: (ctx) => healthEntries(ctx, true),
    },
    {
      path: '/v1/health/state/',
      prefix: true,
      methods: ['GET'],
      handler: (ctx) => {
        const state = ctx.rest;
        if (state === '') throw new HttpError(400, 'Missing check state');
        if (!['any', 'passing', 'warning', 'critical'].includes(state))
          throw new HttpError(400, 'Invalid check state');
        return indexed(
          ctx,
          () => catalog.checksIndex(),
          () => ({
            json: [...catalog.nodeChecksList(), ...catalog.agentChecks()]
              .filter((c) => state === 'any' || c.Status === state)
              .map(checkOut),
          }),
        );
      },
    },
    {
      path: '/v1/health/checks/',
      prefix: true,
      methods: ['GET'],
      handler: (ctx) => {
        const name = ctx.rest;
        if (name === '') throw new HttpError(400, 'Missing service name');
        return indexed(
          ctx,
          () => catalog.serviceViewIndex(name),
          () => ({
            json: catalog
              .agentChecks()
              .filter((c) => c.ServiceName === name)
              .map(checkOut),
          }),
        );
      },
    },
    {
      path: '/v1/catalog/services',
      prefix: false,
      methods: ['GET'],
      handler: (ctx) =>
        indexed(
          ctx,
          () => catalog.servicesIndex(),
          () => ({ json: catalog.servicesTable().services }),
        ),
    },
    {
      path: '/v1/catalog/service/',
      prefix: true,
      methods: ['GET'],
      handler: (ctx) => {
        const name = ctx.rest;
        if (name === '') throw new HttpError(400, 'Missing service name');
        const tags = ctx.query.getAll('tag');
        return indexed(
          ctx,
          () => catalog.serviceViewIndex(name),
          () => ({
            json: catalog
              .instances(name)
              .filter((s) => hasTags(s, tags))
              .map(catalogService),
          }),
        );
      },
    },
    {
      path: '/v1/catalog/connect/',
      prefix: true,
      methods: ['GET'],
      handler: (ctx) => {
        const name = ctx.rest;
        if (name === '') throw new HttpError(400, 'Missing service name');
        const tags = ctx.query.getAll('tag');
        return indexed(
          ctx,
          () => connectIndex(name),
          () => ({
            json: connectInstances(name)
              .filter((s) => hasTags(s, tags))
              .map(catalogService),
          }),
        );
      },
    },
    {
      path: '/v1/catalog/nodes',
      prefix: false,
      methods: ['GET'],
      handler: (ctx) =>
        indexed(
          ctx,
          () => catalog.node.ModifyIndex,
          () => ({
            json: [{ ...catalog.node }],
          }),
        ),
    },
    {
      path: '/v1/catalog/datacenters',
      prefix: false,
      methods: ['GET'],
      handler: () => ({ json: [o.datacenter] }),
    },
    {
      path: '/v1/status/leader',
      prefix: false,
      methods: ['GET'],
      handler: (ctx) => {
        parseQuery(ctx);
        return { json: o.advertise() };
      },
    },
    {
      path: '/v1/status/peers',
      prefix: false,
      methods: ['GET'],
      handler: (ctx) => {
        parseQuery(ctx);
        return { json: [o.advertise()] };
      },
    },
    { path: '/v1/kv/', prefix: true, methods: ['GET', 'PUT', 'DELETE'], handler: kv },
    { path: '/v1/config', prefix: false, methods: ['PUT'], handler: configPut },
    { path: '/v1/config/', prefix: true, methods: ['GET', 'DELETE'], handler: configRead },
  ];

  function match(pathname: string): { route: Route; rest: string } | undefined {
    // Longest pattern wins, as in Go's ServeMux.
    let best: { route: Route; rest: string } | undefined;
    for (const r of routes) {
      const ok = r.prefix ? pathname.startsWith(r.path) : pathname === r.path;
      if (ok && (!best || r.path.length > best.route.path.length)) {
        best = { route: r, rest: r.prefix ? pathname.slice(r.path.length) : '' };
      }
    }
    return best;
  }

  function send(res: ServerResponse, reply: Reply, pretty: boolean): void {
    if (res.headersSent || res.destroyed) return;
    for (const [k, v] of Object.entries(reply.headers ?? {})) res.setHeader(k, v);
    res.setHeader('Vary', 'Accept-Encoding');
    const status = reply.status ?? 200;
    if (reply.raw) {
      // kvs_endpoint.go: raw values are never sniffed or rendered (XSS hardening).
      res.writeHead(status, {
        'Content-Type': 'text/plain',
        'Content-Length': reply.raw.length,
        'X-Content-Type-Options': 'nosniff',
        'Content-Security-Policy': 'sandbox',
      });
      res.end(reply.raw);
    } else if (reply.text !== undefined) {
      res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(reply.text);
    } else if (reply.json !== undefined) {
      const body = pretty ? `${JSON.stringify(reply.json, null, 4)}\n` : JSON.stringify(reply.json);
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(body);
    } else {
      res.writeHead(status);
      res.end();
    }
  }

  return async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://127.0.0.1');
    } catch {
      send(res, { status: 400, text: 'Bad Request' }, false);
      return;
    }
    const pretty = url.searchParams.has('pretty');
    const method = req.method ?? 'GET';
    let cached: Buffer | undefined;
    const ctx: Ctx = {
      req,
      url,
      method,
      rest: '',
      query: url.searchParams,
      signal: abort.signal,
      body: async () => {
        if (cached) return cached;
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of req) {
          size += (c as Buffer).length;
          if (size > MAX_BODY_BYTES) throw new HttpError(413, 'Request body too large');
          chunks.push(c as Buffer);
        }
        cached = Buffer.concat(chunks);
        return cached;
      },
    };
    try {
      let pathname: string;
      try {
        pathname = decodeURIComponent(url.pathname);
      } catch {
        pathname = url.pathname;
      }
      const m = match(pathname);
      if (!m) {
        send(
          res,
          {
            status: 404,
            text: pathname.includes('/v1/')
              ? 'Invalid URL path: not a recognized HTTP API endpoint\n'
              : "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n",
          },
          pretty,
        );
        return;
      }
      const allowed = [...m.route.methods, 'OPTIONS'];
      if (method === 'OPTIONS') {
        send(res, { headers: { Allow: allowed.join(',') } }, pretty);
        return;
      }
      if (!m.route.methods.includes(method)) {
        send(
          res,
          {
            status: 405,
            text: `method ${method} not allowed`,
            headers: { Allow: allowed.join(',') },
          },
          pretty,
        );
        return;
      }
      ctx.rest = m.rest;
      const reply = await m.route.handler(ctx);
      send(res, reply, pretty);
    } catch (err) {
      if (err instanceof HttpError) {
        send(res, { status: err.status, text: err.message, headers: err.headers }, pretty);
        return;
      }
      o.logger.error({ err, path: url.pathname, method }, 'embedded catalog request failed');
      send(res, { status: 500, text: err instanceof Error ? err.message : String(err) }, pretty);
    }
  };
}
