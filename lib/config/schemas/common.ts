import convict from 'convict';
import type { ConfigTree } from '../define.ts';

/** Keys every long-running program shares. Each call returns fresh objects. */
export function datacenterKeys() {
  return {
    datacenter: {
      doc: 'Datacenter name; part of every NATS subject and SPIFFE ID.',
      format: String,
      default: 'dc1',
    },
  } satisfies ConfigTree;
}

export function logKeys() {
  return {
    log: {
      level: {
        doc: 'Minimum log level.',
        format: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
        default: 'info',
      },
    },
  } satisfies ConfigTree;
}

export function natsKeys() {
  return {
    nats: {
      servers: {
        doc: 'NATS server URLs (comma-separated in the environment).',
        format: Array,
        default: ['nats://127.0.0.1:4222'],
      },
      credsFile: {
        doc: 'Path of a NATS credentials (.creds) file; empty for none.',
        format: String,
        default: '',
      },
      token: {
        doc: 'NATS authentication token; empty for none.',
        format: String,
        default: '',
        sensitive: true,
      },
      tlsCaFile: {
        doc: 'CA bundle that verifies the NATS server; empty to use plain TCP.',
        format: String,
        default: '',
      },
      tlsCertFile: {
        doc: 'Client certificate for NATS mTLS; empty for none.',
        format: String,
        default: '',
      },
      tlsKeyFile: { doc: 'Client key for NATS mTLS; empty for none.', format: String, default: '' },
      inboxPrefix: {
        doc: "Prefix of this program's reply inboxes; empty for its role's prefix, the only one the NATS permissions from compose/gen-secrets.js let it subscribe to (_INBOX_control, _INBOX_agent.<node>, _INBOX_operator for the CLI).",
        format: String,
        default: '',
      },
      requestTimeoutMs: {
        doc: 'Timeout of one NATS request, in milliseconds.',
        format: 'nat',
        default: 5000,
      },
    },
  } satisfies ConfigTree;
}

/**
 * Consul's DNS domains: one or more names of letters, digits and hyphens, dot-separated; in the
 * environment, comma-separated.
 */
convict.addFormat({
  name: 'dns-domains',
  coerce: (v: unknown) => (typeof v === 'string' ? v.split(',').map((d) => d.trim()) : v),
  validate(v: unknown) {
    const label = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;
    if (!Array.isArray(v) || v.length === 0)
      throw new Error('must list at least one domain (Consul\'s default is "consul")');
    for (const d of v)
      if (
        typeof d !== 'string' ||
        !d
          .replace(/\.$/, '')
          .split('.')
          .every((l) => label.test(l))
      )
        throw new Error(`${JSON.stringify(d)} is not a DNS domain (labels of letters, digits, -)`);
  },
});

/**
 * The Consul client's keys; with `dnsDomains`, Consul's DNS domains too (control and the agent
 * derive an ingress gateway's certificate names from them).
 */
export function consulKeys(o: { dnsDomains?: boolean } = {}) {
  return {
    consul: {
      address: {
        doc: 'Base URL of the Consul HTTP API (the local Consul agent).',
        format: String,
        default: 'http://127.0.0.1:8500',
      },
      token: {
        doc: 'Consul ACL token; empty for none.',
        format: String,
        default: '',
        sensitive: true,
      },
      caFile: {
        doc: 'CA bundle that verifies Consul over HTTPS; empty for the system store.',
        format: String,
        default: '',
      },
      maxResponseBytes: {
        doc: 'Bytes read of one Consul answer at most (at least 1024); a larger answer is refused with REMORA_E_CONSUL_RESPONSE_TOO_LARGE instead of being buffered.',
        format: 'nat',
        default: 64 * 1024 * 1024,
      },
      ...(o.dnsDomains
        ? {
            dnsDomains: {
              doc: "Consul's DNS domains, its `domain` then its `alt_domain` (comma-separated in the environment): an ingress gateway with TLS gets a certificate for `*.ingress.<domain>` and `*.ingress.<dc>.<domain>` of each (docs/gateways.md); control and the agents must agree.",
              format: 'dns-domains',
              default: ['consul'],
            },
          }
        : {}),
    },
  } satisfies ConfigTree;
}

export function tracingKeys() {
  return {
    tracing: {
      endpoint: {
        doc: 'OTLP/HTTP traces endpoint (Jaeger all-in-one listens on 4318); empty disables export.',
        format: String,
        default: 'http://127.0.0.1:4318/v1/traces',
      },
      sampleRatio: {
        doc: 'Share of new traces sampled (parent-based: an incoming sampled flag wins).',
        format: Number,
        default: 1,
      },
      headers: {
        doc: 'Extra HTTP headers for the exporter as k=v pairs separated by commas.',
        format: String,
        default: '',
        sensitive: true,
      },
      timeoutMs: { doc: 'Export request timeout in milliseconds.', format: 'nat', default: 10000 },
      maxQueueSize: {
        doc: 'Spans held for export at most; beyond this they are dropped and counted.',
        format: 'nat',
        default: 2048,
      },
    },
  } satisfies ConfigTree;
}
