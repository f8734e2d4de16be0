import { RemoraError } from '../errors/index.ts';
import { isValidName } from '../identity/index.ts';

/** The queue group every control replica serves requests in (one replica answers each). */
export const CONTROL_QUEUE_GROUP = 'remora-control';

/** Subjects of the control-plane contract (docs/design.md §4) for one datacenter. */
export interface ControlSubjects {
  caRoots: string;
  caRootsChanged: string;
  caSign: string;
  caRotate: string;
  intentionsGet: string;
  intentionsChanged: string;
  intentionsUpsert: string;
  intentionsDelete: string;
  intentionsPolicy: string;
  tokensCreate: string;
}

const cache = new Map<string, ControlSubjects>();

/** `remora.v1.<dc>.…` subjects; throws REMORA_E_IDENTITY_INVALID for a bad datacenter name. */
export function subjects(dc: string): ControlSubjects {
  const hit = cache.get(dc);
  if (hit) return hit;
  if (!isValidName(dc)) {
    throw new RemoraError(
      'REMORA_E_IDENTITY_INVALID',
      `invalid datacenter name ${JSON.stringify(dc)} for NATS subjects; use letters, digits, dashes and underscores`,
      { field: 'datacenter', value: dc },
    );
  }
  const p = `remora.v1.${dc}`;
  const s: ControlSubjects = Object.freeze({
    caRoots: `${p}.ca.roots`,
    caRootsChanged: `${p}.ca.roots.changed`,
    caSign: `${p}.ca.sign`,
    caRotate: `${p}.ca.rotate`,
    intentionsGet: `${p}.intentions.get`,
    intentionsChanged: `${p}.intentions.changed`,
    intentionsUpsert: `${p}.intentions.upsert`,
    intentionsDelete: `${p}.intentions.delete`,
    intentionsPolicy: `${p}.intentions.policy`,
    tokensCreate: `${p}.tokens.create`,
  });
  cache.set(dc, s);
  return s;
}
