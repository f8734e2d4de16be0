import type { ErrorSpec } from './types.ts';

/** Codes shared by every program: configuration, command line, input decoding. */
export const CORE_ERRORS = {
  REMORA_E_CONFIG_INVALID: {
    meaning: 'A configuration value is missing, unknown or fails its format check.',
    remedy:
      'Fix the named key in the config file, environment variable or flag; `docs/config.md` lists every key with its format and default.',
  },
  REMORA_E_CONFIG_FILE_UNREADABLE: {
    meaning: 'The file given with `--config` cannot be read or is not valid JSON.',
    remedy:
      'Check the path and permissions, and validate the JSON (e.g. `node -e "JSON.parse(require(\'fs\').readFileSync(process.argv[1]))" file.json`).',
  },
  REMORA_E_NOT_IMPLEMENTED: {
    meaning: 'The requested subcommand or feature is not built yet in this version of Remora.',
    remedy:
      'See the feature table in README.md for what works today; do not rely on this command yet.',
  },
  REMORA_E_USAGE: {
    meaning: 'The command line is malformed: a missing argument or an invalid option value.',
    remedy: 'Run the command with `--help` to see its arguments and options.',
  },
  REMORA_E_INTERNAL: {
    meaning:
      'An unexpected internal failure; the operation was abandoned and nothing else was affected.',
    remedy: 'Report it with the log line (it carries the stack); retrying usually succeeds.',
  },
} as const satisfies Record<string, ErrorSpec>;
