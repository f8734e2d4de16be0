import { defineSchema } from '../define.ts';
import { consulKeys, datacenterKeys, logKeys, natsKeys, tracingKeys } from './common.ts';

export const agentSchema = defineSchema(
  'agent',
  'The per-host agent: registration, identity, discovery, proxy supervision.',
  {
    ...datacenterKeys(),
    ...natsKeys(),
    ...consulKeys(),
    ...logKeys(),
    ...tracingKeys(),
    node: {
      doc: 'This host\'s node name, as written into Meta["remora-node"] and the node token.',
      format: String,
      default: 'localhost',
    },
    nodeToken: {
      doc: "Node token from `remora token create`, authorizing CSRs for this node's services.",
      format: String,
      default: '',
      sensitive: true,
    },
    configDir: {
      doc: 'Directory of service definitions in Consul JSON format (one or more services per *.json file).',
      format: String,
      default: '/etc/remora/services.d',
    },
    dataDir: {
      doc: 'Directory for workload keys (0600), certificates and the agent socket.',
      format: String,
      default: '/var/lib/remora',
    },
    adminPortBase: {
      doc: 'First loopback port for proxy admin endpoints; each instance takes the next free one.',
      format: 'port',
      default: 19000,
    },
    drainTimeoutMs: {
      doc: 'Longest time a stopping proxy waits for in-flight requests, in milliseconds.',
      format: 'nat',
      default: 10000,
    },
    intentionsRefreshMs: {
      doc: 'Period of the full intentions re-fetch (change messages apply in between), in milliseconds.',
      format: 'nat',
      default: 60000,
    },
  },
);
