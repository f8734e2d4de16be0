/**
 * The Consul client Remora uses. Built on the npm `consul` package for the endpoints it covers
 * (agent services/checks/maintenance/self, TTL updates, KV, catalog, health/service); the rest
 * (service registration with every field, `/v1/agent/service/:id`, `/v1/health/connect`) goes
 * over `got` with the same base URL, token and TLS settings.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import Consul from 'consul';
import got, { type Got } from 'got';
import { RemoraError } from '../errors/index.ts';
import { createSilentLogger, type Logger } from '../log/index.ts';
import type {
  AgentCheck,
  AgentService,
  CatalogService,
  ConfigEntry,
  HealthStatus,
  KvPair,
  ServiceDefinition,
  ServiceEntry,
} from './types.ts';

export const DEFAULT_CONSUL_TIMEOUT_MS = 10_000;
/**
 * The most a client reads of one Consul answer (64 MiB: a health or catalog answer for tens of
 * thousands of instances). A larger answer is refused with REMORA_E_CONSUL_RESPONSE_TOO_LARGE
 * instead of being buffered, whatever Consul (or whatever answers at its address) sends.
 */
export const DEFAULT_CONSUL_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;

export interface ConsulClientOptions {
  /** Base URL of the Consul HTTP API, e.g. http://127.0.0.1:8500. */
  address: string;
  token?: string;
  /** PEM bundle that verifies Consul's HTTPS certificate. */
  caFile?: string;
  logger?: Logger;
  /** Deadline of a non-blocking request; blocking ones add their wait to it. */
  timeoutMs?: number;
  /**
   * Bytes read of one answer at most (head and body as they arrive on the socket); a larger one
   * is refused. Default DEFAULT_CONSUL_MAX_RESPONSE_BYTES.
   */
  maxResponseBytes?: number;
}

export interface BlockingOptions {
  passing?: boolean;
  /** X-Consul-Index of the previous answer; 0 or absent asks without blocking. */
  index?: number;
  /** Go duration, e.g. "30s"; Consul's default is 5m and its cap 10m. */
  wait?: string;
  tag?: string;
  /** Aborts the request (used by watches when they stop). */
  signal?: AbortSignal;
}

export interface ConsulClient {
  readonly address: string;
  agent: {
    registerService(def: ServiceDefinition): Promise<void>;
    deregisterService(id: string): Promise<void>;
    services(): Promise<Record<string, AgentService>>;
    service(id: string): Promise<AgentService | undefined>;
    checks(): Promise<Record<string, AgentCheck>>;
    updateTtl(checkId: string, status: HealthStatus, output?: string): Promise<void>;
    maintenance(serviceId: string, enable: boolean, reason?: string): Promise<void>;
    self(): Promise<{ Config: { NodeName: string; Datacenter: string } }>;
  };
  kv: {
    get(key: string): Promise<KvPair | undefined>;
    /** Writes the value; with `cas` it succeeds only at that ModifyIndex (0: only if absent). */
    put(key: string, value: string, opts?: { cas?: number }): Promise<boolean>;
    delete(key: string, opts?: { cas?: number; recurse?: boolean }): Promise<boolean>;
    list(prefix: string): Promise<KvPair[]>;
  };
  health: {
    connect(
      service: string,
      opts?: BlockingOptions,
    ): Promise<{ entries: ServiceEntry[]; index: number }>;
    service(
      service: string,
      opts?: BlockingOptions,
    ): Promise<{ entries: ServiceEntry[]; index: number }>;
  };
  catalog: {
    services(): Promise<Record<string, string[]>>;
    /**
     * `/v1/catalog/services` as a blocking query: service names mapped to their tags, and the
     * answer's X-Consul-Index. `index`, `wait` and `signal` are honoured; `passing` and `tag`
     * do not apply to this endpoint and are ignored.
     */
    servicesBlocking(
      opts?: BlockingOptions,
    ): Promise<{ services: Record<string, string[]>; index: number }>;
    service(name: string): Promise<CatalogService[]>;
  };
  /** Configuration entries (`/v1/config`), e.g. a service's protocol in service-defaults. */
  config: {
    /**
     * `/v1/config/<kind>` as a blocking query: the kind's entries and the answer's
     * X-Consul-Index. `index`, `wait` and `signal` are honoured.
     */
    list(kind: string, opts?: BlockingOptions): Promise<{ entries: ConfigEntry[]; index: number }>;
    /** Writes an entry; with `cas` only at that ModifyIndex (0: only if absent). */
    put(entry: ConfigEntry, opts?: { cas?: number }): Promise<boolean>;
    delete(kind: string, name: string): Promise<void>;
  };
  status: { leader(): Promise<string> };
  /** Releases keep-alive sockets. */
  close(): void;
}

/** The parts of the npm `consul` package this client calls (its typings are partial). */
interface ConsulPackage {
  agent: {
    self(o?: object): Promise<unknown>;
    service: {
      list(o?: object): Promise<unknown>;
      deregister(o: object): Promise<unknown>;
      maintenance(o: object): Promise<unknown>;
    };
    check: {
      list(o?: object): Promise<unknown>;
      pass(o: object): Promise<unknown>;
      warn(o: object): Promise<unknown>;
      fail(o: object): Promise<unknown>;
    };
  };
  kv: {
    get(o: object): Promise<unknown>;
    set(o: object): Promise<unknown>;
    del(o: object): Promise<unknown>;
  };
  health: { service(o: object): Promise<unknown> };
  catalog: {
    service: { list(o?: object): Promise<unknown>; nodes(o: object): Promise<unknown> };
  };
  status: { leader(o?: object): Promise<unknown> };
  destroy(): void;
}

interface PapiError extends Error {
  isPapi?: boolean;
  isResponse?: boolean;
  isTimeout?: boolean;
  code?: string;
  response?: { statusCode?: number; body?: unknown };
}

function obj(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : {};
}

/** Fills JSON nulls so consumers always see arrays and objects. */
export function normalizeService(raw: unknown): AgentService {
  const s = obj(raw) as unknown as AgentService & Record<string, unknown>;
  const out = { ...s } as AgentService;
  out.Tags = Array.isArray(s.Tags) ? s.Tags : [];
  out.Meta = s.Meta && typeof s.Meta === 'object' ? s.Meta : {};
  out.Weights = s.Weights ?? { Passing: 1, Warning: 1 };
  if (s.Proxy) {
    const p = obj(s.Proxy);
    out.Proxy = {
      ...p,
      Config: obj(p.Config),
      Upstreams: (Array.isArray(p.Upstreams) ? p.Upstreams : []).map((u) => ({
        ...obj(u),
        Config: obj(obj(u).Config),
      })),
    } as AgentService['Proxy'];
  }
  return out;
}

function normalizeCheck(raw: unknown): AgentCheck {
  const c = obj(raw) as unknown as AgentCheck;
  return { ...c, ServiceTags: Array.isArray(c.ServiceTags) ? c.ServiceTags : [] };
}

export function normalizeEntry(raw: unknown): ServiceEntry {
  const e = obj(raw);
  const node = obj(e.Node);
  return {
    Node: {
      ...node,
      TaggedAddresses: obj(node.TaggedAddresses),
      Meta: obj(node.Meta),
    } as ServiceEntry['Node'],
    Service: normalizeService(e.Service),
    Checks: (Array.isArray(e.Checks) ? e.Checks : []).map(normalizeCheck),
  };
}

function formatBytes(n: number): string {
  return n >= 1024 * 1024 && n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MiB` : `${n} bytes`;
}

/**
 * Makes every request through `agent` stop reading its answer once more than `limit` bytes have
 * arrived (or a Content-Length above it is announced): the request is destroyed with a coded
 * error, which both transports (the npm package and got) pass on as the request's failure. The
 * count is taken on the socket, so it never changes how the transports consume the body.
 */
function boundResponses(agent: HttpAgent, limit: number, address: string): void {
  const a = agent as HttpAgent & { addRequest(req: ClientRequest, options: object): void };
  const addRequest = a.addRequest.bind(a);
  a.addRequest = (req, options) => {
    req.once('response', (res: IncomingMessage) => {
      const path = `${req.method} ${req.path.split('?')[0]}`;
      const refuse = (seen: number, announced: boolean): void => {
        const err = new RemoraError(
          'REMORA_E_CONSUL_RESPONSE_TOO_LARGE',
          `Consul at ${address} answered ${path} with ${announced ? `a body of ${formatBytes(seen)}` : `more than ${formatBytes(limit)}`}, over the limit of ${formatBytes(limit)}; refused without reading the rest. If the catalog really is that large, raise consul.maxResponseBytes; otherwise check what answers at consul.address`,
          { address, path, limitBytes: limit, ...(announced ? { contentLength: seen } : {}) },
        );
        // the npm package prefixes the messages of errors passing through it; keep ours
        originalMessages.set(err, err.message);
        req.destroy(err);
      };
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > limit) return refuse(declared, true);
      const socket = res.socket;
      let seen = 0;
      const onData = (chunk: Buffer): void => {
        seen += chunk.length;
        if (seen > limit) {
          done();
          refuse(seen, false);
        }
      };
      const done = (): void => {
        socket.off('data', onData);
      };
      socket.on('data', onData);
      res.once('end', done);
      res.once('close', done);
    });
    addRequest(req, options);
  };
}

const originalMessages = new WeakMap<RemoraError, string>();

/** The coded error a transport failure carries in its cause chain, if any. */
function codedCause(err: unknown): RemoraError | undefined {
  for (let e = err, depth = 0; e && depth < 5; depth++) {
    if (e instanceof RemoraError) {
      const message = originalMessages.get(e);
      if (message !== undefined) e.message = message;
      return e;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Client options from a program's `consul` configuration keys, where an empty token, CA file or
 * size means "not set".
 */
export function consulClientOptions(
  c: { address: string; token?: string; caFile?: string; maxResponseBytes?: number },
  logger: Logger,
): ConsulClientOptions {
  return {
    address: c.address,
    ...(c.token ? { token: c.token } : {}),
    ...(c.caFile ? { caFile: c.caFile } : {}),
    ...(c.maxResponseBytes ? { maxResponseBytes: c.maxResponseBytes } : {}),
    logger,
  };
}

export function createConsulClient(opts: ConsulClientOptions): ConsulClient {
  const logger = opts.logger ?? createSilentLogger();
  const timeoutMs = opts.timeoutMs ?? DEFAULT_CONSUL_TIMEOUT_MS;
  let base: URL;
  try {
    base = new URL(opts.address);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error('scheme');
  } catch {
    throw new RemoraError(
      'REMORA_E_CONSUL_CONFIG',
      `consul.address ${JSON.stringify(opts.address)} is not an http(s) URL; use e.g. http://127.0.0.1:8500`,
      { address: opts.address },
    );
  }
  const secure = base.protocol === 'https:';
  const address = base.origin;
  let ca: Buffer | undefined;
  if (opts.caFile) {
    try {
      ca = readFileSync(opts.caFile);
    } catch (err) {
      throw new RemoraError(
        'REMORA_E_CONSUL_CONFIG',
        `cannot read consul.caFile ${opts.caFile}: ${(err as Error).message}; point it at a readable PEM bundle`,
        { caFile: opts.caFile },
        { cause: err },
      );
    }
  }
  const agent = secure
    ? new HttpsAgent({ keepAlive: true, ...(ca ? { ca } : {}) })
    : new HttpAgent({ keepAlive: true });
  const maxResponseBytes = opts.maxResponseBytes ?? DEFAULT_CONSUL_MAX_RESPONSE_BYTES;
  if (!Number.isSafeInteger(maxResponseBytes) || maxResponseBytes < 1024) {
    throw new RemoraError(
      'REMORA_E_CONSUL_CONFIG',
      `consul.maxResponseBytes ${String(maxResponseBytes)} is not an integer of at least 1024; set at least 1024, or leave it unset for ${formatBytes(DEFAULT_CONSUL_MAX_RESPONSE_BYTES)}`,
      { maxResponseBytes },
    );
  }
  boundResponses(agent, maxResponseBytes, address);
  const port = Number(base.port || (secure ? 443 : 80));
  const pkg = new Consul({
    host: base.hostname.replace(/^\[|\]$/g, ''),
    port,
    secure,
    agent,
    ...(opts.token ? { defaults: { token: opts.token } } : {}),
  }) as unknown as ConsulPackage;
  const http: Got = got.extend({
    prefixUrl: `${address}/v1/`,
    headers: opts.token ? { 'x-consul-token': opts.token } : {},
    agent: secure ? { https: agent as HttpsAgent } : { http: agent },
    ...(ca ? { https: { certificateAuthority: ca } } : {}),
    retry: { limit: 0 },
    // no Accept-Encoding: the size bound counts what arrives, so it must be what is parsed
    decompress: false,
    throwHttpErrors: false,
    timeout: { request: timeoutMs },
  });

  function fail(path: string, err: unknown): RemoraError {
    const coded = codedCause(err);
    if (coded) return coded;
    const e = err as PapiError & { response?: { statusCode?: number; body?: unknown } };
    const status = e.response?.statusCode;
    if (e.isResponse && status !== undefined) {
      const body = e.response?.body;
      const text = Buffer.isBuffer(body)
        ? body.toString()
        : typeof body === 'string'
          ? body
          : e.message;
      return requestFailed(path, status, text);
    }
    const cause = e.code ?? (e.isTimeout ? 'ETIMEDOUT' : e.message);
    return new RemoraError(
      'REMORA_E_CONSUL_UNREACHABLE',
      `Consul at ${address} did not answer ${path}: ${cause}; check that the Consul agent runs there`,
      { address, path, cause },
      { cause: err },
    );
  }

  function requestFailed(path: string, status: number, body: string): RemoraError {
    return new RemoraError(
      'REMORA_E_CONSUL_REQUEST_FAILED',
      `Consul refused ${path} with ${status}: ${body.trim() || '(empty body)'}`,
      { address, path, status, body: body.slice(0, 2000) },
    );
  }

  async function call<T>(path: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = fail(path, err);
      logger.debug({ code: e.code, path }, e.message);
      throw e;
    }
  }

  /** A request over got: resolves with status, headers and body text, or a coded error. */
  async function raw(
    method: 'GET' | 'PUT' | 'DELETE',
    path: string,
    o: {
      json?: unknown;
      searchParams?: URLSearchParams;
      timeoutMs?: number;
      signal?: AbortSignal;
    } = {},
  ): Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    body: string;
  }> {
    try {
      const res = await http(path, {
        method,
        ...(o.json !== undefined ? { json: o.json } : {}),
        ...(o.searchParams ? { searchParams: o.searchParams } : {}),
        ...(o.timeoutMs ? { timeout: { request: o.timeoutMs } } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
      });
      return { status: res.statusCode, headers: res.headers, body: res.body };
    } catch (err) {
      throw fail(`/v1/${path}`, err);
    }
  }

  function parseJson(path: string, body: string): unknown {
    try {
      return JSON.parse(body) as unknown;
    } catch (err) {
      throw new RemoraError(
        'REMORA_E_CONSUL_BAD_RESPONSE',
        `Consul at ${address} answered ${path} with a body that is not JSON; is consul.address a Consul API?`,
        { address, path, body: body.slice(0, 200) },
        { cause: err },
      );
    }
  }

  function waitMsOf(wait: string | undefined): number {
    if (!wait) return 5 * 60_000;
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(wait);
    if (!m) return 5 * 60_000;
    const n = Number(m[1]);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    return Math.min(n * unit, 10 * 60_000);
  }

  /**
   * A health answer as Consul documents it: a JSON array of entries and a numeric
   * X-Consul-Index. Anything else is a coded error — never an empty endpoint set, which a
   * caller would take for "no healthy instances".
   */
  function healthResult(
    path: string,
    body: unknown,
    indexHeader: string | string[] | undefined,
  ): { entries: ServiceEntry[]; index: number } {
    if (!Array.isArray(body)) {
      throw new RemoraError(
        'REMORA_E_CONSUL_BAD_RESPONSE',
        `Consul at ${address} answered ${path} with ${body === null ? 'null' : typeof body} instead of a JSON array of entries`,
        { address, path },
      );
    }
    return { entries: body.map(normalizeEntry), index: consulIndex(path, indexHeader) };
  }

  /** X-Consul-Index as a non-negative integer (0 when absent), or a coded error. */
  function consulIndex(path: string, indexHeader: string | string[] | undefined): number {
    const text = Array.isArray(indexHeader) ? indexHeader[0] : indexHeader;
    const index = text === undefined ? 0 : Number(text);
    if (!Number.isSafeInteger(index) || index < 0) {
      throw new RemoraError(
        'REMORA_E_CONSUL_BAD_RESPONSE',
        `Consul at ${address} answered ${path} with X-Consul-Index ${JSON.stringify(text)}, not a non-negative integer`,
        { address, path, index: text },
      );
    }
    return index;
  }

  /**
   * A catalog services answer as Consul documents it: a JSON object mapping each service name
   * to an array of tag strings (a JSON null, Go's empty slice, reads as no tags). Anything else
   * is a coded error — never an empty service list, which a caller would take for "every
   * service is gone".
   */
  function servicesResult(
    path: string,
    body: unknown,
    indexHeader: string | string[] | undefined,
  ): { services: Record<string, string[]>; index: number } {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new RemoraError(
        'REMORA_E_CONSUL_BAD_RESPONSE',
        `Consul at ${address} answered ${path} with ${body === null ? 'null' : Array.isArray(body) ? 'an array' : typeof body} instead of a JSON object of service names and tags`,
        { address, path },
      );
    }
    const services = Object.fromEntries(
      Object.entries(body).map(([name, tags]: [string, unknown]) => {
        if (tags === null) return [name, []];
        if (!Array.isArray(tags) || !tags.every((tag) => typeof tag === 'string')) {
          throw new RemoraError(
            'REMORA_E_CONSUL_BAD_RESPONSE',
            `Consul at ${address} answered ${path} with tags of service ${JSON.stringify(name)} that are not an array of strings`,
            { address, path, service: name },
          );
        }
        return [name, [...tags]];
      }),
    ) as Record<string, string[]>;
    return { services, index: consulIndex(path, indexHeader) };
  }

  /** The deadline of a request: a blocking one adds its wait and Consul's jitter (wait/16). */
  function configEntriesResult(
    path: string,
    body: unknown,
    indexHeader: string | string[] | undefined,
  ): { entries: ConfigEntry[]; index: number } {
    const list = body === null ? [] : body;
    const bad = (what: string): RemoraError =>
      new RemoraError(
        'REMORA_E_CONSUL_BAD_RESPONSE',
        `Consul at ${address} answered ${path} with ${what} instead of a JSON array of config entries`,
        { address, path },
      );
    if (!Array.isArray(list)) throw bad(typeof list);
    const entries = list.map((e: unknown, i) => {
      if (typeof e !== 'object' || e === null || Array.isArray(e))
        throw bad(`item ${i}: not an object`);
      const r = e as Record<string, unknown>;
      if (typeof r.Kind !== 'string' || typeof r.Name !== 'string')
        throw bad(`item ${i}: no Kind or Name`);
      return { ...r } as ConfigEntry;
    });
    return { entries, index: consulIndex(path, indexHeader) };
  }

  /**
   * A GET that blocks while `o.index` is set (with `o.wait`), read by `result` from the JSON
   * body and the X-Consul-Index header.
   */
  async function blockingGet<T>(
    path: string,
    o: BlockingOptions,
    result: (path: string, body: unknown, index: string | string[] | undefined) => T,
  ): Promise<T> {
    const q = new URLSearchParams();
    if (o.index) q.set('index', String(o.index));
    if (o.index && o.wait) q.set('wait', o.wait);
    const r = await raw('GET', path, {
      searchParams: q,
      timeoutMs: blockingTimeout(o),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (r.status !== 200) throw requestFailed(`/v1/${path}`, r.status, r.body);
    return result(`/v1/${path}`, parseJson(`/v1/${path}`, r.body), r.headers['x-consul-index']);
  }

  function blockingTimeout(o: BlockingOptions): number {
    return timeoutMs + (o.index ? waitMsOf(o.wait) * (17 / 16) : 0);
  }

  async function healthQuery(
    kind: 'service' | 'connect',
    service: string,
    o: BlockingOptions = {},
  ): Promise<{ entries: ServiceEntry[]; index: number }> {
    const path = `health/${kind}/${encodeURIComponent(service)}`;
    const requestTimeout = blockingTimeout(o);
    if (kind === 'service') {
      // The npm package covers this endpoint; the header comes back through includeResponse.
      const ctx = Object.assign(new EventEmitter(), { includeResponse: true });
      const onAbort = (): void => void ctx.emit('cancel');
      o.signal?.addEventListener('abort', onAbort);
      try {
        const out = (await call(`/v1/${path}`, () =>
          pkg.health.service({
            service,
            ...(o.passing ? { passing: true } : {}),
            ...(o.tag ? { tag: o.tag } : {}),
            ...(o.index ? { index: String(o.index) } : {}),
            ...(o.index && o.wait ? { wait: o.wait } : {}),
            timeout: requestTimeout,
            ctx,
          }),
        )) as [{ headers: Record<string, string> }, unknown];
        const [res, body] = out;
        return healthResult(`/v1/${path}`, body, res.headers['x-consul-index']);
      } finally {
        o.signal?.removeEventListener('abort', onAbort);
      }
    }
    const q = new URLSearchParams();
    if (o.passing) q.set('passing', '');
    if (o.tag) q.set('tag', o.tag);
    if (o.index) q.set('index', String(o.index));
    if (o.index && o.wait) q.set('wait', o.wait);
    const r = await raw('GET', path, {
      searchParams: q,
      timeoutMs: requestTimeout,
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (r.status !== 200) throw requestFailed(`/v1/${path}`, r.status, r.body);
    return healthResult(
      `/v1/${path}`,
      parseJson(`/v1/${path}`, r.body),
      r.headers['x-consul-index'],
    );
  }

  function kvPair(v: unknown): KvPair {
    const e = obj(v);
    return {
      key: typeof e.Key === 'string' ? e.Key : '',
      value: typeof e.Value === 'string' ? e.Value : '',
      modifyIndex: Number(e.ModifyIndex ?? 0),
    };
  }

  return {
    address,
    agent: {
      async registerService(def) {
        // Sent as given: the npm package rewrites definitions and drops Kind, Weights and more.
        const r = await raw('PUT', 'agent/service/register', { json: def });
        if (r.status !== 200) throw requestFailed('/v1/agent/service/register', r.status, r.body);
      },
      async deregisterService(id) {
        await call(`/v1/agent/service/deregister/${id}`, () =>
          pkg.agent.service.deregister({ id, timeout: timeoutMs }),
        );
      },
      async services() {
        const out = obj(
          await call('/v1/agent/services', () => pkg.agent.service.list({ timeout: timeoutMs })),
        );
        return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, normalizeService(v)]));
      },
      async service(id) {
        const path = `agent/service/${encodeURIComponent(id)}`;
        const r = await raw('GET', path);
        if (r.status === 404) return undefined;
        if (r.status !== 200) throw requestFailed(`/v1/${path}`, r.status, r.body);
        return normalizeService(parseJson(`/v1/${path}`, r.body));
      },
      async checks() {
        const out = obj(
          await call('/v1/agent/checks', () => pkg.agent.check.list({ timeout: timeoutMs })),
        );
        return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, normalizeCheck(v)]));
      },
      async updateTtl(checkId, status, output) {
        const o = {
          id: checkId,
          timeout: timeoutMs,
          ...(output !== undefined ? { note: output } : {}),
        };
        const path = `/v1/agent/check/${status}/${checkId}`;
        if (status === 'passing') await call(path, () => pkg.agent.check.pass(o));
        else if (status === 'warning') await call(path, () => pkg.agent.check.warn(o));
        else await call(path, () => pkg.agent.check.fail(o));
      },
      async maintenance(serviceId, enable, reason) {
        await call(`/v1/agent/service/maintenance/${serviceId}`, () =>
          pkg.agent.service.maintenance({
            id: serviceId,
            enable,
            timeout: timeoutMs,
            ...(reason ? { reason } : {}),
          }),
        );
      },
      async self() {
        const out = obj(await call('/v1/agent/self', () => pkg.agent.self({ timeout: timeoutMs })));
        const cfg = obj(out.Config);
        return {
          ...out,
          Config: {
            ...cfg,
            NodeName: typeof cfg.NodeName === 'string' ? cfg.NodeName : '',
            Datacenter: typeof cfg.Datacenter === 'string' ? cfg.Datacenter : '',
          },
        };
      },
    },
    kv: {
      async get(key) {
        const out = await call(`/v1/kv/${key}`, () => pkg.kv.get({ key, timeout: timeoutMs }));
        return out === undefined ? undefined : kvPair(out);
      },
      async put(key, value, o = {}) {
        const out = await call(`/v1/kv/${key}`, () =>
          pkg.kv.set({
            key,
            value,
            timeout: timeoutMs,
            ...(o.cas !== undefined ? { cas: o.cas } : {}),
          }),
        );
        return out === true;
      },
      async delete(key, o = {}) {
        const out = await call(`/v1/kv/${key}`, () =>
          pkg.kv.del({
            key,
            timeout: timeoutMs,
            ...(o.cas !== undefined ? { cas: o.cas } : {}),
            ...(o.recurse ? { recurse: true } : {}),
          }),
        );
        return out === true;
      },
      async list(prefix) {
        const out = await call(`/v1/kv/${prefix}?recurse`, () =>
          pkg.kv.get({ key: prefix, recurse: true, timeout: timeoutMs }),
        );
        return Array.isArray(out) ? out.map(kvPair) : [];
      },
    },
    health: {
      connect: (service, o) => healthQuery('connect', service, o),
      service: (service, o) => healthQuery('service', service, o),
    },
    catalog: {
      async services() {
        const out = obj(
          await call('/v1/catalog/services', () =>
            pkg.catalog.service.list({ timeout: timeoutMs }),
          ),
        );
        return Object.fromEntries(
          Object.entries(out).map(([k, v]) => [k, Array.isArray(v) ? (v as string[]) : []]),
        );
      },
      servicesBlocking: (o = {}) => blockingGet('catalog/services', o, servicesResult),
      async service(name) {
        const out = await call(`/v1/catalog/service/${name}`, () =>
          pkg.catalog.service.nodes({ service: name, timeout: timeoutMs }),
        );
        return (Array.isArray(out) ? out : []).map((raw) => {
          const s = obj(raw);
          return {
            ...s,
            ServiceTags: Array.isArray(s.ServiceTags) ? s.ServiceTags : [],
            ServiceMeta: obj(s.ServiceMeta),
          } as unknown as CatalogService;
        });
      },
    },
    config: {
      list: (kind, o = {}) =>
        blockingGet(`config/${encodeURIComponent(kind)}`, o, configEntriesResult),
      async put(entry, o = {}) {
        const q = new URLSearchParams();
        if (o.cas !== undefined) q.set('cas', String(o.cas));
        const r = await raw('PUT', 'config', { json: entry, searchParams: q });
        if (r.status !== 200) throw requestFailed('/v1/config', r.status, r.body);
        return parseJson('/v1/config', r.body) === true;
      },
      async delete(kind, name) {
        const path = `config/${encodeURIComponent(kind)}/${encodeURIComponent(name)}`;
        const r = await raw('DELETE', path);
        if (r.status !== 200) throw requestFailed(`/v1/${path}`, r.status, r.body);
      },
    },
    status: {
      async leader() {
        return String(
          await call('/v1/status/leader', () => pkg.status.leader({ timeout: timeoutMs })),
        );
      },
    },
    close() {
      pkg.destroy();
      agent.destroy();
    },
  };
}
