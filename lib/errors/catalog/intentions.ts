import type { ErrorSpec } from './types.ts';

/** Error codes of the intentions area. Append only; never rename or reuse a code. */
export const INTENTIONS_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
