// Keys and tokens for JWT tests, made with node:crypto: a test signs its own tokens.
import { constants, generateKeyPairSync, sign, type JsonWebKey, type KeyObject } from 'node:crypto';

export interface TestKey {
  alg: string;
  kid: string;
  privateKey: KeyObject;
  /** The public JWK, with `kid` (and `alg` when asked). */
  jwk: JsonWebKey;
}

/** A key pair for `alg` (RS*, PS*, ES*, EdDSA). */
export function makeKey(alg: string, kid = `${alg.toLowerCase()}-1`, withAlg = false): TestKey {
  const pair =
    alg.startsWith('RS') || alg.startsWith('PS')
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : alg === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : alg === 'ES384'
          ? generateKeyPairSync('ec', { namedCurve: 'P-384' })
          : alg === 'ES512'
            ? generateKeyPairSync('ec', { namedCurve: 'P-521' })
            : generateKeyPairSync('ed25519');
  const jwk = { ...pair.publicKey.export({ format: 'jwk' }), kid, ...(withAlg ? { alg } : {}) };
  return { alg, kid, privateKey: pair.privateKey, jwk };
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

/** A compact JWS of `payload` signed with `key` (header fields may be overridden). */
export function signToken(
  key: TestKey,
  payload: Record<string, unknown>,
  header: Record<string, unknown> = {},
): string {
  const h = { alg: key.alg, typ: 'JWT', kid: key.kid, ...header };
  const data = `${b64(h)}.${b64(payload)}`;
  const alg = key.alg;
  const hash = alg === 'EdDSA' ? null : `sha${alg.slice(2)}`;
  const sig = alg.startsWith('PS')
    ? sign(hash, Buffer.from(data), {
        key: key.privateKey,
        padding: constants.RSA_PKCS1_PSS_PADDING,
        saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
      })
    : alg.startsWith('ES')
      ? sign(hash, Buffer.from(data), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
      : sign(hash, Buffer.from(data), key.privateKey);
  return `${data}.${sig.toString('base64url')}`;
}

/** A JWKS document of these keys, base64 as Consul's `JSONWebKeySet.Local.JWKS` wants it. */
export function jwksBase64(keys: readonly TestKey[]): string {
  return Buffer.from(JSON.stringify({ keys: keys.map((k) => k.jwk) })).toString('base64');
}
