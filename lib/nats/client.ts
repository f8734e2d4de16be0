// Client side of the control-plane contract, used by the agent and the CLI. Each helper encodes
// the request, decodes the reply and turns an error reply into a thrown RemoraError with the
// same code.
import {
  ErrorCode as NatsErrorCode,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from 'nats';
import { RemoraError, toRemoraError } from '../errors/index.ts';
import type { Intention } from '../intentions/types.ts';
import type { Logger } from '../log/index.ts';
import { encodeMessage, parseJsonObject } from './codec.ts';
import {
  decodeIntentionDeleteResponseV1,
  decodeIntentionUpsertResponseV1,
  decodeIntentionsSnapshotV1,
  decodeRootsV1,
  decodeSignResponseV1,
  decodeTokenCreateResponseV1,
  rootsFromObject,
  snapshotFromObject,
  type IntentionDeleteResponseV1,
  type IntentionUpsertResponseV1,
  type IntentionsSnapshotV1,
  type RootsV1,
  type SignRequestV1,
  type SignResponseV1,
  type TokenCreateResponseV1,
} from './messages.ts';
import { subjects } from './subjects.ts';

export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;

export interface RequestOptions {
  timeoutMs?: number;
  /** Extra NATS headers, e.g. `headersWithTraceContext(carrier)`. */
  headers?: MsgHdrs;
}

/** One request/reply round trip with NATS errors mapped to coded ones. */
export async function requestJson<T>(
  nc: NatsConnection,
  subject: string,
  body: object,
  decode: (data: Uint8Array) => T,
  options: RequestOptions = {},
): Promise<T> {
  const timeout = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  let data: Uint8Array;
  try {
    const msg = await nc.request(subject, encodeMessage(body), {
      timeout,
      ...(options.headers ? { headers: options.headers } : {}),
    });
    data = msg.data;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === NatsErrorCode.NoResponders)
      throw new RemoraError(
        'REMORA_E_NATS_NO_RESPONDERS',
        `nobody serves ${subject}; start \`remora control\` for this datacenter`,
        { subject },
        { cause: err },
      );
    if (code === NatsErrorCode.Timeout)
      throw new RemoraError(
        'REMORA_E_NATS_TIMEOUT',
        `no reply on ${subject} within ${timeout} ms; check that remora control is running and reachable`,
        { subject, timeoutMs: timeout },
        { cause: err },
      );
    throw new RemoraError(
      'REMORA_E_NATS_CONNECT_FAILED',
      `request on ${subject} failed: ${(err as Error).message}`,
      { subject },
      { cause: err },
    );
  }
  return decode(data);
}

export function requestSign(
  nc: NatsConnection,
  dc: string,
  req: Omit<SignRequestV1, 'v'>,
  options: RequestOptions = {},
): Promise<SignResponseV1> {
  return requestJson(nc, subjects(dc).caSign, { v: 1, ...req }, decodeSignResponseV1, options);
}

export function requestRoots(
  nc: NatsConnection,
  dc: string,
  options: RequestOptions = {},
): Promise<RootsV1> {
  return requestJson(nc, subjects(dc).caRoots, { v: 1 }, decodeRootsV1, options);
}

export function requestIntentions(
  nc: NatsConnection,
  dc: string,
  options: RequestOptions = {},
): Promise<IntentionsSnapshotV1> {
  return requestJson(nc, subjects(dc).intentionsGet, { v: 1 }, decodeIntentionsSnapshotV1, options);
}

export function upsertIntention(
  nc: NatsConnection,
  dc: string,
  operatorToken: string,
  intention: Intention,
  options: RequestOptions = {},
): Promise<IntentionUpsertResponseV1> {
  return requestJson(
    nc,
    subjects(dc).intentionsUpsert,
    { v: 1, operatorToken, intention },
    decodeIntentionUpsertResponseV1,
    options,
  );
}

export function deleteIntention(
  nc: NatsConnection,
  dc: string,
  operatorToken: string,
  pair: { source: string; destination: string },
  options: RequestOptions = {},
): Promise<IntentionDeleteResponseV1> {
  return requestJson(
    nc,
    subjects(dc).intentionsDelete,
    { v: 1, operatorToken, source: pair.source, destination: pair.destination },
    decodeIntentionDeleteResponseV1,
    options,
  );
}

/** Changes the default policy and/or audit mode; resolves to the new snapshot. */
export function setIntentionsPolicy(
  nc: NatsConnection,
  dc: string,
  operatorToken: string,
  change: { defaultPolicy?: 'allow' | 'deny'; auditMode?: boolean },
  options: RequestOptions = {},
): Promise<IntentionsSnapshotV1> {
  return requestJson(
    nc,
    subjects(dc).intentionsPolicy,
    { v: 1, operatorToken, ...change },
    decodeIntentionsSnapshotV1,
    options,
  );
}

export function createToken(
  nc: NatsConnection,
  dc: string,
  operatorToken: string,
  req: { node: string; services: string[]; ttlSeconds?: number },
  options: RequestOptions = {},
): Promise<TokenCreateResponseV1> {
  return requestJson(
    nc,
    subjects(dc).tokensCreate,
    { v: 1, operatorToken, ...req },
    decodeTokenCreateResponseV1,
    options,
  );
}

export function rotateCa(
  nc: NatsConnection,
  dc: string,
  operatorToken: string,
  options: RequestOptions = {},
): Promise<RootsV1> {
  return requestJson(nc, subjects(dc).caRotate, { v: 1, operatorToken }, decodeRootsV1, {
    timeoutMs: 30_000,
    ...options,
  });
}

export interface SubscribeOptions {
  /** Invalid publications are logged here (with their code) and dropped. */
  logger?: Logger;
}

function subscribeDecoded<T>(
  nc: NatsConnection,
  subject: string,
  what: string,
  fromData: (data: Uint8Array) => T,
  cb: (value: T, headers: MsgHdrs | undefined) => void,
  options: SubscribeOptions,
): Subscription {
  return nc.subscribe(subject, {
    callback: (err, msg) => {
      if (err) {
        options.logger?.warn(
          { code: 'REMORA_E_NATS_CONNECT_FAILED', subject },
          `${what} subscription failed: ${err.message}`,
        );
        return;
      }
      let value: T;
      try {
        value = fromData(msg.data);
      } catch (e) {
        const re = toRemoraError(e);
        options.logger?.warn({ code: re.code, subject }, `dropped invalid ${what}: ${re.message}`);
        return;
      }
      cb(value, msg.headers);
    },
  });
}

/** Calls `cb` with each valid `ca.roots.changed` publication. */
export function subscribeRootsChanged(
  nc: NatsConnection,
  dc: string,
  cb: (roots: RootsV1, headers: MsgHdrs | undefined) => void,
  options: SubscribeOptions = {},
): Subscription {
  return subscribeDecoded(
    nc,
    subjects(dc).caRootsChanged,
    'ca.roots.changed',
    (d) => rootsFromObject(parseJsonObject(d, 'ca.roots.changed'), 'ca.roots.changed'),
    cb,
    options,
  );
}

/**
 * Calls `cb` with each valid `intentions.changed` snapshot. Receivers apply only a revision
 * higher than the one they hold (publications may arrive out of order across replicas).
 */
export function subscribeIntentionsChanged(
  nc: NatsConnection,
  dc: string,
  cb: (snapshot: IntentionsSnapshotV1, headers: MsgHdrs | undefined) => void,
  options: SubscribeOptions = {},
): Subscription {
  return subscribeDecoded(
    nc,
    subjects(dc).intentionsChanged,
    'intentions.changed',
    (d) => snapshotFromObject(parseJsonObject(d, 'intentions.changed'), 'intentions.changed'),
    cb,
    options,
  );
}
