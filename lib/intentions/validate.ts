// Validation of intentions arriving from NATS, KV or the CLI: a clean, typed copy or a coded error.
import { RemoraError } from '../errors/index.ts';
import { isValidName } from '../identity/index.ts';
import type {
  DefaultPolicy,
  HeaderMatch,
  HttpMatch,
  Intention,
  IntentionAction,
  IntentionJwt,
  IntentionPermission,
  IntentionsSnapshot,
  JwtClaimRequirement,
  JwtProviderRequirement,
} from './types.ts';

export const MAX_PERMISSIONS = 100;
export const MAX_REGEX_LENGTH = 1024;
export const MAX_DESCRIPTION_LENGTH = 512;
export const MAX_INTENTIONS = 10_000;

type Obj = Record<string, unknown>;

function bad(where: string, problem: string, details: Obj = {}): RemoraError {
  return new RemoraError('REMORA_E_INTENTIONS_INVALID', `${where}: ${problem}`, {
    where,
    ...details,
  });
}

function asObject(v: unknown, where: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw bad(where, 'must be an object');
  return v as Obj;
}

function onlyKeys(o: Obj, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) throw bad(where, `unknown field ${JSON.stringify(k)}`, { field: k });
}

function optString(o: Obj, key: string, where: string, max = 1024): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw bad(where, `"${key}" must be a string`, { field: key });
  if (v.length > max) throw bad(where, `"${key}" is longer than ${max}`, { field: key });
  return v;
}

/** A service name in an intention: a valid name or `*`. */
export function isIntentionName(name: string): boolean {
  return name === '*' || isValidName(name);
}

function readName(o: Obj, key: 'source' | 'destination', where: string): string {
  const v = o[key];
  if (typeof v !== 'string' || !isIntentionName(v))
    throw bad(
      where,
      `"${key}" must be a service name (letters, digits, - and _) or "*", got ${JSON.stringify(v)}`,
      { field: key },
    );
  return v;
}

function readAction(v: unknown, where: string, key = 'action'): IntentionAction {
  if (v !== 'allow' && v !== 'deny')
    throw bad(where, `"${key}" must be "allow" or "deny", got ${JSON.stringify(v)}`, {
      field: key,
    });
  return v;
}

/** Compiles a Consul (RE2-style) regex as a full match; throws INTENTIONS_INVALID. */
export function compileFullMatch(source: string, where: string): RegExp {
  if (source.length > MAX_REGEX_LENGTH)
    throw bad(where, `regex longer than ${MAX_REGEX_LENGTH} characters`);
  try {
    return new RegExp(`^(?:${source})$`);
  } catch (err) {
    throw bad(where, `regex ${JSON.stringify(source)} does not compile: ${(err as Error).message}`);
  }
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
const METHOD = /^[A-Z]{1,32}$/;

function readHeader(v: unknown, where: string): HeaderMatch {
  const o = asObject(v, where);
  onlyKeys(o, ['name', 'present', 'exact', 'prefix', 'suffix', 'regex', 'invert'], where);
  const name = o.name;
  if (typeof name !== 'string' || !HEADER_NAME.test(name))
    throw bad(where, `"name" must be an HTTP header name, got ${JSON.stringify(name)}`);
  const h: HeaderMatch = { name };
  let kinds = 0;
  if (o.present !== undefined) {
    if (typeof o.present !== 'boolean') throw bad(where, '"present" must be a boolean');
    h.present = o.present;
    kinds += 1;
  }
  for (const k of ['exact', 'prefix', 'suffix', 'regex'] as const) {
    const s = optString(o, k, where);
    if (s !== undefined) {
      h[k] = s;
      kinds += 1;
    }
  }
  if (kinds > 1)
    throw bad(where, 'set only one of "present", "exact", "prefix", "suffix" or "regex"');
  if (h.regex !== undefined) compileFullMatch(h.regex, `${where}.regex`);
  if (o.invert !== undefined) {
    if (typeof o.invert !== 'boolean') throw bad(where, '"invert" must be a boolean');
    h.invert = o.invert;
  }
  return h;
}

/**
 * Validates an HTTP match (intention permissions and service-router routes share the language)
 * and returns a clean copy; throws REMORA_E_INTENTIONS_INVALID naming `where`.
 */
export function validateHttpMatch(v: unknown, where: string): HttpMatch {
  const o = asObject(v, where);
  onlyKeys(o, ['pathExact', 'pathPrefix', 'pathRegex', 'methods', 'header'], where);
  const m: HttpMatch = {};
  let paths = 0;
  for (const k of ['pathExact', 'pathPrefix', 'pathRegex'] as const) {
    const s = optString(o, k, where, 4096);
    if (s !== undefined) {
      if (k !== 'pathRegex' && !s.startsWith('/'))
        throw bad(where, `"${k}" must begin with "/", got ${JSON.stringify(s)}`);
      m[k] = s;
      paths += 1;
    }
  }
  if (paths > 1) throw bad(where, 'set at most one of "pathExact", "pathPrefix" or "pathRegex"');
  if (m.pathRegex !== undefined) compileFullMatch(m.pathRegex, `${where}.pathRegex`);
  if (o.methods !== undefined) {
    if (!Array.isArray(o.methods) || o.methods.length > 32)
      throw bad(where, '"methods" must be an array of at most 32 upper-case HTTP methods');
    m.methods = o.methods.map((x, i) => {
      if (typeof x !== 'string' || !METHOD.test(x))
        throw bad(
          where,
          `"methods[${i}]" must be an upper-case HTTP method, got ${JSON.stringify(x)}`,
        );
      return x;
    });
  }
  if (o.header !== undefined) {
    if (!Array.isArray(o.header) || o.header.length > 32)
      throw bad(where, '"header" must be an array of at most 32 header matches');
    m.header = o.header.map((x, i) => readHeader(x, `${where}.header[${i}]`));
  }
  if (paths === 0 && !m.methods?.length && !m.header?.length)
    throw bad(where, 'an HTTP match needs a path, methods or header criterion');
  return m;
}

export const MAX_JWT_PROVIDERS = 8;
export const MAX_JWT_CLAIMS = 16;
/** A config entry name, as Consul allows for `jwt-provider` entries. */
const PROVIDER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function readClaim(v: unknown, where: string): JwtClaimRequirement {
  const o = asObject(v, where);
  onlyKeys(o, ['path', 'value'], where);
  if (
    !Array.isArray(o.path) ||
    o.path.length === 0 ||
    o.path.length > 16 ||
    !o.path.every((x) => typeof x === 'string' && x.length > 0 && x.length <= 256)
  )
    throw bad(
      where,
      `"path" must be a list of 1 to 16 claim names (["role"], or ["perms", "role"] for a nested claim), got ${JSON.stringify(o.path)}`,
      { field: 'path' },
    );
  if (typeof o.value !== 'string' || o.value.length > 1024)
    throw bad(
      where,
      `"value" must be a string (the claim's expected value), got ${JSON.stringify(o.value)}`,
      {
        field: 'value',
      },
    );
  return { path: [...(o.path as string[])], value: o.value };
}

function readProvider(v: unknown, where: string): JwtProviderRequirement {
  const o = asObject(v, where);
  onlyKeys(o, ['name', 'verifyClaims'], where);
  if (typeof o.name !== 'string' || !PROVIDER_NAME.test(o.name))
    throw bad(
      where,
      `"name" must name a jwt-provider config entry (letters, digits, ".", "-", "_"), got ${JSON.stringify(o.name)}`,
      { field: 'name' },
    );
  const p: JwtProviderRequirement = { name: o.name };
  if (o.verifyClaims !== undefined) {
    if (!Array.isArray(o.verifyClaims) || o.verifyClaims.length > MAX_JWT_CLAIMS)
      throw bad(where, `"verifyClaims" must be a list of at most ${MAX_JWT_CLAIMS} claims`, {
        field: 'verifyClaims',
      });
    if (o.verifyClaims.length > 0)
      p.verifyClaims = o.verifyClaims.map((c, i) => readClaim(c, `${where}.verifyClaims[${i}]`));
  }
  return p;
}

/**
 * Validates an intention's or a permission's `jwt` (Consul's `JWT`: `{ providers: [{ name,
 * verifyClaims: [{ path, value }] }] }`); throws REMORA_E_INTENTIONS_INVALID naming `where`.
 */
export function validateIntentionJwt(v: unknown, where: string): IntentionJwt {
  const o = asObject(v, where);
  onlyKeys(o, ['providers'], where);
  if (
    !Array.isArray(o.providers) ||
    o.providers.length === 0 ||
    o.providers.length > MAX_JWT_PROVIDERS
  )
    throw bad(
      where,
      `"providers" must be a list of 1 to ${MAX_JWT_PROVIDERS} providers, like [{"name":"okta"}]`,
      { field: 'providers' },
    );
  const seen = new Set<string>();
  const providers = o.providers.map((p, i) => {
    const r = readProvider(p, `${where}.providers[${i}]`);
    if (seen.has(r.name))
      throw bad(where, `provider ${JSON.stringify(r.name)} is listed twice; list each once`);
    seen.add(r.name);
    return r;
  });
  return { providers };
}

/** Every jwt-provider name an intention refers to (its own and its permissions'). */
export function intentionJwtProviders(i: Intention): string[] {
  const names = new Set<string>();
  for (const p of i.jwt?.providers ?? []) names.add(p.name);
  for (const perm of i.permissions ?? [])
    for (const p of perm.jwt?.providers ?? []) names.add(p.name);
  return [...names];
}

const JWT_ON_DENY =
  'a JWT requirement only narrows an allow; on a deny a caller would escape it by sending no token. Put the deny without "jwt", or turn it into an allow that requires the token';

function readPermission(v: unknown, where: string): IntentionPermission {
  const o = asObject(v, where);
  onlyKeys(o, ['action', 'http', 'jwt'], where);
  const p: IntentionPermission = {
    action: readAction(o.action, where),
    http: validateHttpMatch(o.http, `${where}.http`),
  };
  if (o.jwt !== undefined) {
    if (p.action === 'deny') throw bad(where, `"jwt" is set on a deny permission: ${JWT_ON_DENY}`);
    p.jwt = validateIntentionJwt(o.jwt, `${where}.jwt`);
  }
  return p;
}

/** Validates one intention (Consul's model) and returns a clean copy; throws REMORA_E_INTENTIONS_INVALID. */
export function validateIntention(value: unknown, where = 'intention'): Intention {
  const o = asObject(value, where);
  onlyKeys(
    o,
    [
      'source',
      'destination',
      'action',
      'permissions',
      'jwt',
      'description',
      'precedence',
      'createdAt',
      'updatedAt',
    ],
    where,
  );
  const i: Intention = {
    source: readName(o, 'source', where),
    destination: readName(o, 'destination', where),
  };
  const hasAction = o.action !== undefined;
  const hasPerms = o.permissions !== undefined;
  if (hasAction === hasPerms)
    throw bad(where, 'set exactly one of "action" (L4) or "permissions" (L7)');
  if (hasAction) i.action = readAction(o.action, where);
  if (hasPerms) {
    if (
      !Array.isArray(o.permissions) ||
      o.permissions.length === 0 ||
      o.permissions.length > MAX_PERMISSIONS
    )
      throw bad(where, `"permissions" must be a list of 1 to ${MAX_PERMISSIONS} permissions`);
    i.permissions = o.permissions.map((p, n) => readPermission(p, `${where}.permissions[${n}]`));
  }
  if (o.jwt !== undefined) {
    if (i.action === 'deny') throw bad(where, `"jwt" is set on a deny intention: ${JWT_ON_DENY}`);
    i.jwt = validateIntentionJwt(o.jwt, `${where}.jwt`);
  }
  const description = optString(o, 'description', where, MAX_DESCRIPTION_LENGTH);
  if (description !== undefined) i.description = description;
  if (o.precedence !== undefined) {
    if (typeof o.precedence !== 'number' || !Number.isInteger(o.precedence))
      throw bad(where, '"precedence" must be an integer');
    i.precedence = o.precedence;
  }
  for (const k of ['createdAt', 'updatedAt'] as const) {
    const s = optString(o, k, where, 64);
    if (s !== undefined) i[k] = s;
  }
  return i;
}

function readPolicy(v: unknown, where: string): DefaultPolicy {
  if (v !== 'allow' && v !== 'deny')
    throw bad(where, `"defaultPolicy" must be "allow" or "deny", got ${JSON.stringify(v)}`);
  return v;
}

/**
 * Validates a full snapshot (`revision`, `defaultPolicy`, `auditMode`, `intentions`). Unknown
 * top-level fields other than `v` are ignored so that newer control planes can add some.
 */
export function validateSnapshot(
  value: unknown,
  where = 'intentions snapshot',
): IntentionsSnapshot {
  const o = asObject(value, where);
  const revision = o.revision;
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 0)
    throw bad(where, '"revision" must be a non-negative integer');
  if (typeof o.auditMode !== 'boolean') throw bad(where, '"auditMode" must be a boolean');
  if (!Array.isArray(o.intentions) || o.intentions.length > MAX_INTENTIONS)
    throw bad(where, `"intentions" must be a list of at most ${MAX_INTENTIONS}`);
  const seen = new Set<string>();
  const intentions = o.intentions.map((x, n) => {
    const i = validateIntention(x, `${where}.intentions[${n}]`);
    const key = `${i.source}\u0000${i.destination}`;
    if (seen.has(key))
      throw bad(where, `two intentions for ${i.source} → ${i.destination}; keep one per pair`);
    seen.add(key);
    return i;
  });
  return {
    revision,
    defaultPolicy: readPolicy(o.defaultPolicy, where),
    auditMode: o.auditMode,
    intentions,
  };
}
