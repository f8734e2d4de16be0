import type { ErrorSpec } from './types.ts';

/** Workload identity and PKI. */
export const IDENTITY_ERRORS = {
  REMORA_E_IDENTITY_INVALID: {
    meaning:
      'A SPIFFE ID is malformed or not of the shape spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>.',
    remedy:
      'Use service and datacenter names made of letters, digits, dashes and underscores; check the trust domain from `remora ca roots`.',
  },
  REMORA_E_PKI_CSR_INVALID: {
    meaning: 'A certificate signing request cannot be parsed or its signature does not verify.',
    remedy:
      'Generate the CSR with the agent (RSA 2048, one URI SAN); do not edit it after signing.',
  },
  REMORA_E_PKI_CERT_INVALID: {
    meaning: 'A certificate or private key cannot be parsed, or they do not belong together.',
    remedy:
      'Check the PEM files; re-issue the certificate from the control plane if it was altered.',
  },
} as const satisfies Record<string, ErrorSpec>;
