import type { ErrorSpec } from './types.ts';

/** Error codes of the consul area. Append only; never rename or reuse a code. */
export const CONSUL_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
