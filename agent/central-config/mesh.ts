// The `mesh` config entry, which sets things for every sidecar: `TLS` (the TLS versions and
// suites of the mesh's connections), `TransparentProxy.MeshDestinationsOnly`,
// `AllowEnablingPermissiveMutualTLS` and `HTTP.SanitizeXForwardedClientCert`. A bad value is
// reported and read as unset.
import {
  tlsOptions,
  tlsParamsProblem,
  type MeshTlsConfig,
  type TlsParams,
} from '../../lib/proxy-api/index.ts';
import { aliased, isLayer } from './entry.ts';

const TLS_DIRECTIONS = [
  ['incoming', 'Incoming'],
  ['outgoing', 'Outgoing'],
] as const;

/**
 * The `mesh` entry's `TLS` as the proxies take it: each direction's `TLSMinVersion`,
 * `TLSMaxVersion` and `CipherSuites`, checked as the proxies check them. A direction that cannot
 * apply is reported under `mesh…` and left out (Remora's TLS 1.2 to 1.3 with OpenSSL's suites);
 * so are both when the mesh could not talk to itself with them.
 */
export function meshTlsOf(v: unknown, found: Map<string, string>): MeshTlsConfig | null {
  const where = 'mesh: TLS';
  if (v === undefined || v === null) return null;
  if (!isLayer(v)) {
    found.set('mesh', `${where} must be an object; it is not applied`);
    return null;
  }
  const out: MeshTlsConfig = {};
  for (const [dir, Dir] of TLS_DIRECTIONS) {
    const d = v[Dir];
    if (d === undefined || d === null) continue;
    const at = `${where}.${Dir}`;
    const keep = `; ${at} is not applied (TLS 1.2 to 1.3 with OpenSSL's suites instead)`;
    if (!isLayer(d)) {
      found.set(`mesh/${dir}`, `${at} must be an object${keep}`);
      continue;
    }
    const params: TlsParams = {};
    const keys = { minVersion: 'TLSMinVersion', maxVersion: 'TLSMaxVersion' } as const;
    let bad: string | null = null;
    for (const [key, field] of Object.entries(keys) as [keyof typeof keys, string][]) {
      const x = d[field];
      if (x === undefined || x === null || x === '') continue;
      if (typeof x === 'string') params[key] = x;
      else bad = `${at}.${field} must be a string, got ${JSON.stringify(x)}`;
    }
    const suites = d.CipherSuites;
    if (Array.isArray(suites) && suites.length > 0) {
      if (suites.every((s) => typeof s === 'string')) params.cipherSuites = suites;
      else bad = `${at}.CipherSuites must be a list of suite names`;
    } else if (suites !== undefined && suites !== null && !Array.isArray(suites))
      bad = `${at}.CipherSuites must be a list of suite names`;
    const problem = bad === null ? tlsParamsProblem(params) : null;
    if (bad === null && problem !== null) {
      const field = {
        minVersion: 'TLSMinVersion',
        maxVersion: 'TLSMaxVersion',
        cipherSuites: 'CipherSuites',
      }[problem.key];
      bad = `${at}.${field} ${problem.reason}`;
    }
    if (bad !== null) {
      found.set(`mesh/${dir}`, `${bad}${keep}`);
      continue;
    }
    if (Object.keys(params).length > 0) out[dir] = params;
  }
  // every proxy takes both directions: they must meet, or no sidecar could reach another
  const inc = tlsOptions(out.incoming);
  const outg = tlsOptions(out.outgoing);
  const rank = (x: string) => (x === 'TLSv1.3' ? 3 : 2);
  const lo = Math.max(rank(inc.minVersion), rank(outg.minVersion));
  const hi = Math.min(rank(inc.maxVersion), rank(outg.maxVersion));
  const disjointSuites =
    hi === 2 &&
    inc.ciphers !== undefined &&
    outg.ciphers !== undefined &&
    !inc.ciphers.split(':').some((c) => outg.ciphers!.split(':').includes(c));
  if (lo > hi || disjointSuites) {
    found.set(
      'mesh/both',
      `${where}: Incoming and Outgoing share no ${lo > hi ? 'TLS version' : 'TLS 1.2 suite'}, so no sidecar could reach another; neither is applied (TLS 1.2 to 1.3 with OpenSSL's suites instead)`,
    );
    return null;
  }
  return Object.keys(out).length > 0 ? out : null;
}

/**
 * A flag of the `mesh` entry inside one of its objects, e.g. `TransparentProxy.MeshDestinationsOnly`
 * (Pascal or snake_case names for each). Anything but a boolean is reported under `key` and read
 * as false; `keep` says what false means for the mesh.
 */
function meshFlagOf(
  entry: unknown,
  names: { object: [string, string]; flag: [string, string] },
  key: string,
  keep: string,
  found: Map<string, string>,
): boolean {
  const obj = isLayer(entry) ? aliased(entry, ...names.object) : undefined;
  if (obj === undefined || obj === null) return false;
  const [objectName] = names.object;
  if (!isLayer(obj)) {
    found.set(key, `mesh: ${objectName} must be an object; ${keep}`);
    return false;
  }
  const v = aliased(obj, ...names.flag);
  if (v === undefined || v === null || typeof v === 'boolean') return v === true;
  found.set(
    key,
    `mesh: ${objectName}.${names.flag[0]} must be true or false, got ${typeof v} ${JSON.stringify(v)}; it is read as false: ${keep}`,
  );
  return false;
}

/**
 * The `mesh` entry's `TransparentProxy.MeshDestinationsOnly`: false on a bad value, as refusing
 * every app's non-mesh connections on a typo would be an outage.
 */
export function meshDestinationsOnlyOf(entry: unknown, found: Map<string, string>): boolean {
  return meshFlagOf(
    entry,
    {
      object: ['TransparentProxy', 'transparent_proxy'],
      flag: ['MeshDestinationsOnly', 'mesh_destinations_only'],
    },
    'mesh/tproxy',
    'apps in transparent mode keep reaching destinations outside the mesh',
    found,
  );
}

/**
 * The `mesh` entry's `AllowEnablingPermissiveMutualTLS` (`allow_enabling_permissive_mutual_tls`).
 * Anything but a boolean is reported and read as false: permissive is opt-in.
 */
export function allowPermissiveOf(entry: unknown, found: Map<string, string>): boolean {
  if (!isLayer(entry)) return false;
  const v = aliased(
    entry,
    'AllowEnablingPermissiveMutualTLS',
    'allow_enabling_permissive_mutual_tls',
  );
  if (v === undefined || v === null || typeof v === 'boolean') return v === true;
  found.set(
    'mesh/permissive',
    `mesh: AllowEnablingPermissiveMutualTLS must be true or false, got ${typeof v} ${JSON.stringify(v)}; it is read as false: no sidecar accepts plain connections`,
  );
  return false;
}

/**
 * The `mesh` entry's `HTTP.SanitizeXForwardedClientCert`: false on a bad value, Consul's default
 * (the apps keep getting the caller's identity).
 */
export function sanitizeClientCertOf(entry: unknown, found: Map<string, string>): boolean {
  return meshFlagOf(
    entry,
    {
      object: ['HTTP', 'http'],
      flag: ['SanitizeXForwardedClientCert', 'sanitize_x_forwarded_client_cert'],
    },
    'mesh/http',
    "apps keep getting the caller's identity in x-forwarded-client-cert",
    found,
  );
}

/** A cached mesh TLS setting, checked again as Consul's answer would be. */
export function checkedMeshTls(v: unknown): MeshTlsConfig | null {
  if (!isLayer(v)) return null;
  const back = (p: unknown) =>
    isLayer(p)
      ? { TLSMinVersion: p.minVersion, TLSMaxVersion: p.maxVersion, CipherSuites: p.cipherSuites }
      : undefined;
  return meshTlsOf({ Incoming: back(v.incoming), Outgoing: back(v.outgoing) }, new Map());
}
