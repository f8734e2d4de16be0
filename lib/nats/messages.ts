// Message types of the control-plane contract (docs/design.md §4) and their strict decoders.
// Requests refuse unknown fields; replies and publications tolerate additions so a newer control
// plane can add fields without breaking older agents.
import { isValidName } from '../identity/index.ts';
import { validateIntention, validateSnapshot } from '../intentions/index.ts';
import type { Intention, IntentionsSnapshot } from '../intentions/types.ts';
import {
  checkKeys,
  checkVersion,
  decodeReply,
  invalid,
  parseJsonObject,
  readArray,
  readNumber,
  readObject,
  readString,
  type JsonObject,
} from './codec.ts';
import { RemoraError } from '../errors/index.ts';

export const MAX_CSR_LENGTH = 16 * 1024;
export const MAX_TOKEN_LENGTH = 4096;
export const MAX_PEM_LENGTH = 64 * 1024;
export const MAX_GLOBS = 64;

/** Node names: Consul's (letters, digits, `.`, `-`, `_`), up to 128 characters. */
export const NODE_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,127})$/;
/** Service globs in node tokens: a service name where `*` stands for any run of characters. */
export const SERVICE_GLOB = /^[A-Za-z0-9_*-]{1,63}$/;
const SERVICE_ID = /^[\x21-\x7e]{1,256}$/;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

const serviceRule = {
  maxLength: 63,
  pattern: /^[A-Za-z0-9][A-Za-z0-9_-]*$/,
  patternHint: 'a service name',
};
const nodeRule = { maxLength: 128, pattern: NODE_NAME, patternHint: 'a node name' };
const dateRule = { maxLength: 40, pattern: ISO_DATE, patternHint: 'an ISO 8601 UTC time' };

// ---------------------------------------------------------------- types

/** `ca.roots`, `intentions.get` requests carry only the version. */
export interface EmptyRequestV1 {
  v: 1;
}

export interface RootV1 {
  /** SHA-256 fingerprint of the root certificate's DER, lowercase hex. */
  id: string;
  pem: string;
  /** ISO 8601. */
  notAfter: string;
}

/** Reply of `ca.roots` / `ca.rotate`, body of `ca.roots.changed`. */
export interface RootsV1 {
  v: 1;
  trustDomain: string;
  activeRootId: string;
  roots: RootV1[];
}

export interface SignRequestV1 {
  v: 1;
  node: string;
  token: string;
  service: string;
  serviceId: string;
  /** PEM PKCS#10 with exactly one URI SAN: the service's SPIFFE ID. */
  csr: string;
  /**
   * Set by a terminating gateway asking for a leaf of a service it links (docs/gateways.md):
   * the gateway's service name; `serviceId` is then the gateway instance's ID and `service`
   * the linked service. Absent for an instance's own certificate.
   */
  gateway?: string;
}

export interface SignResponseV1 {
  v: 1;
  cert: string;
  /** Issuing CA certificate(s), PEM, from the issuer up to its root. */
  chain: string[];
  serial: string;
  notBefore: string;
  notAfter: string;
  spiffeId: string;
}

export interface IntentionsSnapshotV1 extends IntentionsSnapshot {
  v: 1;
}

export interface IntentionUpsertRequestV1 {
  v: 1;
  operatorToken: string;
  intention: Intention;
}

export interface IntentionUpsertResponseV1 {
  v: 1;
  revision: number;
  intention: Intention;
  /** Saved, but likely not what the operator means (e.g. L7 permissions on a tcp service). */
  warnings?: string[];
}

export interface IntentionDeleteRequestV1 {
  v: 1;
  operatorToken: string;
  source: string;
  destination: string;
}

export interface IntentionDeleteResponseV1 {
  v: 1;
  revision: number;
}

export interface TokenCreateRequestV1 {
  v: 1;
  operatorToken: string;
  node: string;
  services: string[];
  /** Lifetime in seconds; absent or 0 for a token that never expires. */
  ttlSeconds?: number;
}

export interface TokenCreateResponseV1 {
  v: 1;
  token: string;
  node: string;
  services: string[];
  /** ISO 8601, or null for no expiry. */
  expiresAt: string | null;
}

/** `intentions.policy`: change the default policy and/or audit mode; reply is the snapshot. */
export interface IntentionsPolicyRequestV1 {
  v: 1;
  operatorToken: string;
  defaultPolicy?: 'allow' | 'deny';
  auditMode?: boolean;
}

export interface CaRotateRequestV1 {
  v: 1;
  operatorToken: string;
}

type Data = Uint8Array | string;

// ---------------------------------------------------------------- requests (strict)

function request(data: Data, what: string, keys: readonly string[]): JsonObject {
  const o = parseJsonObject(data, what);
  checkVersion(o, what);
  checkKeys(o, keys, what);
  return o;
}

export function decodeEmptyRequestV1(data: Data, what = 'request'): EmptyRequestV1 {
  request(data, what, ['v']);
  return { v: 1 };
}

export function decodeSignRequestV1(data: Data): SignRequestV1 {
  const w = 'ca.sign request';
  const o = request(data, w, ['v', 'node', 'token', 'service', 'serviceId', 'csr', 'gateway']);
  return {
    v: 1,
    node: readString(o, 'node', w, nodeRule),
    token: readString(o, 'token', w, { maxLength: MAX_TOKEN_LENGTH }),
    service: readString(o, 'service', w, serviceRule),
    serviceId: readString(o, 'serviceId', w, {
      maxLength: 256,
      pattern: SERVICE_ID,
      patternHint: 'a Consul service ID (printable, no spaces)',
    }),
    csr: readString(o, 'csr', w, { maxLength: MAX_CSR_LENGTH }),
    ...(o.gateway === undefined ? {} : { gateway: readString(o, 'gateway', w, serviceRule) }),
  };
}

function intentionField(o: JsonObject, w: string): Intention {
  const raw = readObject(o, 'intention', w);
  return validateIntention(raw, `${w}.intention`);
}

export function decodeIntentionUpsertRequestV1(data: Data): IntentionUpsertRequestV1 {
  const w = 'intentions.upsert request';
  const o = request(data, w, ['v', 'operatorToken', 'intention']);
  return {
    v: 1,
    operatorToken: readString(o, 'operatorToken', w, { minLength: 0, maxLength: MAX_TOKEN_LENGTH }),
    intention: intentionField(o, w),
  };
}

const endpointName = {
  maxLength: 63,
  pattern: /^(\*|[A-Za-z0-9][A-Za-z0-9_-]*)$/,
  patternHint: 'a service name or "*"',
};

export function decodeIntentionDeleteRequestV1(data: Data): IntentionDeleteRequestV1 {
  const w = 'intentions.delete request';
  const o = request(data, w, ['v', 'operatorToken', 'source', 'destination']);
  return {
    v: 1,
    operatorToken: readString(o, 'operatorToken', w, { minLength: 0, maxLength: MAX_TOKEN_LENGTH }),
    source: readString(o, 'source', w, endpointName),
    destination: readString(o, 'destination', w, endpointName),
  };
}

function readGlobs(o: JsonObject, w: string): string[] {
  return readArray(o, 'services', w, { minItems: 1, maxItems: MAX_GLOBS }).map((g, i) => {
    if (typeof g !== 'string' || !SERVICE_GLOB.test(g))
      throw invalid(
        w,
        `services[${i}] ${JSON.stringify(g)} is not a service glob (letters, digits, -, _ and *)`,
        { field: `services[${i}]` },
      );
    return g;
  });
}

export function decodeTokenCreateRequestV1(data: Data): TokenCreateRequestV1 {
  const w = 'tokens.create request';
  const o = request(data, w, ['v', 'operatorToken', 'node', 'services', 'ttlSeconds']);
  const r: TokenCreateRequestV1 = {
    v: 1,
    operatorToken: readString(o, 'operatorToken', w, { minLength: 0, maxLength: MAX_TOKEN_LENGTH }),
    node: readString(o, 'node', w, nodeRule),
    services: readGlobs(o, w),
  };
  if (o.ttlSeconds !== undefined)
    r.ttlSeconds = readNumber(o, 'ttlSeconds', w, { integer: true, min: 0, max: 10 * 365 * 86400 });
  return r;
}

export function decodeIntentionsPolicyRequestV1(data: Data): IntentionsPolicyRequestV1 {
  const w = 'intentions.policy request';
  const o = request(data, w, ['v', 'operatorToken', 'defaultPolicy', 'auditMode']);
  const r: IntentionsPolicyRequestV1 = {
    v: 1,
    operatorToken: readString(o, 'operatorToken', w, { minLength: 0, maxLength: MAX_TOKEN_LENGTH }),
  };
  if (o.defaultPolicy !== undefined) {
    if (o.defaultPolicy !== 'allow' && o.defaultPolicy !== 'deny')
      throw invalid(w, 'field "defaultPolicy" must be "allow" or "deny"', {
        field: 'defaultPolicy',
      });
    r.defaultPolicy = o.defaultPolicy;
  }
  if (o.auditMode !== undefined) {
    if (typeof o.auditMode !== 'boolean')
      throw invalid(w, 'field "auditMode" must be a boolean', { field: 'auditMode' });
    r.auditMode = o.auditMode;
  }
  if (r.defaultPolicy === undefined && r.auditMode === undefined)
    throw invalid(w, 'give "defaultPolicy", "auditMode" or both');
  return r;
}

export function decodeCaRotateRequestV1(data: Data): CaRotateRequestV1 {
  const w = 'ca.rotate request';
  const o = request(data, w, ['v', 'operatorToken']);
  return {
    v: 1,
    operatorToken: readString(o, 'operatorToken', w, { minLength: 0, maxLength: MAX_TOKEN_LENGTH }),
  };
}

// ---------------------------------------------------------------- replies and publications

function reply(o: JsonObject, what: string): JsonObject {
  checkVersion(o, what);
  return o;
}

export function rootsFromObject(o: JsonObject, w = 'ca.roots reply'): RootsV1 {
  reply(o, w);
  const trustDomain = readString(o, 'trustDomain', w, { maxLength: 253 });
  const activeRootId = readString(o, 'activeRootId', w, {
    pattern: /^[0-9a-f]{64}$/,
    patternHint: 'a SHA-256 hex fingerprint',
  });
  const roots = readArray(o, 'roots', w, { minItems: 1, maxItems: 16 }).map((r, i) => {
    if (typeof r !== 'object' || r === null || Array.isArray(r))
      throw invalid(w, `roots[${i}] must be an object`, { field: `roots[${i}]` });
    const ro = r as JsonObject;
    const rw = `${w} roots[${i}]`;
    return {
      id: readString(ro, 'id', rw, {
        pattern: /^[0-9a-f]{64}$/,
        patternHint: 'a SHA-256 hex fingerprint',
      }),
      pem: readString(ro, 'pem', rw, { maxLength: MAX_PEM_LENGTH }),
      notAfter: readString(ro, 'notAfter', rw, dateRule),
    };
  });
  if (!roots.some((r) => r.id === activeRootId))
    throw invalid(w, `activeRootId ${activeRootId} is not among the roots`, {
      field: 'activeRootId',
    });
  return { v: 1, trustDomain, activeRootId, roots };
}

export function decodeRootsV1(data: Data): RootsV1 {
  return decodeReply(data, 'ca.roots reply', (o) => rootsFromObject(o));
}

export function signResponseFromObject(o: JsonObject): SignResponseV1 {
  const w = 'ca.sign reply';
  reply(o, w);
  const chain = readArray(o, 'chain', w, { maxItems: 8 }).map((c, i) => {
    if (typeof c !== 'string' || c.length > MAX_PEM_LENGTH)
      throw invalid(w, `chain[${i}] must be a PEM string`, { field: `chain[${i}]` });
    return c;
  });
  return {
    v: 1,
    cert: readString(o, 'cert', w, { maxLength: MAX_PEM_LENGTH }),
    chain,
    serial: readString(o, 'serial', w, {
      maxLength: 64,
      pattern: /^[0-9a-f]+$/,
      patternHint: 'lowercase hex',
    }),
    notBefore: readString(o, 'notBefore', w, dateRule),
    notAfter: readString(o, 'notAfter', w, dateRule),
    spiffeId: readString(o, 'spiffeId', w, { maxLength: 2048 }),
  };
}

export function decodeSignResponseV1(data: Data): SignResponseV1 {
  return decodeReply(data, 'ca.sign reply', signResponseFromObject);
}

export function snapshotFromObject(o: JsonObject, w = 'intentions snapshot'): IntentionsSnapshotV1 {
  reply(o, w);
  try {
    return { v: 1, ...validateSnapshot(o, w) };
  } catch (err) {
    // a malformed snapshot is a malformed message for whoever receives it
    if (err instanceof RemoraError && err.code === 'REMORA_E_INTENTIONS_INVALID')
      throw invalid(w, err.message, { ...err.details });
    throw err;
  }
}

export function decodeIntentionsSnapshotV1(data: Data): IntentionsSnapshotV1 {
  return decodeReply(data, 'intentions snapshot', (o) => snapshotFromObject(o));
}

export function decodeIntentionUpsertResponseV1(data: Data): IntentionUpsertResponseV1 {
  const w = 'intentions.upsert reply';
  return decodeReply(data, w, (o) => {
    reply(o, w);
    const out: IntentionUpsertResponseV1 = {
      v: 1,
      revision: readNumber(o, 'revision', w, { integer: true, min: 0 }),
      intention: validateIntention(readObject(o, 'intention', w), `${w}.intention`),
    };
    // optional: control before this field sends none
    if (o.warnings !== undefined)
      out.warnings = readArray(o, 'warnings', w, { maxItems: 16 }).map((x, i) => {
        if (typeof x !== 'string' || x.length > 2000)
          throw invalid(w, `warnings[${i}] must be a string of at most 2000 characters`, {
            field: `warnings[${i}]`,
          });
        return x;
      });
    return out;
  });
}

export function decodeIntentionDeleteResponseV1(data: Data): IntentionDeleteResponseV1 {
  const w = 'intentions.delete reply';
  return decodeReply(data, w, (o) => {
    reply(o, w);
    return { v: 1, revision: readNumber(o, 'revision', w, { integer: true, min: 0 }) };
  });
}

export function decodeTokenCreateResponseV1(data: Data): TokenCreateResponseV1 {
  const w = 'tokens.create reply';
  return decodeReply(data, w, (o) => {
    reply(o, w);
    const expiresAt = o.expiresAt === null ? null : readString(o, 'expiresAt', w, dateRule);
    return {
      v: 1,
      token: readString(o, 'token', w, { maxLength: MAX_TOKEN_LENGTH }),
      node: readString(o, 'node', w, nodeRule),
      services: readGlobs(o, w),
      expiresAt,
    };
  });
}

/** Valid names for `node` (exported for the CLI's argument checks). */
export function isValidNodeName(name: string): boolean {
  return NODE_NAME.test(name);
}

/** Valid service glob for node tokens. */
export function isValidServiceGlob(glob: string): boolean {
  return SERVICE_GLOB.test(glob);
}

/** Valid service names in sign requests. */
export function isValidServiceName(name: string): boolean {
  return isValidName(name);
}
