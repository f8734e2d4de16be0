// Parts of a service's `service-defaults` entry: what it sets for its own proxy's inbound
// (`LocalConnectTimeoutMs`, `LocalRequestTimeoutMs`, `MaxInboundConnections`, `RateLimits`) and
// for its calls to other services (`UpstreamConfig`). Bad values are reported and left out.
import { INBOUND_LIMITS, type InboundSettings } from '../../lib/proxy-api/index.ts';
import { checkUpstreamLayer, INBOUND_FIELDS } from '../definitions.ts';
import type { ConfigEntry } from '../ports.ts';
import { isLayer, type Layer } from './entry.ts';
import { consulRateLimits, rateLimitsOf } from './rate-limits.ts';

/**
 * The inbound settings of a service-defaults entry; a value that is no whole number in range is
 * left out, with its problem in `found` (when given). 0 is Consul's "not set".
 */
export function inboundOf(
  e: ConfigEntry | Layer,
  found?: { map: Map<string, string>; name: string },
): InboundSettings {
  const out: InboundSettings = {};
  for (const [key, , field, min] of INBOUND_FIELDS) {
    const v = e[field];
    if (v === undefined || v === null || v === 0) continue;
    const max = INBOUND_LIMITS[key];
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) out[key] = v;
    else
      found?.map.set(
        `i/${found.name}/${field}`,
        `service-defaults of ${found.name}: ${field} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}; it is ignored`,
      );
  }
  const rateLimit = rateLimitsOf(e.RateLimits, (what, why) =>
    found?.map.set(
      `i/${found.name}/RateLimits${what}`,
      `service-defaults of ${found.name}: RateLimits.InstanceLevel${what} ${why}; it is ignored`,
    ),
  );
  if (rateLimit !== null) out.rateLimit = rateLimit;
  return out;
}

/** A source service's UpstreamConfig, checked: `Defaults`, and the `Overrides` by destination. */
export interface UpstreamLayers {
  defaults: Layer | null;
  overrides: Record<string, Layer>;
}

/** A service-defaults entry's UpstreamConfig, with each bad layer reported and left out. */
export function upstreamConfig(e: ConfigEntry, found: Map<string, string>): UpstreamLayers | null {
  const uc = e.UpstreamConfig;
  if (uc === undefined || uc === null) return null;
  const where = `service-defaults of ${e.Name}: UpstreamConfig`;
  if (!isLayer(uc)) {
    found.set(`u/${e.Name}`, `${where} must be an object; it is ignored`);
    return null;
  }
  const check = (layer: unknown, path: string, key: string): Layer | null => {
    const problem = checkUpstreamLayer(layer, path);
    if (problem === null) return layer as Layer;
    found.set(key, `service-defaults of ${e.Name}: ${problem}; that part is ignored`);
    return null;
  };
  const defaults =
    uc.Defaults === undefined || uc.Defaults === null
      ? null
      : check(uc.Defaults, 'UpstreamConfig.Defaults', `u/${e.Name}/defaults`);
  const overrides: Record<string, Layer> = {};
  const list = uc.Overrides ?? [];
  if (!Array.isArray(list))
    found.set(`u/${e.Name}/overrides`, `${where}.Overrides must be a list; it is ignored`);
  else
    list.forEach((item: unknown, i) => {
      const name = isLayer(item) ? item.Name : undefined;
      if (typeof name !== 'string' || name === '') {
        found.set(`u/${e.Name}/${i}`, `${where}.Overrides[${i}] has no Name; it is ignored`);
        return;
      }
      const { Name: _name, ...rest } = item as Layer;
      const layer = check(rest, `UpstreamConfig.Overrides[${i}]`, `u/${e.Name}/${i}`);
      if (layer) overrides[name] = layer;
    });
  return defaults === null && Object.keys(overrides).length === 0 ? null : { defaults, overrides };
}

/** A cached InboundSettings under the service-defaults field names, to be checked as Consul's. */
export function cachedInboundFields(x: Layer): Layer {
  const out: Layer = {};
  for (const [key, , field] of INBOUND_FIELDS) out[field] = x[key];
  if (isLayer(x.rateLimit)) out.RateLimits = consulRateLimits(x.rateLimit);
  return out;
}
