import { defineSchema } from '../define.ts';
import { consulKeys, datacenterKeys, natsKeys } from './common.ts';

export const cliSchema = defineSchema(
  'cli',
  'The operator command line (intention, token, ca, status, explain, traces).',
  {
    ...datacenterKeys(),
    ...natsKeys(),
    ...consulKeys(),
    operatorToken: {
      doc: 'Operator token for intentions and token requests.',
      format: String,
      default: '',
      sensitive: true,
    },
    jaegerUrl: {
      doc: 'Base URL of the Jaeger query service and UI.',
      format: String,
      default: 'http://127.0.0.1:16686',
    },
    agentAdmin: {
      doc: "URL of the local agent's admin endpoint (for status and explain).",
      format: String,
      default: 'http://127.0.0.1:18999',
    },
  },
);
