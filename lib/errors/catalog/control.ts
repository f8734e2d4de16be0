import type { ErrorSpec } from './types.ts';

/** Error codes of the control area. Append only; never rename or reuse a code. */
export const CONTROL_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
