// Node tokens: `rmt1.<payload>.<mac>` where payload is base64url JSON {n: node, s: [globs],
// e: expiry ms or 0, i: issued ms} and mac = HMAC-SHA256(secret, "rmt1." + payload). The secret
// lives in Consul KV (`<prefix>token-secret`), created once with check-and-set.
import { createHmac, randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { RemoraError } from '../lib/errors/index.ts';

export const TOKEN_PREFIX = 'rmt1';
export const TOKEN_SECRET_BYTES = 32;

export interface NodeTokenClaims {
  node: string;
  services: string[];
  /** Epoch ms, or null for no expiry. */
  expiresAt: number | null;
  issuedAt: number;
}

export interface TokenSecretDoc {
  v: 1;
  /** base64 of TOKEN_SECRET_BYTES random bytes. */
  secret: string;
}

export function createTokenSecretDoc(): TokenSecretDoc {
  return { v: 1, secret: randomBytes(TOKEN_SECRET_BYTES).toString('base64') };
}

export function decodeTokenSecretDoc(raw: unknown): TokenSecretDoc {
  const o = raw as Partial<TokenSecretDoc> | null;
  if (!o || o.v !== 1 || typeof o.secret !== 'string')
    throw new Error('not a token secret document');
  if (Buffer.from(o.secret, 'base64').length < 16) throw new Error('secret is too short');
  return { v: 1, secret: o.secret };
}

function mac(secret: Buffer, payload: string): Buffer {
  return createHmac('sha256', secret).update(`${TOKEN_PREFIX}.${payload}`).digest();
}

export function createNodeToken(secret: Buffer, claims: NodeTokenClaims): string {
  const payload = Buffer.from(
    JSON.stringify({
      n: claims.node,
      s: claims.services,
      e: claims.expiresAt ?? 0,
      i: claims.issuedAt,
    }),
  ).toString('base64url');
  return `${TOKEN_PREFIX}.${payload}.${mac(secret, payload).toString('base64url')}`;
}

function invalid(node: string, why: string): RemoraError {
  return new RemoraError(
    'REMORA_E_CONTROL_TOKEN_INVALID',
    `node token for ${JSON.stringify(node)} ${why}; create one with: remora token create ${node} <service-globs...>`,
    { node },
  );
}

/**
 * Verifies a token for `node` at `now`: MAC first (constant time), then the node, then expiry.
 * Throws REMORA_E_CONTROL_TOKEN_INVALID or REMORA_E_CONTROL_TOKEN_EXPIRED.
 */
export function verifyNodeToken(
  secret: Buffer,
  token: string,
  node: string,
  now: number,
): NodeTokenClaims {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX) throw invalid(node, 'is malformed');
  const payload = parts[1]!;
  const given = Buffer.from(parts[2]!, 'base64url');
  const want = mac(secret, payload);
  if (given.length !== want.length || !timingSafeEqual(given, want))
    throw invalid(node, 'was not issued by this control plane (signature mismatch)');
  let claims: NodeTokenClaims;
  try {
    const o = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as {
      n: unknown;
      s: unknown;
      e: unknown;
      i: unknown;
    };
    if (
      typeof o.n !== 'string' ||
      !Array.isArray(o.s) ||
      !o.s.every((g) => typeof g === 'string') ||
      typeof o.e !== 'number' ||
      typeof o.i !== 'number'
    )
      throw new Error('bad claims');
    claims = {
      node: o.n,
      services: o.s,
      expiresAt: o.e === 0 ? null : o.e,
      issuedAt: o.i,
    };
  } catch {
    throw invalid(node, 'carries unreadable claims');
  }
  if (claims.node !== node) throw invalid(node, `belongs to node ${JSON.stringify(claims.node)}`);
  if (claims.expiresAt !== null && now >= claims.expiresAt)
    throw new RemoraError(
      'REMORA_E_CONTROL_TOKEN_EXPIRED',
      `node token for ${JSON.stringify(node)} expired at ${new Date(claims.expiresAt).toISOString()}; create a fresh one with: remora token create ${node} ${claims.services.join(' ')}`,
      { node, expiresAt: new Date(claims.expiresAt).toISOString() },
    );
  return claims;
}

const globCache = new Map<string, RegExp>();

/** True when `service` matches one of the globs (`*` = any run of characters). */
export function serviceMatchesGlobs(service: string, globs: readonly string[]): boolean {
  return globs.some((g) => {
    let re = globCache.get(g);
    if (!re) {
      re = new RegExp(
        `^${g
          .split('*')
          .map((p) => p.replace(/[.+?^${}()|[\]\\-]/g, '\\$&'))
          .join('.*')}$`,
      );
      if (globCache.size > 1000) globCache.clear();
      globCache.set(g, re);
    }
    return re.test(service);
  });
}

/** Constant-time comparison of an operator token with the configured one (empty never matches). */
export function operatorTokenMatches(configured: string, given: string): boolean {
  if (!configured) return false;
  const a = createHash('sha256').update(configured).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}
