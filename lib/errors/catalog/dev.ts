import type { ErrorSpec } from './types.ts';

/** Error codes of `remora dev`. Append only; never rename or reuse a code. */
export const DEV_ERRORS = {
  REMORA_E_DEV_NATS_MISSING: {
    meaning: '`remora dev` needs a `nats-server` executable on the PATH and found none.',
    remedy:
      'Install it (Debian/Ubuntu: `sudo apt-get install -y nats-server`; macOS: `brew install nats-server`) or put its directory on PATH.',
  },
  REMORA_E_DEV_START_FAILED: {
    meaning:
      'A part of the demo mesh (catalog, nats-server, control, agent or a demo service) did not become ready in time.',
    remedy:
      'Read the log lines above for the part named in the message; `--log-level debug` shows more. Ports already in use are the usual cause.',
  },
  REMORA_E_DEV_PORT_IN_USE: {
    meaning: 'A port the demo mesh needs on 127.0.0.1 is already taken by another program.',
    remedy:
      'Stop the program using it (`ss -ltnp | grep <port>`) or choose other ports in the dev config (`docs/config.md`, section remora dev).',
  },
} as const satisfies Record<string, ErrorSpec>;
