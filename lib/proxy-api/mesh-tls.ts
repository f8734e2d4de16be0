// The mesh's TLS parameters (Consul's `mesh` config entry, `TLS.Incoming` / `TLS.Outgoing`):
// the lowest and highest TLS version and the TLS 1.2 cipher suites of every sidecar's mTLS —
// incoming on its sidecar port, outgoing to other sidecars. Consul's spellings are checked here,
// once for the agent (which reports what it cannot apply) and once for the proxy's snapshot.

/** One direction's parameters, in Consul's spellings; absent keys keep Remora's defaults. */
export interface TlsParams {
  /** `TLSv1_2` or `TLSv1_3` (`TLS_AUTO`: Remora's default, TLSv1_2). */
  minVersion?: string;
  /** `TLSv1_2` or `TLSv1_3` (`TLS_AUTO`: Remora's default, TLSv1_3). */
  maxVersion?: string;
  /** TLS 1.2 suites, Consul's names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, …). */
  cipherSuites?: string[];
}

export interface MeshTlsConfig {
  incoming?: TlsParams;
  outgoing?: TlsParams;
}

type NodeVersion = 'TLSv1.2' | 'TLSv1.3';

const VERSIONS: Record<string, NodeVersion | null> = {
  TLS_AUTO: null,
  TLSv1_2: 'TLSv1.2',
  TLSv1_3: 'TLSv1.3',
};

/** Consul's TLS 1.2 suite names (those Envoy accepts for the mesh) → OpenSSL's. */
export const CIPHER_SUITES: Readonly<Record<string, string>> = {
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305: 'ECDHE-RSA-CHACHA20-POLY1305',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 'ECDHE-ECDSA-AES128-SHA',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 'ECDHE-RSA-AES128-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 'ECDHE-ECDSA-AES256-GCM-SHA384',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 'ECDHE-ECDSA-AES256-SHA',
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 'ECDHE-RSA-AES256-SHA',
};

/** What is wrong with a direction's parameters (key, reason), or null when they apply. */
export function tlsParamsProblem(p: TlsParams): { key: keyof TlsParams; reason: string } | null {
  for (const key of ['minVersion', 'maxVersion'] as const) {
    const v = p[key];
    if (v === undefined || v in VERSIONS) continue;
    const old = v === 'TLSv1_0' || v === 'TLSv1_1';
    return {
      key,
      reason: old
        ? `${v} is below what Remora's sidecars speak (TLSv1_2 and TLSv1_3)`
        : `${JSON.stringify(v)} is not one of TLS_AUTO, TLSv1_2, TLSv1_3`,
    };
  }
  const { minVersion, maxVersion } = nodeVersions(p);
  if (minVersion === 'TLSv1.3' && maxVersion === 'TLSv1.2')
    return { key: 'maxVersion', reason: 'is below the minimum version, TLSv1_3' };
  const suites = p.cipherSuites;
  if (suites !== undefined) {
    const unknown = suites.find((s) => !(s in CIPHER_SUITES));
    if (unknown !== undefined)
      return {
        key: 'cipherSuites',
        reason: `${JSON.stringify(unknown)} is not one of ${Object.keys(CIPHER_SUITES).join(', ')}`,
      };
    if (minVersion === 'TLSv1.3')
      return {
        key: 'cipherSuites',
        reason: 'cannot be set with TLSv1_3 as the minimum version (TLS 1.3 suites are not chosen)',
      };
    if (suites.length === 0 || !suites.some((s) => s.includes('_RSA_')))
      return {
        key: 'cipherSuites',
        reason:
          "must name at least one TLS_ECDHE_RSA_… suite: the mesh's certificates carry RSA keys, so TLS 1.2 could not be spoken otherwise",
      };
  }
  return null;
}

function nodeVersions(p: TlsParams): { minVersion: NodeVersion; maxVersion: NodeVersion } {
  return {
    minVersion: (p.minVersion && VERSIONS[p.minVersion]) || 'TLSv1.2',
    maxVersion: (p.maxVersion && VERSIONS[p.maxVersion]) || 'TLSv1.3',
  };
}

/** Node's `tls` options for checked parameters (TLS 1.3 suites stay OpenSSL's defaults). */
export function tlsOptions(p: TlsParams | undefined): {
  minVersion: NodeVersion;
  maxVersion: NodeVersion;
  ciphers?: string;
} {
  const v = nodeVersions(p ?? {});
  const suites = p?.cipherSuites;
  return suites === undefined
    ? v
    : { ...v, ciphers: suites.map((s) => CIPHER_SUITES[s]!).join(':') };
}
