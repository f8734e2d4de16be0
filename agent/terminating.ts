// Consul's `terminating-gateway` config entry, read for a gateway the agent runs
// (docs/gateways.md, "Terminating gateways"): the services outside the mesh it links, and how
// it reaches each (plain TCP, or TLS it originates with the entry's CA, client certificate and
// SNI). Nothing here throws but `readOriginationTls`: what cannot be applied is left out and
// reported (REMORA_E_AGENT_TERMINATING_NOT_APPLIED), the gateway keeps serving the rest.
import { readFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { isValidName } from '../lib/identity/index.ts';
import { RemoraError } from '../lib/errors/index.ts';
import type { OriginationTls, Protocol } from '../lib/proxy-api/index.ts';

export const TERMINATING_GATEWAY = 'terminating-gateway' as const;

/** How the gateway reaches a linked service: the entry's TLS fields (paths on this host). */
export interface OriginationFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  sni?: string;
}

export interface TerminatingServiceEntry extends OriginationFiles {
  /** A service name, or `*` (every typical service of the catalog). */
  name: string;
  /**
   * `DisableAutoHostRewrite`: keep the caller's Host header. Otherwise, as Consul's gateway
   * does, an HTTP request to an instance registered by hostname carries that hostname as Host.
   */
  disableAutoHostRewrite?: boolean;
}

export interface TerminatingEntry {
  name: string;
  services: TerminatingServiceEntry[];
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A field in Consul's PascalCase, lower case or snake_case (`consul config write` takes all). */
function field(o: Obj, pascal: string, snake: string): unknown {
  return o[pascal] ?? o[pascal.toLowerCase()] ?? o[snake];
}

const FILE_FIELDS = [
  ['CAFile', 'ca_file', 'caFile'],
  ['CertFile', 'cert_file', 'certFile'],
  ['KeyFile', 'key_file', 'keyFile'],
  ['SNI', 'sni', 'sni'],
] as const;

/**
 * An entry's linked services, each one that cannot apply left out with a problem (a sentence
 * naming the entry, the field and the way out).
 */
export function decodeTerminatingEntry(raw: Obj): { entry: TerminatingEntry; problems: string[] } {
  const name = typeof raw.Name === 'string' ? raw.Name : '';
  const at = `terminating-gateway ${name}`;
  const problems: string[] = [];
  const list = field(raw, 'Services', 'services');
  const services: TerminatingServiceEntry[] = [];
  if (list !== undefined && list !== null && !Array.isArray(list))
    problems.push(`${at}: Services must be a list; the gateway links no service`);
  const seen = new Set<string>();
  (Array.isArray(list) ? list : []).forEach((s: unknown, i) => {
    const where = `${at} Services[${i}]`;
    if (!isObj(s)) return problems.push(`${where} must be an object; it is left out`);
    const sn = field(s, 'Name', 'name');
    if (typeof sn !== 'string' || (sn !== '*' && !isValidName(sn)))
      return problems.push(
        `${where}.Name must be a service name or "*", got ${JSON.stringify(sn)}; it is left out`,
      );
    if (sn === name)
      return problems.push(`${where}.Name ${sn} is the gateway itself; it is left out`);
    if (seen.has(sn))
      return problems.push(`${where}.Name ${sn} is linked twice; the second one is left out`);
    const out: TerminatingServiceEntry = { name: sn };
    for (const [pascal, snake, to] of FILE_FIELDS) {
      const v = field(s, pascal, snake);
      if (v === undefined || v === null || v === '') continue;
      if (typeof v !== 'string')
        return problems.push(
          `${where}.${pascal} must be a string, got ${JSON.stringify(v)}; ${sn} is left out`,
        );
      out[to] = v;
    }
    const keepHost = field(s, 'DisableAutoHostRewrite', 'disable_auto_host_rewrite');
    if (keepHost !== undefined && keepHost !== null && typeof keepHost !== 'boolean')
      return problems.push(
        `${where}.DisableAutoHostRewrite must be true or false, got ${JSON.stringify(keepHost)}; ${sn} is left out`,
      );
    if (keepHost === true) out.disableAutoHostRewrite = true;
    if ((out.certFile || out.keyFile) && !(out.caFile && out.certFile && out.keyFile))
      return problems.push(
        `${where}: ${sn} sets ${out.certFile ? 'CertFile' : 'KeyFile'} without all of CAFile, CertFile and KeyFile (mutual TLS needs the three; CAFile alone is one-way TLS); ${sn} is left out`,
      );
    seen.add(sn);
    services.push(out);
  });
  return { entry: { name, services }, problems };
}

/** A service the gateway serves: its protocol and how it is reached. */
export interface PlannedTerminatingService extends OriginationFiles {
  name: string;
  protocol: Protocol;
  disableAutoHostRewrite?: boolean;
}

/**
 * The services a gateway serves: named ones with their own settings, `*` expanded to every
 * other service of `catalog` with the wildcard's (a named service's settings replace the
 * wildcard's whole, as in Consul), each with its protocol.
 */
export function planTerminating(
  entry: TerminatingEntry,
  o: {
    gateway: string;
    protocolOf(service: string): Protocol;
    /** The catalog's service names (`*`), null while unknown. */
    catalog: readonly string[] | null;
  },
): { services: PlannedTerminatingService[]; problems: string[] } {
  const problems: string[] = [];
  const out: PlannedTerminatingService[] = [];
  const add = (s: TerminatingServiceEntry, name: string): void => {
    const protocol = o.protocolOf(name);
    const { name: _n, ...settings } = s;
    out.push({ name, protocol, ...settings });
  };
  for (const s of entry.services) if (s.name !== '*') add(s, s.name);
  const wildcard = entry.services.find((s) => s.name === '*');
  if (wildcard)
    for (const name of o.catalog ?? []) {
      if (name === o.gateway || name === 'consul' || name.endsWith('-sidecar-proxy')) continue;
      if (entry.services.some((x) => x.name === name)) continue;
      add(wildcard, name);
    }
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { services: out, problems };
}

/**
 * The TLS a gateway originates to `service`, its files read on this host; null for plain TCP.
 * Throws REMORA_E_AGENT_TERMINATING_TLS_FILE naming the file that cannot be read or is not PEM.
 */
export function readOriginationTls(
  gateway: string,
  s: PlannedTerminatingService,
  read: (path: string) => string = (p) => readFileSync(p, 'utf8'),
): OriginationTls | null {
  if (!s.caFile && !s.certFile && !s.keyFile && !s.sni) return null;
  const load = (
    key: 'CAFile' | 'CertFile' | 'KeyFile',
    path: string,
    check: (pem: string) => void,
  ) => {
    let pem: string;
    try {
      pem = read(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw fileError(gateway, s.name, key, path, `cannot be read (${code})`);
    }
    try {
      check(pem);
    } catch (err) {
      throw fileError(
        gateway,
        s.name,
        key,
        path,
        `is not ${key === 'KeyFile' ? 'a PEM private key' : 'a PEM certificate'} (${(err as Error).message})`,
      );
    }
    return pem;
  };
  const cert = (pem: string) => void new X509Certificate(pem);
  return {
    ...(s.caFile ? { caPem: load('CAFile', s.caFile, cert) } : {}),
    ...(s.certFile ? { certPem: load('CertFile', s.certFile, cert) } : {}),
    ...(s.keyFile
      ? { keyPem: load('KeyFile', s.keyFile, (pem) => void createPrivateKey(pem)) }
      : {}),
    ...(s.sni ? { sni: s.sni } : {}),
  };
}

function fileError(
  gateway: string,
  service: string,
  key: string,
  path: string,
  why: string,
): RemoraError {
  return new RemoraError(
    'REMORA_E_AGENT_TERMINATING_TLS_FILE',
    `terminating gateway ${gateway}: ${key} ${path} of ${service} ${why}; ${service} is left out until the file can be read on this host (the gateway keeps serving its other services)`,
    { gateway, service, field: key, file: path },
  );
}
