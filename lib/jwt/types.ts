// JWT providers as the proxy receives them in its snapshot: Consul's `jwt-provider` config
// entries, read and checked by the agent, with the key set already in hand (the agent reads local
// sets and fetches remote ones; the proxy never fetches anything while a request waits).
import type { JsonWebKey } from 'node:crypto';

/** Where a token is looked for; the first location that holds one is used. */
export type JwtLocation =
  | { header: { name: string; valuePrefix?: string; forward?: boolean } }
  | { queryParam: { name: string } }
  | { cookie: { name: string } };

export interface JwtForwarding {
  /** A header the verified token's payload is written to (base64url) for the app. */
  headerName: string;
  /** Pads the base64url payload with `=` (Consul's `PadForwardPayloadHeader`). */
  padForwardPayloadHeader?: boolean;
}

export interface JwtProvider {
  /** The config entry's name, which intentions refer to. */
  name: string;
  /** The `iss` a token must carry; any when absent. */
  issuer?: string;
  /** A token's `aud` must name one of these; any when absent. */
  audiences?: string[];
  /** The provider's JSON Web Key Set (its `keys`); empty while unknown. */
  keys: JsonWebKey[];
  /** Why `keys` is empty or old (a remote set that cannot be fetched), for the caller's answer. */
  keysProblem?: string;
  /** Never empty: the agent fills in Consul's default, `Authorization: Bearer <token>`. */
  locations: JwtLocation[];
  forwarding?: JwtForwarding;
  /** Leeway for `exp` and `nbf`, in seconds (Consul's default 30). */
  clockSkewSeconds: number;
  /** How many verified tokens the proxy remembers for this provider (0: none). */
  cacheSize: number;
}

export const DEFAULT_CLOCK_SKEW_S = 30;
export const DEFAULT_JWT_CACHE_SIZE = 100;
export const DEFAULT_JWT_LOCATIONS: readonly JwtLocation[] = Object.freeze([
  { header: { name: 'Authorization', valuePrefix: 'Bearer ' } },
]);
