import type { ErrorSpec } from './types.ts';

/** Error codes of the proxy area. Append only; never rename or reuse a code. */
export const PROXY_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
