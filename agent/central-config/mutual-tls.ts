// The `MutualTLSMode` of a sidecar (strict or permissive): from its registration, its
// service-defaults or proxy-defaults, and whether the `mesh` entry and the instance let permissive
// apply.
import { MUTUAL_TLS_MODES, type MutualTlsMode } from '../../lib/proxy-api/index.ts';

/**
 * A `MutualTLSMode` value (Consul's `""` is unset): null when unset, or when it is none of
 * strict and permissive, which is reported under `key` (strict applies: the safe reading).
 */
export function mutualTlsOf(
  v: unknown,
  where: string,
  found: Map<string, string>,
  key: string,
): MutualTlsMode | null {
  if (v === undefined || v === null || v === '') return null;
  const lower = typeof v === 'string' ? v.toLowerCase() : v;
  if ((MUTUAL_TLS_MODES as readonly unknown[]).includes(lower)) return lower as MutualTlsMode;
  found.set(
    key,
    `${where}: MutualTLSMode ${JSON.stringify(v)} is not one of "strict", "permissive"; it is ignored (its sidecars require mTLS unless something else sets permissive)`,
  );
  return null;
}

/** Where an instance's `MutualTLSMode` comes from, first to last. */
export type MutualTlsSource = 'registration' | 'service-defaults' | 'proxy-defaults' | 'default';

/** An instance's mode, where it comes from, and why a permissive one is not applied (or null). */
export interface MutualTlsResolution {
  mode: MutualTlsMode;
  source: MutualTlsSource;
  /** What was asked for, when it differs from `mode`. */
  asked?: MutualTlsMode;
  problem: {
    code:
      | 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_ALLOWED'
      | 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_TRANSPARENT';
    message: string;
  } | null;
}

/**
 * The mutual TLS mode of one instance's sidecar, as Consul decides it: its registration's
 * `proxy.mutual_tls_mode`, else its service-defaults' `MutualTLSMode`, else proxy-defaults', else
 * strict. Permissive applies only when the `mesh` entry sets `AllowEnablingPermissiveMutualTLS`
 * (else strict applies and the problem says how to get either), and only to a transparent
 * instance: plain callers reach the sidecar only through its inbound redirect of the app's port
 * (others reach the app directly; permissive would only open the sidecar port to plain
 * connections). A mesh-wide proxy-defaults permissive is not reported for those.
 */
export function resolveMutualTlsMode(o: {
  instanceId: string;
  service: string;
  registration: MutualTlsMode | null;
  central: { mode: MutualTlsMode; source: MutualTlsSource } | null;
  allowPermissive: boolean;
  transparent: boolean;
}): MutualTlsResolution {
  const given = o.registration
    ? { mode: o.registration, source: 'registration' as const }
    : (o.central ?? { mode: 'strict' as const, source: 'default' as const });
  if (given.mode === 'strict') return { ...given, problem: null };
  const where =
    given.source === 'registration'
      ? `its definition's proxy.mutual_tls_mode`
      : given.source === 'service-defaults'
        ? `MutualTLSMode in service-defaults of ${o.service}`
        : 'MutualTLSMode in proxy-defaults global';
  const undo =
    given.source === 'registration'
      ? `remove proxy.mutual_tls_mode from ${o.instanceId}'s definition`
      : given.source === 'service-defaults'
        ? `set MutualTLSMode = "strict" in service-defaults of ${o.service}`
        : 'set MutualTLSMode = "strict" in proxy-defaults global';
  if (!o.allowPermissive)
    return {
      mode: 'strict',
      source: given.source,
      asked: 'permissive',
      problem: {
        code: 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_ALLOWED',
        message: `${o.instanceId}: ${where} is "permissive", but the mesh entry does not set AllowEnablingPermissiveMutualTLS = true; its sidecar requires mTLS (strict). To let plain callers of the app's port through while they are onboarded, set AllowEnablingPermissiveMutualTLS = true in the mesh entry; otherwise ${undo}`,
      },
    };
  if (!o.transparent)
    return {
      mode: 'strict',
      source: given.source,
      asked: 'permissive',
      problem:
        given.source === 'proxy-defaults'
          ? null
          : {
              code: 'REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_TRANSPARENT',
              message: `${o.instanceId}: ${where} is "permissive", which applies to transparent instances only (plain callers reach the sidecar through the redirect of the app's port); ${o.instanceId} is not transparent, so its callers outside the mesh reach its app directly and its sidecar requires mTLS (strict). Set transparent: true (proxy.mode = "transparent") to redirect them, or ${undo}`,
            },
    };
  return { ...given, problem: null };
}
