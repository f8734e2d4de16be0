// The tokens of one inbound request, checked against intentions' JWT requirements: each provider's
// token is looked for and verified at most once per request, failures are counted by provider and
// reason, and after an allow the request's headers are changed as the providers say (the token
// header dropped unless forwarded, the verified payload added for the app).
import {
  claimMatches,
  findJwt,
  forwardedPayload,
  verifyJwt,
  type FoundJwt,
  type JwtProvider,
  type JwtVerification,
} from '../../lib/jwt/index.ts';
import type { IntentionDecision, JwtCheck, JwtOutcome } from '../../lib/intentions/index.ts';
import { RemoraError } from '../../lib/errors/index.ts';

const byName = new WeakMap<readonly JwtProvider[], Map<string, JwtProvider>>();

function providerMap(providers: readonly JwtProvider[]): Map<string, JwtProvider> {
  let m = byName.get(providers);
  if (!m) {
    m = new Map(providers.map((p) => [p.name, p]));
    byName.set(providers, m);
  }
  return m;
}

export interface HeaderChanges {
  readonly remove: readonly string[];
  readonly add: readonly (readonly [string, string])[];
}

const NO_CHANGES: HeaderChanges = Object.freeze({ remove: [], add: [] });

interface Verified {
  provider: JwtProvider;
  found: FoundJwt;
  payloadB64: string;
}

export interface RequestJwt {
  /** Checks a requirement; the request's tokens are looked at only when one is checked. */
  check: JwtCheck;
  /** Header names to drop and fields to add once the request is allowed. */
  headerChanges(): HeaderChanges;
}

/** Where a provider looks for tokens, for a person: `Authorization: Bearer <token>`. */
export function describeLocations(p: JwtProvider): string {
  return p.locations
    .map((l) =>
      'header' in l
        ? `header ${l.header.name}: ${l.header.valuePrefix ?? ''}<token>`
        : 'queryParam' in l
          ? `query parameter ${l.queryParam.name}`
          : `cookie ${l.cookie.name}`,
    )
    .join(', or ');
}

/**
 * The JWT check of one request. `onFailure(provider, reason)` is called once per provider and
 * request whose token is missing or invalid, and for claims not met.
 */
export function createRequestJwt(o: {
  providers: readonly JwtProvider[];
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  target: string;
  nowMs: number;
  onFailure: (provider: string, reason: string) => void;
}): RequestJwt {
  // most L7 requests meet no JWT requirement: nothing is allocated until one is checked
  let results: Map<string, { found: FoundJwt | null; v: JwtVerification | null }> | null = null;
  let verified: Map<string, Verified> | null = null;
  function verifyFor(p: JwtProvider): { found: FoundJwt | null; v: JwtVerification | null } {
    results ??= new Map();
    let r = results.get(p.name);
    if (r) return r;
    const found = findJwt(p.locations, o.headers, o.target);
    r = { found, v: found ? verifyJwt(found.token, p, o.nowMs) : null };
    results.set(p.name, r);
    if (!found) o.onFailure(p.name, 'missing');
    else if (!r.v!.ok) o.onFailure(p.name, r.v!.failure);
    else (verified ??= new Map()).set(p.name, { provider: p, found, payloadB64: r.v!.payloadB64 });
    return r;
  }
  const check: JwtCheck = (req): JwtOutcome => {
    const providers = providerMap(o.providers);
    for (const need of req.providers) {
      const p = providers.get(need.name);
      if (!p) {
        o.onFailure(need.name, 'unknown_provider');
        return {
          met: false,
          kind: 'invalid',
          provider: need.name,
          reason: `no jwt-provider config entry named ${need.name} is known to this proxy; write one with consul config write`,
        };
      }
      const { found, v } = verifyFor(p);
      if (!found)
        return {
          met: false,
          kind: 'missing',
          provider: p.name,
          reason: `no token in ${describeLocations(p)}`,
        };
      if (!v!.ok) return { met: false, kind: 'invalid', provider: p.name, reason: v!.message };
      for (const c of need.verifyClaims ?? []) {
        if (!claimMatches(v!.payload, c.path, c.value)) {
          o.onFailure(p.name, 'claims');
          return {
            met: false,
            kind: 'claims',
            provider: p.name,
            reason: `the token's claim ${c.path.join('.')} is not ${JSON.stringify(c.value)}`,
          };
        }
      }
    }
    return { met: true };
  };
  return {
    check,
    headerChanges() {
      const remove: string[] = [];
      const add: [string, string][] = [];
      if (verified === null) return NO_CHANGES;
      for (const v of verified.values()) {
        if (v.found.header && !v.found.header.forward)
          remove.push(v.found.header.name.toLowerCase());
        const f = v.provider.forwarding;
        if (f) {
          remove.push(f.headerName.toLowerCase());
          add.push([
            f.headerName,
            forwardedPayload(v.payloadB64, f.padForwardPayloadHeader === true),
          ]);
        }
      }
      return { remove, add };
    },
  };
}

/** The 401 for a denial a token would have changed (`d.jwt` set). */
export function jwtDenialError(
  source: string,
  destination: string,
  d: IntentionDecision,
): RemoraError {
  const j = d.jwt!;
  const code = j.kind === 'missing' ? 'REMORA_E_PROXY_JWT_MISSING' : 'REMORA_E_PROXY_JWT_INVALID';
  // RFC 6750's challenge, as Envoy's JWT filter answers (no description: the body has it)
  const challenge =
    j.kind === 'missing'
      ? `Bearer realm="${destination}"`
      : `Bearer realm="${destination}", error="invalid_token"`;
  return new RemoraError(
    code,
    `${source} → ${destination} needs a valid JWT from provider ${j.provider}: ${d.reason}`,
    { source, destination, provider: j.provider, wwwAuthenticate: challenge },
  );
}

/** Applies header changes to a flattened [name, value, …] list, returning a new list. */
export function changeH1Headers(headers: readonly string[], changes: HeaderChanges): string[] {
  if (changes.remove.length === 0 && changes.add.length === 0) return [...headers];
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2)
    if (!changes.remove.includes(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
  for (const [n, v] of changes.add) out.push(n, v);
  return out;
}
