// The slice of Consul's HTTP API the bench uses, over plain fetch: KV with CAS and catalog reads
// (what control needs), service registration and TTL check updates (what the scenarios drive).
export interface ConsulHttp {
  kv: {
    get(key: string): Promise<{ value: string; modifyIndex: number } | undefined>;
    put(key: string, value: string, options?: { cas?: number }): Promise<boolean>;
  };
  catalog: { service(name: string): Promise<Array<Record<string, unknown>>> };
  register(definition: object): Promise<void>;
  deregister(id: string): Promise<void>;
  check(state: 'pass' | 'warn' | 'fail', checkId: string): Promise<void>;
  get(path: string): Promise<{ status: number; index: string | null; body: unknown }>;
}

export function createConsulHttp(baseUrl: string): ConsulHttp {
  async function call(method: string, path: string, body?: string | object): Promise<Response> {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    return res;
  }
  async function ok(method: string, path: string, body?: string | object): Promise<string> {
    const res = await call(method, path, body);
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
    return text;
  }
  return {
    kv: {
      async get(key) {
        const res = await call('GET', `/v1/kv/${key}`);
        if (res.status === 404) {
          await res.text();
          return undefined;
        }
        const arr = (await res.json()) as Array<{ Value: string | null; ModifyIndex: number }>;
        const e = arr[0];
        if (!e) return undefined;
        return {
          value: Buffer.from(e.Value ?? '', 'base64').toString('utf8'),
          modifyIndex: e.ModifyIndex,
        };
      },
      async put(key, value, options = {}) {
        const q = options.cas === undefined ? '' : `?cas=${options.cas}`;
        return (await ok('PUT', `/v1/kv/${key}${q}`, value)).trim() === 'true';
      },
    },
    catalog: {
      async service(name) {
        return JSON.parse(
          await ok('GET', `/v1/catalog/service/${encodeURIComponent(name)}`),
        ) as Array<Record<string, unknown>>;
      },
    },
    async register(definition) {
      await ok('PUT', '/v1/agent/service/register', definition);
    },
    async deregister(id) {
      await ok('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`);
    },
    async check(state, checkId) {
      await ok('PUT', `/v1/agent/check/${state}/${encodeURIComponent(checkId)}`);
    },
    async get(path) {
      const res = await call('GET', path);
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON
      }
      return { status: res.status, index: res.headers.get('x-consul-index'), body };
    },
  };
}
