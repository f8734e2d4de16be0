import type { ErrorSpec } from './types.ts';

/** Error codes of the dev area. Append only; never rename or reuse a code. */
export const DEV_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
