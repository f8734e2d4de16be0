import { defineSchema } from '../define.ts';
import { logKeys } from './common.ts';

export const devconsulSchema = defineSchema(
  'devconsul',
  'The embedded Consul-compatible catalog for development and tests.',
  {
    ...logKeys(),
    listen: {
      doc: "host:port of the HTTP API (Consul's default is 127.0.0.1:8500).",
      format: String,
      default: '127.0.0.1:8500',
    },
    nodeName: {
      doc: 'Node name the embedded agent reports.',
      format: String,
      default: 'remora-dev',
    },
    datacenter: { doc: 'Datacenter the embedded agent reports.', format: String, default: 'dc1' },
  },
);
