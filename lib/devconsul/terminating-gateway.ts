// The terminating-gateway config entry in the embedded catalog (docs/gateways.md, "Terminating
// gateways"), checked as Consul checks it on a write, and the gateways it makes answer
// `/v1/health/connect/<service>` for the services it links, as Consul's catalog does.
import { HttpError } from './http-error.ts';
import { goQuote } from './config-entries.ts';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Fields of a linked service, by their lower-case and snake_case names. */
const SERVICE_KEYS: Record<string, string> = Object.fromEntries(
  [
    'Name',
    'Namespace',
    'Partition',
    'CAFile',
    'CertFile',
    'KeyFile',
    'SNI',
    'DisableAutoHostRewrite',
  ].flatMap((k) => [
    [k.toLowerCase(), k],
    [k.replace(/(?<=[a-z])([A-Z])/g, '_$1').toLowerCase(), k],
  ]),
);
SERVICE_KEYS.ca_file = 'CAFile';

/**
 * Consul's checks of a terminating-gateway entry: `Services` a list of objects with string
 * fields, each with a name, none named twice, and `CertFile`/`KeyFile` only with all three TLS
 * files. The services are stored with their keys in Consul's spelling.
 */
export function checkTerminatingGateway(e: Obj): void {
  const list = e.Services ?? e.services;
  delete e.services;
  if (list === undefined || list === null) {
    e.Services = [];
    return;
  }
  if (!Array.isArray(list))
    throw new HttpError(400, 'Request decoding failed: Services must be a list');
  const seen = new Set<string>();
  e.Services = list.map((raw: unknown, i) => {
    if (!isObj(raw))
      throw new HttpError(400, `Request decoding failed: Services[${i}] must be an object`);
    const s: Obj = {};
    for (const [k, v] of Object.entries(raw)) {
      const key = SERVICE_KEYS[k.toLowerCase()] ?? k;
      if (Object.hasOwn(s, key))
        throw new HttpError(400, `Request decoding failed: Services[${i}].${key} is given twice`);
      if (key === 'DisableAutoHostRewrite') {
        if (typeof v !== 'boolean')
          throw new HttpError(400, `Request decoding failed: Services[${i}].${key} must be a bool`);
      } else if (typeof v !== 'string')
        throw new HttpError(400, `Request decoding failed: Services[${i}].${key} must be a string`);
      Object.defineProperty(s, key, {
        value: v,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    const name = (s.Name as string | undefined) ?? '';
    if (name === '') throw new HttpError(400, 'Service name cannot be blank.');
    if (seen.has(name))
      throw new HttpError(
        400,
        `Service ${goQuote(name)} was specified more than once in a config entry`,
      );
    seen.add(name);
    if ((s.CertFile || s.KeyFile) && !(s.CAFile && s.CertFile && s.KeyFile))
      throw new HttpError(
        400,
        `Service ${goQuote(name)} must have a CertFile, CAFile, and KeyFile specified for TLS origination`,
      );
    return s;
  });
}

/**
 * The names of the terminating gateways that link `service`: by name, or by `*` when the
 * service is a typical one of the catalog (`typical`) and not the gateway itself.
 */
export function gatewaysLinking(
  entries: readonly Obj[],
  service: string,
  typical: (name: string) => boolean,
): string[] {
  const out: string[] = [];
  for (const e of entries) {
    const names = ((e.Services ?? []) as Obj[]).map((s) => s.Name);
    if (names.includes(service) || (names.includes('*') && e.Name !== service && typical(service)))
      out.push(e.Name as string);
  }
  return out;
}
