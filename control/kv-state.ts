// JSON documents in Consul KV, created and updated only with check-and-set so replicas never fork.
import { RemoraError } from '../lib/errors/index.ts';
import { consulUnavailable, type ControlKv } from './consul.ts';

export const DEFAULT_CAS_ATTEMPTS = 16;

export interface Versioned<T> {
  value: T;
  modifyIndex: number;
}

function parse<T>(key: string, text: string, decode: (raw: unknown) => T): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_CONTROL_STATE_CORRUPT',
      `Consul KV key ${key} is not valid JSON (${(err as Error).message}); restore it from backup`,
      { key },
      { cause: err },
    );
  }
  try {
    return decode(raw);
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_CONTROL_STATE_CORRUPT',
      `Consul KV key ${key} holds an unexpected document: ${(err as Error).message}`,
      { key },
      { cause: err },
    );
  }
}

export async function readDoc<T>(
  kv: ControlKv,
  key: string,
  decode: (raw: unknown) => T,
): Promise<Versioned<T> | undefined> {
  let entry;
  try {
    entry = await kv.get(key);
  } catch (err) {
    throw consulUnavailable(err, `read Consul KV key ${key}`);
  }
  if (!entry) return undefined;
  return { value: parse(key, entry.value, decode), modifyIndex: entry.modifyIndex };
}

async function put(kv: ControlKv, key: string, value: string, cas: number): Promise<boolean> {
  try {
    return await kv.put(key, value, { cas });
  } catch (err) {
    throw consulUnavailable(err, `write Consul KV key ${key}`);
  }
}

/**
 * The document at `key`, created with `make()` and CAS 0 when absent. When two replicas race,
 * exactly one write wins and both return the winner's document.
 */
export async function loadOrCreateDoc<T>(
  kv: ControlKv,
  key: string,
  decode: (raw: unknown) => T,
  make: () => T,
): Promise<{ value: T; created: boolean }> {
  for (let attempt = 0; attempt < DEFAULT_CAS_ATTEMPTS; attempt += 1) {
    const existing = await readDoc(kv, key, decode);
    if (existing) return { value: existing.value, created: false };
    const fresh = make();
    if (await put(kv, key, JSON.stringify(fresh), 0)) return { value: fresh, created: true };
  }
  throw new RemoraError(
    'REMORA_E_CONTROL_KV_CONFLICT',
    `could not create Consul KV key ${key} after ${DEFAULT_CAS_ATTEMPTS} check-and-set attempts; retry`,
    { key },
  );
}

/**
 * Read-modify-write with CAS, retried when another writer got there first. `change` gets the
 * current document (undefined when absent) and returns the next one; it must be pure.
 */
export async function updateDoc<T>(
  kv: ControlKv,
  key: string,
  decode: (raw: unknown) => T,
  change: (current: T | undefined) => T,
  attempts = DEFAULT_CAS_ATTEMPTS,
): Promise<T> {
  for (let attempt = 0; attempt < attempts; attempt += 1) {
    const existing = await readDoc(kv, key, decode);
    const next = change(existing?.value);
    if (await put(kv, key, JSON.stringify(next), existing?.modifyIndex ?? 0)) return next;
  }
  throw new RemoraError(
    'REMORA_E_CONTROL_KV_CONFLICT',
    `Consul KV key ${key} kept changing under ${attempts} check-and-set attempts; retry`,
    { key },
  );
}
