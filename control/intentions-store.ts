// The intentions document in Consul KV (`<prefix>intentions`): Consul's model plus a revision
// that grows by one on every change, the default policy and the audit-mode switch.
import { RemoraError } from '../lib/errors/index.ts';
import {
  sortIntentions,
  validateSnapshot,
  type DefaultPolicy,
  type Intention,
  type IntentionsSnapshot,
} from '../lib/intentions/index.ts';

export function decodeIntentionsDoc(raw: unknown): IntentionsSnapshot {
  return validateSnapshot(raw, 'intentions document');
}

export function emptyIntentionsDoc(
  defaultPolicy: DefaultPolicy,
  auditMode: boolean,
): IntentionsSnapshot {
  return { revision: 1, defaultPolicy, auditMode, intentions: [] };
}

/** The next document with `intention` added or replacing the one for its source/destination. */
export function upsertInDoc(
  doc: IntentionsSnapshot,
  intention: Intention,
  now: number,
): IntentionsSnapshot {
  const stamp = new Date(now).toISOString();
  const existing = doc.intentions.find(
    (i) => i.source === intention.source && i.destination === intention.destination,
  );
  const next: Intention = {
    ...intention,
    createdAt: existing?.createdAt ?? stamp,
    updatedAt: stamp,
  };
  const others = doc.intentions.filter((i) => i !== existing);
  return { ...doc, revision: doc.revision + 1, intentions: sortIntentions([...others, next]) };
}

/** The next document without the source/destination intention; INTENTION_NOT_FOUND when absent. */
export function deleteFromDoc(
  doc: IntentionsSnapshot,
  pair: { source: string; destination: string },
): IntentionsSnapshot {
  const remaining = doc.intentions.filter(
    (i) => !(i.source === pair.source && i.destination === pair.destination),
  );
  if (remaining.length === doc.intentions.length)
    throw new RemoraError(
      'REMORA_E_CONTROL_INTENTION_NOT_FOUND',
      `no intention ${pair.source} → ${pair.destination}; list them with: remora intention list`,
      { ...pair },
    );
  return { ...doc, revision: doc.revision + 1, intentions: remaining };
}
