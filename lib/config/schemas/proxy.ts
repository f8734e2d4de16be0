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
    http: {
      maxHeadBytes: {
        doc: 'Largest HTTP/1.1 request head (request line and headers) in bytes; larger is answered 431.',
        format: 'nat',
        default: 16384,
      },
      maxHeaderCount: {
        doc: 'Most header fields in one HTTP/1.1 request; more is answered 431.',
        format: 'nat',
        default: 100,
      },
      headerTimeoutMs: {
        doc: 'A started request head must be complete within this many milliseconds, else 408.',
        format: 'nat',
        default: 10000,
      },
      clientIdleTimeoutMs: {
        doc: 'Idle keep-alive client connections on the proxy listeners close after this many milliseconds.',
        format: 'nat',
        default: 120000,
      },
    },
    drainTimeoutMs: {
      doc: 'On SIGTERM, how long in-flight requests may finish before the remaining connections are closed.',
      format: 'nat',
      default: 20000,
    },
  },
);
