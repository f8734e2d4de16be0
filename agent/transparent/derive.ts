// Upstreams a transparent instance derives from intentions, as Consul's transparent proxies do:
// every mesh service its intentions may let it call, without listing it under `upstreams`.
// Candidates are the catalog's service names; the agent then watches each one's healthy connect
// entries and adds it once Consul lists a sidecar for it (so plain services never get a listener).
import { evaluateIntentions } from '../../lib/intentions/index.ts';
import type { IntentionsSnapshot } from '../../lib/intentions/types.ts';
import { PROTOCOLS, type Protocol } from '../../lib/proxy-api/index.ts';
import type { ConnectEntry } from '../ports.ts';

/** Consul's name for a sidecar's own catalog entry; such names are never upstreams. */
const SIDECAR_SUFFIX = '-sidecar-proxy';

/**
 * True when the intentions may let `source` call `destination`: allowed at L4, allowed for some
 * requests (L7 permissions), or only audited (a denial that is not enforced lets the call through).
 */
export function mayCall(policy: IntentionsSnapshot, source: string, destination: string): boolean {
  const d = evaluateIntentions(policy, { source, destination });
  return d.allowed || d.needsRequest || !d.enforced;
}

/**
 * The catalog services `source` may call, sorted: not itself, not a sidecar's entry, not Consul,
 * and not one it lists explicitly (an explicit upstream keeps its own settings).
 */
export function derivedDestinations(o: {
  source: string;
  explicit: ReadonlySet<string>;
  services: Iterable<string>;
  policy: IntentionsSnapshot;
}): string[] {
  const out: string[] = [];
  for (const name of new Set(o.services)) {
    if (name === o.source || name === 'consul' || name.endsWith(SIDECAR_SUFFIX)) continue;
    if (o.explicit.has(name)) continue;
    if (mayCall(o.policy, o.source, name)) out.push(name);
  }
  return out.sort();
}

/** `raw` when it names a protocol the proxy speaks, else null. */
export function asProtocol(raw: unknown): Protocol | null {
  return typeof raw === 'string' && (PROTOCOLS as readonly string[]).includes(raw)
    ? (raw as Protocol)
    : null;
}

/**
 * What Consul's sidecar registrations of a service say about its protocol: null when Consul
 * lists no sidecar for it; otherwise the `proxy.config.protocol` they were registered with, or
 * null for `protocol` when they give none (or one Remora does not know), in which case Consul's
 * config entries decide (docs/agent.md, "Protocols").
 */
export function protocolFromEntries(
  entries: readonly ConnectEntry[],
): { protocol: Protocol | null } | null {
  if (entries.length === 0) return null;
  return { protocol: asProtocol(entries[0]!.Service.Proxy?.Config?.protocol) };
}
