import type { ErrorSpec } from './types.ts';

/** Error codes of the consul area. Append only; never rename or reuse a code. */
export const CONSUL_ERRORS = {
  REMORA_E_CONSUL_UNREACHABLE: {
    meaning: 'The Consul HTTP API did not answer (connection refused, reset, DNS or timeout).',
    remedy:
      'Check that the local Consul agent runs and listens at the configured consul.address (`curl <address>/v1/status/leader`); discovery keeps its last known endpoints meanwhile.',
  },
  REMORA_E_CONSUL_REQUEST_FAILED: {
    meaning:
      'Consul answered a request with an error status; the message carries its status and body.',
    remedy:
      'Read the body Consul returned: 400 means the request or definition is invalid, 403 an ACL token lacks a permission, 404 an unknown ID, 5xx a Consul-side problem.',
  },
  REMORA_E_CONSUL_BAD_RESPONSE: {
    meaning: 'Consul answered with a body Remora cannot parse as the documented response.',
    remedy:
      'Check that consul.address points at a Consul HTTP API (not a proxy or another service).',
  },
  REMORA_E_CONSUL_CONFIG: {
    meaning:
      'The Consul client settings are invalid: a malformed address or an unreadable CA file.',
    remedy:
      'Fix consul.address (e.g. http://127.0.0.1:8500) or consul.caFile (a readable PEM bundle).',
  },
  REMORA_E_CONSUL_RESPONSE_TOO_LARGE: {
    meaning:
      'Consul (or whatever answers at consul.address) sent an answer larger than the client reads (64 MiB by default); it was refused without buffering the rest.',
    remedy:
      'Check what answers at consul.address. If the catalog really is that large, raise consul.maxResponseBytes (REMORA_AGENT_CONSUL_MAX_RESPONSE_BYTES, REMORA_CONTROL_CONSUL_MAX_RESPONSE_BYTES); a watch keeps its last known endpoints and retries with backoff meanwhile.',
  },
} as const satisfies Record<string, ErrorSpec>;
