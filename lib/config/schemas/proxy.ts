import { defineSchema } from '../define.ts';
import { logKeys } from './common.ts';

export const proxySchema = defineSchema(
  'proxy',
  'One data-plane process per service instance, fed by its agent.',
  {
    ...logKeys(),
    instance: {
      doc: 'Service instance ID this proxy serves (the Consul service ID).',
      format: String,
      default: '',
    },
    agentSocket: {
      doc: "Path of the agent's Unix socket that streams config snapshots; empty with staticConfig.",
      format: String,
      default: '',
    },
    staticConfig: {
      doc: 'Path of a JSON snapshot (same schema as the agent stream) for debugging without an agent.',
      format: String,
      default: '',
    },
    admin: {
      host: {
        doc: 'Admin listener address; loopback only unless you know why.',
        format: String,
        default: '127.0.0.1',
      },
      port: { doc: 'Admin listener port (0 picks a free one).', format: 'port', default: 0 },
    },
  },
);
