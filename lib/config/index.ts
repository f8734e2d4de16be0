export { defineSchema, listLeaves, isLeaf } from './define.ts';
export type { ConfigLeaf, ConfigTree, ProgramSchema } from './define.ts';
export { loadConfig, redactConfig } from './load.ts';
export type { ConfigOf, ConfigProblem, LoadConfigOptions } from './load.ts';
export { controlSchema } from './schemas/control.ts';
export { agentSchema } from './schemas/agent.ts';
export { proxySchema } from './schemas/proxy.ts';
export { devconsulSchema } from './schemas/devconsul.ts';
export { devSchema } from './schemas/dev.ts';
export { cliSchema } from './schemas/cli.ts';
export { renderConfigDoc } from './doc.ts';

import { agentSchema } from './schemas/agent.ts';
import { cliSchema } from './schemas/cli.ts';
import { controlSchema } from './schemas/control.ts';
import { devSchema } from './schemas/dev.ts';
import { devconsulSchema } from './schemas/devconsul.ts';
import { proxySchema } from './schemas/proxy.ts';

/** Every program's schema, in the order docs/config.md lists them. */
export const ALL_SCHEMAS = [
  controlSchema,
  agentSchema,
  proxySchema,
  devSchema,
  devconsulSchema,
  cliSchema,
] as const;
