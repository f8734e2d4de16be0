import { defineSchema } from '../define.ts';
import { logKeys } from './common.ts';

export const devSchema = defineSchema(
  'dev',
  'A whole mesh on one machine: catalog, NATS, control, agent, demo services.',
  {
    ...logKeys(),
    otlpEndpoint: {
      doc: "Where traces go (Jaeger all-in-one's OTLP/HTTP port by default).",
      format: String,
      default: 'http://127.0.0.1:4318/v1/traces',
    },
    webPort: { doc: 'Loopback port of the demo web service.', format: 'port', default: 8080 },
    examplesDir: {
      doc: 'Directory holding demo service definitions.',
      format: String,
      default: 'examples/services',
    },
  },
);
