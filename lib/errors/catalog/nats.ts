import type { ErrorSpec } from './types.ts';

/** Error codes of the nats area. Append only; never rename or reuse a code. */
export const NATS_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
