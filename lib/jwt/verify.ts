// JWT verification with node:crypto alone: a compact JWS with an asymmetric signature (RS*, PS*,
// ES*, EdDSA; never `none` or HMAC), checked against the provider's key set, then `exp`/`nbf`
// with the provider's clock skew, `iss` and `aud`. Pure functions of the token, the provider and
// `now`; results never carry the token or key material, only reasons a person can act on.
import { constants, createPublicKey, verify, type KeyObject } from 'node:crypto';
import type { JwtLocation, JwtProvider } from './types.ts';

/** Why a token was refused; a bounded set (metric label). */
export type JwtFailure =
  | 'missing'
  | 'malformed'
  | 'alg'
  | 'unknown_key'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'issuer'
  | 'audience'
  | 'no_keys';

export type JwtVerification =
  | { ok: true; payload: Record<string, unknown>; payloadB64: string }
  | { ok: false; failure: JwtFailure; message: string };

interface AlgSpec {
  kty: 'RSA' | 'EC' | 'OKP';
  hash: string | null;
  pss?: true;
  crv?: readonly string[];
  /** ECDSA: the length of r‖s in bytes. */
  sigBytes?: number;
}

/** The algorithms accepted; anything else (`none`, HS256 …) is refused. */
export const JWT_ALGORITHMS: Readonly<Record<string, AlgSpec>> = Object.freeze({
  RS256: { kty: 'RSA', hash: 'sha256' },
  RS384: { kty: 'RSA', hash: 'sha384' },
  RS512: { kty: 'RSA', hash: 'sha512' },
  PS256: { kty: 'RSA', hash: 'sha256', pss: true },
  PS384: { kty: 'RSA', hash: 'sha384', pss: true },
  PS512: { kty: 'RSA', hash: 'sha512', pss: true },
  ES256: { kty: 'EC', hash: 'sha256', crv: ['P-256'], sigBytes: 64 },
  ES384: { kty: 'EC', hash: 'sha384', crv: ['P-384'], sigBytes: 96 },
  ES512: { kty: 'EC', hash: 'sha512', crv: ['P-521'], sigBytes: 132 },
  EdDSA: { kty: 'OKP', hash: null, crv: ['Ed25519', 'Ed448'] },
});

interface CompiledKey {
  kid: string | undefined;
  kty: string;
  crv: string | undefined;
  alg: string | undefined;
  key: KeyObject;
}

interface CachedToken {
  payload: Record<string, unknown>;
  payloadB64: string;
}

interface CompiledProvider {
  keys: CompiledKey[];
  /** Tokens whose signature, issuer and audience were verified (times are checked each use). */
  cache: Map<string, CachedToken>;
}

const compiled = new WeakMap<JwtProvider, CompiledProvider>();

/**
 * Why a JWK cannot verify signatures, or null when it can: a public key of kty RSA, EC or OKP,
 * `use` absent or `sig`. Private key members are refused (a key set is public).
 */
export function jwkProblem(jwk: unknown): string | null {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return 'is not an object';
  const k = jwk as Record<string, unknown>;
  if (k.kty !== 'RSA' && k.kty !== 'EC' && k.kty !== 'OKP')
    return `has kty ${JSON.stringify(k.kty)}; only RSA, EC and OKP public keys verify tokens (HMAC "oct" keys are refused)`;
  if (k.use !== undefined && k.use !== 'sig') return `has use ${JSON.stringify(k.use)}, not "sig"`;
  if (k.d !== undefined) return 'holds a private key ("d"); publish only the public key';
  if (k.alg !== undefined && (typeof k.alg !== 'string' || !Object.hasOwn(JWT_ALGORITHMS, k.alg)))
    return `has alg ${JSON.stringify(k.alg)}, which Remora does not verify`;
  try {
    createPublicKey({ key: k, format: 'jwk' });
  } catch (err) {
    return `is not a usable key (${(err as Error).message})`;
  }
  return null;
}

function compile(p: JwtProvider): CompiledProvider {
  let c = compiled.get(p);
  if (c) return c;
  const keys: CompiledKey[] = [];
  for (const jwk of p.keys) {
    if (jwkProblem(jwk) !== null) continue;
    keys.push({
      kid: typeof jwk.kid === 'string' ? jwk.kid : undefined,
      kty: String(jwk.kty),
      crv: typeof jwk.crv === 'string' ? jwk.crv : undefined,
      alg: typeof jwk.alg === 'string' ? jwk.alg : undefined,
      key: createPublicKey({ key: jwk, format: 'jwk' }),
    });
  }
  c = { keys, cache: new Map() };
  compiled.set(p, c);
  return c;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

function decodeJsonPart(part: string): Record<string, unknown> | null {
  if (!B64URL.test(part)) return null;
  try {
    const v: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

function fail(failure: JwtFailure, message: string): JwtVerification {
  return { ok: false, failure, message };
}

function signatureHolds(k: CompiledKey, spec: AlgSpec, data: Buffer, sig: Buffer): boolean {
  if (k.kty !== spec.kty) return false;
  if (spec.crv && (k.crv === undefined || !spec.crv.includes(k.crv))) return false;
  if (spec.sigBytes !== undefined && sig.length !== spec.sigBytes) return false;
  try {
    if (spec.kty === 'RSA')
      return verify(
        spec.hash,
        data,
        spec.pss
          ? {
              key: k.key,
              padding: constants.RSA_PKCS1_PSS_PADDING,
              saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
            }
          : { key: k.key, padding: constants.RSA_PKCS1_PADDING },
        sig,
      );
    if (spec.kty === 'EC')
      return verify(spec.hash, data, { key: k.key, dsaEncoding: 'ieee-p1363' }, sig);
    return verify(null, data, k.key, sig);
  } catch {
    return false;
  }
}

function timesHold(
  payload: Record<string, unknown>,
  p: JwtProvider,
  nowMs: number,
): JwtVerification | null {
  const now = nowMs / 1000;
  const skew = p.clockSkewSeconds;
  const { exp, nbf } = payload;
  if (exp !== undefined) {
    if (typeof exp !== 'number' || !Number.isFinite(exp))
      return fail('malformed', `the token's "exp" claim is not a number`);
    if (now > exp + skew)
      return fail(
        'expired',
        `the token expired at ${new Date(exp * 1000).toISOString()} (clock skew allowed: ${skew} s); get a new token`,
      );
  }
  if (nbf !== undefined) {
    if (typeof nbf !== 'number' || !Number.isFinite(nbf))
      return fail('malformed', `the token's "nbf" claim is not a number`);
    if (now + skew < nbf)
      return fail(
        'not_yet_valid',
        `the token is not valid before ${new Date(nbf * 1000).toISOString()} (clock skew allowed: ${skew} s); check the clocks of the issuer and this host`,
      );
  }
  return null;
}

function issuerAndAudience(
  payload: Record<string, unknown>,
  p: JwtProvider,
): JwtVerification | null {
  if (p.issuer !== undefined && payload.iss !== p.issuer)
    return fail(
      'issuer',
      `the token's issuer (iss) is not ${JSON.stringify(p.issuer)}, the issuer of provider ${p.name}`,
    );
  if (p.audiences && p.audiences.length > 0) {
    const aud = payload.aud;
    const given = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
    if (!given.some((a) => typeof a === 'string' && p.audiences!.includes(a)))
      return fail(
        'audience',
        `the token's audience (aud) names none of ${p.audiences.map((a) => JSON.stringify(a)).join(', ')}, the audiences of provider ${p.name}`,
      );
  }
  return null;
}

/**
 * Verifies `token` for provider `p` at `nowMs`. Signature, issuer and audience results are
 * remembered per token (up to `p.cacheSize`); `exp` and `nbf` are checked on every call.
 */
export function verifyJwt(token: string, p: JwtProvider, nowMs: number): JwtVerification {
  const c = compile(p);
  const hit = c.cache.get(token);
  if (hit) return timesHold(hit.payload, p, nowMs) ?? { ok: true, ...hit };
  const parts = token.split('.');
  if (parts.length !== 3)
    return fail(
      'malformed',
      'the token is not a signed JWT (three base64url parts separated by dots)',
    );
  const [h, b, s] = parts as [string, string, string];
  const header = decodeJsonPart(h);
  const payload = decodeJsonPart(b);
  if (header === null || payload === null || !B64URL.test(s))
    return fail(
      'malformed',
      'the token is not a signed JWT (its header or payload is not base64url JSON)',
    );
  const alg = header.alg;
  if (typeof alg !== 'string' || !Object.hasOwn(JWT_ALGORITHMS, alg))
    return fail(
      'alg',
      `the token is signed with alg ${JSON.stringify(alg)}; Remora accepts only ${Object.keys(JWT_ALGORITHMS).join(', ')} (never "none" or HMAC)`,
    );
  const spec = JWT_ALGORITHMS[alg]!;
  if (c.keys.length === 0)
    return fail(
      'no_keys',
      `provider ${p.name} has no keys to verify tokens with${p.keysProblem ? ` (${p.keysProblem})` : ''}`,
    );
  const kid = typeof header.kid === 'string' ? header.kid : undefined;
  const candidates = c.keys.filter(
    (k) =>
      (kid === undefined || k.kid === undefined || k.kid === kid) &&
      (k.alg === undefined || k.alg === alg),
  );
  if (candidates.length === 0)
    return fail(
      'unknown_key',
      `no key of provider ${p.name} matches the token's ${kid === undefined ? `alg ${alg}` : `key id (kid) ${JSON.stringify(kid)} and alg ${alg}`}`,
    );
  const data = Buffer.from(`${h}.${b}`, 'ascii');
  const sig = Buffer.from(s, 'base64url');
  if (!candidates.some((k) => signatureHolds(k, spec, data, sig)))
    return fail(
      'bad_signature',
      `the token's signature does not verify with the keys of provider ${p.name}`,
    );
  const claims = issuerAndAudience(payload, p);
  if (claims) return claims;
  if (p.cacheSize > 0) {
    if (c.cache.size >= p.cacheSize) c.cache.delete(c.cache.keys().next().value!);
    c.cache.set(token, { payload, payloadB64: b });
  }
  return timesHold(payload, p, nowMs) ?? { ok: true, payload, payloadB64: b };
}

/** A claim at `path` (nested objects) equals `value`, or is a list holding it. */
export function claimMatches(
  payload: Record<string, unknown>,
  path: readonly string[],
  value: string,
): boolean {
  let v: unknown = payload;
  for (const seg of path) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, seg))
      return false;
    v = (v as Record<string, unknown>)[seg];
  }
  if (Array.isArray(v)) return v.some((x) => x === value);
  return v === value;
}

export interface FoundJwt {
  token: string;
  /** The header the token came from (removed before the app sees it unless forwarded). */
  header?: { name: string; forward: boolean };
}

function firstValue(v: string | readonly string[] | undefined): string | undefined {
  return v === undefined ? undefined : typeof v === 'string' ? v : v[0];
}

function fromCookies(cookie: string | undefined, name: string): string | undefined {
  if (cookie === undefined) return undefined;
  for (const part of cookie.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function fromQuery(target: string, name: string): string | undefined {
  const q = target.indexOf('?');
  if (q === -1) return undefined;
  try {
    return new URLSearchParams(target.slice(q + 1)).get(name) ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * The token a request carries for provider `p`: the first of its locations that holds one.
 * `headers` has lower-case names (Node's shape).
 */
export function findJwt(
  locations: readonly JwtLocation[],
  headers: Readonly<Record<string, string | readonly string[] | undefined>>,
  target: string,
): FoundJwt | null {
  for (const l of locations) {
    if ('header' in l) {
      const raw = firstValue(headers[l.header.name.toLowerCase()]);
      if (raw === undefined) continue;
      const prefix = l.header.valuePrefix ?? '';
      // the prefix is compared without regard to case, as Envoy does for "Bearer "
      if (prefix !== '' && raw.slice(0, prefix.length).toLowerCase() !== prefix.toLowerCase())
        continue;
      const token = raw.slice(prefix.length).trim();
      if (token !== '')
        return { token, header: { name: l.header.name, forward: l.header.forward === true } };
    } else if ('queryParam' in l) {
      const token = fromQuery(target, l.queryParam.name);
      if (token) return { token };
    } else {
      const token = fromCookies(firstValue(headers.cookie), l.cookie.name);
      if (token) return { token };
    }
  }
  return null;
}

/** The value of the forwarding header: the payload, base64url, padded when asked. */
export function forwardedPayload(payloadB64: string, pad: boolean): string {
  if (!pad) return payloadB64;
  const rem = payloadB64.length % 4;
  return rem === 0 ? payloadB64 : payloadB64 + '='.repeat(4 - rem);
}
