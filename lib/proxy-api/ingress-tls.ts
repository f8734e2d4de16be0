// TLS on an ingress gateway's listeners (Consul's `ingress-gateway` entry `TLS`, gateway-wide and
// per listener; docs/gateways.md): the versions and TLS 1.2 suites a listener serves outside
// callers with, in Consul's spellings. Checked once by the agent (which reports what it cannot
// serve, naming the field) and once for the proxy's snapshot; turned into Node's `tls` options.

/** A TLS listener's parameters as the snapshot carries them; absent keys keep the defaults. */
export interface IngressTlsParams {
  /** `TLSv1_2` or `TLSv1_3`; absent: TLSv1_2 (Consul's default for gateways). */
  minVersion?: string;
  /** `TLSv1_2` or `TLSv1_3`; absent: TLSv1_3. */
  maxVersion?: string;
  /** TLS 1.2 suites in Consul's names; absent: Node's defaults. */
  cipherSuites?: string[];
}

type NodeVersion = 'TLSv1.2' | 'TLSv1.3';

/** Every TLS version name Consul accepts (`TLS_AUTO` leaves the choice to the proxy). */
export const CONSUL_TLS_VERSIONS = ['TLS_AUTO', 'TLSv1_0', 'TLSv1_1', 'TLSv1_2', 'TLSv1_3'];

const ORDER: Record<string, number> = { TLSv1_0: 1, TLSv1_1: 2, TLSv1_2: 3, TLSv1_3: 4 };

/**
 * The TLS 1.2 suites Consul accepts for a gateway (Envoy's list), by Consul's name, with
 * OpenSSL's. The CHACHA20 ones under both of Consul's spellings (with and without `_SHA256`).
 */
export const INGRESS_CIPHER_SUITES: Readonly<Record<string, string>> = {
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 'ECDHE-ECDSA-AES128-GCM-SHA256',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-ECDSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 'ECDHE-RSA-AES128-GCM-SHA256',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305: 'ECDHE-RSA-CHACHA20-POLY1305',
  TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 'ECDHE-RSA-CHACHA20-POLY1305',
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA: 'ECDHE-ECDSA-AES128-SHA',
  TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA: 'ECDHE-RSA-AES128-SHA',
  TLS_RSA_WITH_AES_128_GCM_SHA256: 'AES128-GCM-SHA256',
  TLS_RSA_WITH_AES_128_CBC_SHA: 'AES128-SHA',
  TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 'ECDHE-ECDSA-AES256-GCM-SHA384',
  TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 'ECDHE-RSA-AES256-GCM-SHA384',
  TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA: 'ECDHE-ECDSA-AES256-SHA',
  TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA: 'ECDHE-RSA-AES256-SHA',
  TLS_RSA_WITH_AES_256_GCM_SHA384: 'AES256-GCM-SHA384',
  TLS_RSA_WITH_AES_256_CBC_SHA: 'AES256-SHA',
};

export type IngressTlsKey = 'TLSMinVersion' | 'TLSMaxVersion' | 'CipherSuites';

/**
 * What keeps a listener's TLS parameters from being served (the entry's key and the reason with
 * the way out), or null. `TLSv1_0`/`TLSv1_1` as the minimum are not a problem here: the
 * agent raises them to TLSv1_2 (`servedIngressTls`) and says so.
 */
export function ingressTlsProblem(p: {
  minVersion?: string | undefined;
  maxVersion?: string | undefined;
  cipherSuites?: readonly string[] | undefined;
}): { key: IngressTlsKey; reason: string } | null {
  for (const [key, v] of [
    ['TLSMinVersion', p.minVersion],
    ['TLSMaxVersion', p.maxVersion],
  ] as const) {
    if (v === undefined || v === '' || CONSUL_TLS_VERSIONS.includes(v)) continue;
    return {
      key,
      reason: `${JSON.stringify(v)} is not a TLS version; use one of ${CONSUL_TLS_VERSIONS.join(', ')}`,
    };
  }
  const max = p.maxVersion;
  if (max === 'TLSv1_0' || max === 'TLSv1_1')
    return {
      key: 'TLSMaxVersion',
      reason: `${max} is below TLS 1.2, the oldest version the gateway serves (Node's OpenSSL refuses older ones); use TLSv1_2 or TLSv1_3`,
    };
  const min = p.minVersion;
  if (min !== undefined && max !== undefined && ORDER[min] && ORDER[max] && ORDER[max] < ORDER[min])
    return {
      key: 'TLSMaxVersion',
      reason: `${max} is below TLSMinVersion ${min}; raise it or lower the minimum`,
    };
  const suites = p.cipherSuites;
  if (suites !== undefined && suites.length > 0) {
    const unknown = suites.filter((s) => !(s in INGRESS_CIPHER_SUITES));
    if (unknown.length > 0)
      return {
        key: 'CipherSuites',
        reason: `${unknown.map((s) => JSON.stringify(s)).join(', ')} ${unknown.length === 1 ? 'is not a suite' : 'are not suites'} the gateway can use; name some of ${Object.keys(INGRESS_CIPHER_SUITES).join(', ')}`,
      };
    if (min === 'TLSv1_3')
      return {
        key: 'CipherSuites',
        reason:
          'cannot be set with TLSMinVersion TLSv1_3 (TLS 1.3 suites are not chosen); drop them or lower the minimum',
      };
    if (!suites.some((s) => !s.includes('_ECDSA_')))
      return {
        key: 'CipherSuites',
        reason:
          "names only ECDSA suites, but the gateway's certificate from the mesh CA has an RSA key, so no TLS 1.2 client could connect; add a TLS_ECDHE_RSA_… suite",
      };
  }
  return null;
}

/** Node's `tls` options of checked parameters (TLS 1.3 suites stay OpenSSL's defaults). */
export function ingressTlsOptions(p: IngressTlsParams): {
  minVersion: NodeVersion;
  maxVersion: NodeVersion;
  ciphers?: string;
} {
  const v = (x: string | undefined, d: NodeVersion): NodeVersion =>
    x === 'TLSv1_3' ? 'TLSv1.3' : x === 'TLSv1_2' ? 'TLSv1.2' : d;
  const out = { minVersion: v(p.minVersion, 'TLSv1.2'), maxVersion: v(p.maxVersion, 'TLSv1.3') };
  const suites = p.cipherSuites;
  if (suites === undefined || suites.length === 0) return out;
  const ciphers = [...new Set(suites.map((s) => INGRESS_CIPHER_SUITES[s]!))];
  return { ...out, ciphers: ciphers.join(':') };
}
