import { defineSchema } from '../define.ts';
import { consulKeys, datacenterKeys, logKeys, natsKeys, tracingKeys } from './common.ts';

/** A whole number of at least 1 (docs/config.md shows the format as `positive`). */
function positive(v: unknown): void {
  if (!Number.isInteger(v) || (v as number) < 1)
    throw new Error('must be a whole number of at least 1');
}

export const agentSchema = defineSchema(
  'agent',
  'The per-host agent: registration, identity, discovery, proxy supervision.',
  {
    ...datacenterKeys(),
    ...natsKeys(),
    ...consulKeys({ dnsDomains: true }),
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
    adminPort: {
      doc: "Port of the agent's status endpoint on 127.0.0.1 (read by `remora status`); 0 picks a free one.",
      format: 'port',
      default: 18999,
    },
    proxyCommand: {
      doc: "Path of the `remora` entry script that proxies are started from; empty means this installation's bin/remora.js.",
      format: String,
      default: '',
    },
    proxyBindAddress: {
      doc: "Address each proxy's public mTLS listener binds to.",
      format: String,
      default: '0.0.0.0',
    },
    advertiseAddress: {
      doc: "Address registered for sidecars in Consul (what other hosts dial); empty means Consul's node address.",
      format: String,
      default: '',
    },
    sidecarPortMin: {
      doc: 'First port of the range sidecars take when their definition names no port (Consul uses 21000–21255).',
      format: 'port',
      default: 21000,
    },
    sidecarPortMax: {
      doc: 'Last port of the automatic sidecar port range.',
      format: 'port',
      default: 21255,
    },
    checkTtlMs: {
      doc: "TTL of each sidecar's readiness check in Consul; the agent refreshes it every third of this, in milliseconds.",
      format: 'nat',
      default: 30000,
    },
    adoptTimeoutMs: {
      doc: "How long a starting agent waits for running proxies (from pid files) to reconnect before replacing them, in milliseconds; longer than the proxies' reconnect backoff (10 s).",
      format: 'nat',
      default: 15000,
    },
    transparentPortMin: {
      doc: 'First 127.0.0.1 port of the range the agent allocates to transparent listeners (Host-routing HTTP, and upstreams without local_bind_port); see docs/transparent.md.',
      format: 'port',
      default: 15001,
    },
    transparentPortMax: {
      doc: 'Last port of the transparent listener range.',
      format: 'port',
      default: 15999,
    },
    exposePortMin: {
      doc: "First port of the range the agent allocates to exposed checks' listeners (proxy.expose.checks; Consul's expose_min_port); see docs/agent.md.",
      format: 'port',
      default: 21500,
    },
    exposePortMax: {
      doc: "Last port of the exposed checks' listener range (Consul's expose_max_port).",
      format: 'port',
      default: 21755,
    },
    transparentDerivedMax: {
      doc: "Most services the agent's transparent instances may call by their intentions (derived upstreams), all instances together; each one holds a blocking query to Consul. See docs/transparent.md.",
      format: 'nat',
      default: 128,
    },
    transparentProxyUid: {
      doc: "User ID whose connections the transparent interception rules let pass untouched (the proxies'); -1 means the agent's own user, which the proxies inherit. Applications must run as another user.",
      format: 'int',
      default: -1,
    },
    proxyLogMaxBytes: {
      doc: "Size past which a proxy's output file (<dataDir>/instances/<id>/proxy.log: its log, and access logs of Type stdout) is rotated to proxy.log.1, in bytes; 0 never rotates (leave it to logrotate).",
      format: 'nat',
      default: 67108864,
    },
    proxyLogFiles: {
      doc: 'Rotated copies of each proxy.log kept (proxy.log.1 … proxy.log.<n>), at least 1.',
      format: positive,
      default: 2,
    },
    proxyLogCheckMs: {
      doc: 'How often the agent compares each proxy.log with proxyLogMaxBytes, in milliseconds.',
      format: positive,
      default: 30000,
    },
    keepProxies: {
      doc: 'On stop, leave registrations and proxies running for the next agent to adopt (upgrade restart) instead of draining them.',
      format: Boolean,
      default: false,
    },
  },
);
