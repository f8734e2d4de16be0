// Running iptables: an injectable runner (execFile, never a shell) and the classification of its
// failures into coded errors. The real runner is the only part of agent/transparent that touches
// the system; unit tests pass a fake that records the calls.
import { execFile } from 'node:child_process';
import { RemoraError } from '../../lib/errors/index.ts';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `command args…` with optional stdin; rejects only when the command cannot start (ENOENT). */
export type CommandRunner = (command: string, args: string[], input?: string) => Promise<RunResult>;

export const IPTABLES = 'iptables';
export const IPTABLES_RESTORE = 'iptables-restore';
export const IP6TABLES = 'ip6tables';
export const IP6TABLES_RESTORE = 'ip6tables-restore';
const RUN_TIMEOUT_MS = 10_000;

export function createExecFileRunner(): CommandRunner {
  return (command, args, input) =>
    new Promise((resolve, reject) => {
      const child = execFile(
        command,
        args,
        { timeout: RUN_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
        (err, stdout, stderr) => {
          const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
          if (e && typeof e.code === 'string') return reject(e); // ENOENT, EACCES: did not start
          resolve({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, stdout, stderr });
        },
      );
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(input ?? '');
    });
}

const PRIVILEGE = /permission denied|operation not permitted|you must be root|EPERM|EACCES/i;

export const PRIVILEGE_REMEDY =
  'grant the agent CAP_NET_ADMIN (systemd: the drop-in systemd/remora-agent.service.d/transparent.conf; compose: cap_add: [NET_ADMIN]) or remove `transparent` from the definition';

/** The coded error for a failed iptables call about `instance` (`what`: the step, for the message). */
export function iptablesError(
  instance: string,
  command: string[],
  failure: { code?: number; stderr?: string; errno?: string },
  what: string,
): RemoraError {
  const shown = command.join(' ');
  const detail = (failure.stderr ?? '').trim().split('\n')[0]?.slice(0, 300) ?? '';
  if (failure.errno === 'ENOENT') {
    return new RemoraError(
      'REMORA_E_AGENT_TRANSPARENT_UNAVAILABLE',
      `transparent mode for ${instance}: cannot ${what}: \`${command[0]}\` is not installed; install iptables (apt-get install -y iptables) or remove \`transparent\` from the definition; ${instance} keeps running with its explicit upstream listeners`,
      { instance, command: shown },
    );
  }
  if (failure.errno === 'EACCES' || failure.code === 4 || PRIVILEGE.test(detail)) {
    return new RemoraError(
      'REMORA_E_AGENT_TRANSPARENT_PRIVILEGE',
      `transparent mode for ${instance}: cannot ${what}: \`${shown}\` failed without the privilege to change firewall rules (${detail || `exit ${failure.code}`}); ${PRIVILEGE_REMEDY}; ${instance} keeps running with its explicit upstream listeners`,
      { instance, command: shown, stderr: detail },
    );
  }
  return new RemoraError(
    'REMORA_E_AGENT_TRANSPARENT_RULES',
    `transparent mode for ${instance}: cannot ${what}: \`${shown}\` exited with ${failure.code} (${detail}); see \`iptables -t nat -S\` and docs/transparent.md; ${instance} keeps running with its explicit upstream listeners`,
    { instance, command: shown, stderr: detail },
  );
}
