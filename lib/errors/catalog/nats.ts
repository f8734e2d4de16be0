import type { ErrorSpec } from './types.ts';

/** Error codes of the nats area. Append only; never rename or reuse a code. */
export const NATS_ERRORS = {
  REMORA_E_NATS_MESSAGE_INVALID: {
    meaning:
      'A NATS message is not valid JSON, not an object, or a field is missing, unknown or of the wrong type.',
    remedy:
      'Send the message shape documented in docs/design.md §4 (the error names the field); use the lib/nats client helpers rather than hand-built JSON.',
  },
  REMORA_E_NATS_VERSION_UNSUPPORTED: {
    meaning: 'A NATS message carries a version field `v` this program does not speak.',
    remedy:
      'Run the same Remora version on both sides, or upgrade the older one; every message must carry `"v": 1`.',
  },
  REMORA_E_NATS_CONNECT_FAILED: {
    meaning: 'The first connection to the NATS servers failed (refused, bad credentials or TLS).',
    remedy:
      'Check `nats.servers`, `nats.token`/`nats.credsFile` and the TLS files in the config, and that nats-server is running (`nats-server -p 4222`).',
  },
  REMORA_E_NATS_TIMEOUT: {
    meaning: 'A NATS request got no reply before its deadline.',
    remedy:
      'Check that `remora control` is running and connected to the same NATS cluster; retrying is safe for every control-plane request.',
  },
  REMORA_E_NATS_NO_RESPONDERS: {
    meaning: 'Nobody subscribes to the NATS subject of a request (no control replica is running).',
    remedy:
      'Start `remora control` for this datacenter (same `datacenter` and NATS servers), then retry.',
  },
  REMORA_E_NATS_REMOTE_ERROR: {
    meaning:
      'The remote side answered with an error whose code this program does not know (a newer peer).',
    remedy: 'Read the message in the reply; align the Remora versions of control and clients.',
  },
  REMORA_E_NATS_INBOX_PREFIX_INVALID: {
    meaning:
      'The reply-inbox prefix of a NATS connection is not dot-separated tokens of letters, digits, `_` and `-` (wildcards and spaces are not allowed).',
    remedy:
      'Leave nats.inboxPrefix empty to use the role prefix the generated permissions allow (`_INBOX_control`, `_INBOX_agent.<node>`, `_INBOX_operator`), or set one the NATS server lets this user subscribe to.',
  },
} as const satisfies Record<string, ErrorSpec>;
