import type { ErrorSpec } from './types.ts';

/** Error codes of the telemetry area. Append only; never rename or reuse a code. */
export const TELEMETRY_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
