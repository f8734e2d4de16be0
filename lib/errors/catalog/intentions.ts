import type { ErrorSpec } from './types.ts';

/** Error codes of the intentions area. Append only; never rename or reuse a code. */
export const INTENTIONS_ERRORS = {
  REMORA_E_INTENTIONS_INVALID: {
    meaning:
      'An intention is malformed: bad service name, both or neither of `action` and `permissions`, an empty HTTP match, two path matchers, or a regex that does not compile.',
    remedy:
      'Fix the named field; an intention has either `action` (allow|deny) or a non-empty `permissions` list, with at most one of pathExact/pathPrefix/pathRegex per permission.',
  },
  REMORA_E_INTENTIONS_DENIED: {
    meaning: 'An intention (or the default policy) denies this source calling this destination.',
    remedy:
      'Allow it with `remora intention create <source> <destination>`, or check which rule decides with `remora intention check <source> <destination>`.',
    status: 403,
  },
} as const satisfies Record<string, ErrorSpec>;
