import type { ErrorSpec } from './types.ts';

/** Error codes of the devconsul area. Append only; never rename or reuse a code. */
export const DEVCONSUL_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
