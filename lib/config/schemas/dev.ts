import { defineSchema } from '../define.ts';
import { logKeys } from './common.ts';

export const devSchema = defineSchema(
  'dev',
  'A whole mesh on one machine: catalog, NATS, control, agent, demo services.',
  {
    ...logKeys(),
    datacenter: { doc: 'Datacenter name of the demo mesh.', format: String, default: 'dc1' },
    otlpEndpoint: {
      doc: "Where traces go (Jaeger all-in-one's OTLP/HTTP port by default); empty disables export.",
      format: String,
      default: 'http://127.0.0.1:4318/v1/traces',
    },
    examplesDir: {
      doc: 'Directory of the demo service definitions (relative paths are resolved against the Remora checkout).',
      format: String,
      default: 'examples/services',
    },
    consulPort: {
      doc: 'Port of the embedded catalog on 127.0.0.1; 0 picks a free one.',
      format: 'port',
      default: 0,
    },
    natsPort: {
      doc: 'Port of the nats-server child on 127.0.0.1; 0 picks a free one.',
      format: 'port',
      default: 0,
    },
    agentAdminPort: {
      doc: "Port of the agent's status endpoint on 127.0.0.1 (what `remora status` reads); 0 picks a free one.",
      format: 'port',
      default: 18999,
    },
    readyTimeoutMs: {
      doc: 'How long to wait for the demo call to succeed through the mesh before giving up, in milliseconds.',
      format: 'nat',
      default: 60000,
    },
    keepWorkDir: {
      doc: 'Keep the temporary directory (logs, keys, agent socket) after stopping, for inspection.',
      format: Boolean,
      default: false,
    },
  },
);
