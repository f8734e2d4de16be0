import type { ErrorSpec } from './types.ts';

/** Error codes of the devconsul area. Append only; never rename or reuse a code. */
export const DEVCONSUL_ERRORS = {
  REMORA_E_DEVCONSUL_LISTEN: {
    meaning: 'The embedded Consul-compatible catalog cannot listen on the requested address.',
    remedy:
      'Choose a free loopback port with `remora devconsul --listen 127.0.0.1:<port>` (or stop what holds it; `ss -ltnp` shows it).',
  },
  REMORA_E_DEVCONSUL_BAD_LISTEN: {
    meaning: 'The `--listen` value of the embedded catalog is not a host:port pair.',
    remedy: 'Give it as host:port, e.g. `--listen 127.0.0.1:8500`.',
  },
} as const satisfies Record<string, ErrorSpec>;
