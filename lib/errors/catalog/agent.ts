import type { ErrorSpec } from './types.ts';

/** Error codes of the agent area. Append only; never rename or reuse a code. */
export const AGENT_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
