import type { ErrorSpec } from './types.ts';

/** Error codes of the env area. Append only; never rename or reuse a code. */
export const ENV_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
