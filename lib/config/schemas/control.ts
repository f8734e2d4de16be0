import { defineSchema } from '../define.ts';
import { consulKeys, datacenterKeys, logKeys, natsKeys, tracingKeys } from './common.ts';

export const controlSchema = defineSchema(
  'control',
  'The mesh authority: CA signer, intentions, node tokens.',
  {
    ...datacenterKeys(),
    ...natsKeys(),
    ...consulKeys({ dnsDomains: true }),
    ...logKeys(),
    ...tracingKeys(),
    kvPrefix: {
      doc: 'Consul KV prefix that holds the CA, intentions and token secret.',
      format: String,
      default: 'remora/',
    },
    leafTtlHours: {
      doc: 'Lifetime of issued leaf certificates, in hours.',
      format: 'nat',
      default: 72,
    },
    leafTtlSeconds: {
      doc: 'Lifetime of issued leaf certificates in seconds, for short-lived test and demo meshes; 0 uses leafTtlHours. At least 60: agents renew at 60–90 % of a lifetime that includes the 1-minute backdating of notBefore, so a shorter one would renew continuously.',
      format: function seconds(v: unknown): void {
        if (typeof v !== 'number' || !Number.isInteger(v) || (v !== 0 && v < 60))
          throw new Error('must be 0 (use leafTtlHours) or a whole number of seconds ≥ 60');
      },
      default: 0,
    },
    rootTtlDays: {
      doc: 'Lifetime of a newly created root CA, in days.',
      format: 'nat',
      default: 3650,
    },
    operatorToken: {
      doc: 'Operator token required by intentions.upsert/delete and tokens.create; empty refuses those requests.',
      format: String,
      default: '',
      sensitive: true,
    },
    defaultPolicy: {
      doc: 'Intention policy when no intention matches: allow or deny. Used only when KV holds no policy yet.',
      format: ['allow', 'deny'],
      default: 'deny',
    },
    auditMode: {
      doc: 'When true, denials are logged and counted but not enforced.',
      format: Boolean,
      default: false,
    },
    refreshIntervalMs: {
      doc: 'How often each replica re-reads the CA and intentions from Consul KV, in milliseconds (also bounds how long a rotated-out root may still sign).',
      format: 'nat',
      default: 30000,
    },
    metricsPort: {
      doc: 'Port of the Prometheus /metrics listener on 127.0.0.1; 0 disables it.',
      format: 'port',
      default: 0,
    },
  },
);
