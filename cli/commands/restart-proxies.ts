import type { Command } from 'commander';
import { cliSchema } from '../../lib/config/index.ts';
import type { HandoverResult } from '../../agent/index.ts';
import { CliExit, loadProgramConfig, print, type CliContext } from '../context.ts';
import { callAgentAdmin } from './status.ts';

/** How long the CLI waits for the agent to restart every proxy asked for. */
const RESTART_WAIT_MS = 10 * 60_000;

/** One line per instance: what serves it now. */
export function renderRestarts(results: readonly HandoverResult[]): string {
  if (results.length === 0) return 'no service instances defined on this host';
  return results
    .map((r) =>
      r.ok
        ? `${r.instance}: restarted — pid ${r.newPid} took over from pid ${r.oldPid}, which drains`
        : `${r.instance}: not restarted — ${r.error?.code}: ${r.error?.message}`,
    )
    .join('\n');
}

export function registerRestartProxies(program: Command, ctx: CliContext): void {
  program
    .command('restart-proxies')
    .description(
      "replace this host's proxies (all, or the instances named) one at a time without a gap: each new proxy shares the old one's ports until it is ready, then the old one drains — how a new Remora version reaches running proxies",
    )
    .argument('[instances...]', 'instance IDs (default: every instance of this host)')
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora cli)')
    .option('--agent-admin <url>', "URL of the agent's admin endpoint, e.g. http://127.0.0.1:18999")
    .option('--json', 'print the raw answer (results, and a note when the host has one)')
    .action(
      async (
        instances: string[],
        opts: { config?: string; agentAdmin?: string; json?: boolean },
      ) => {
        const config = loadProgramConfig(cliSchema, ctx, opts.config, {
          agentAdmin: opts.agentAdmin,
        });
        const answer = (await callAgentAdmin(config.agentAdmin, '/proxies/restart', {
          method: 'POST',
          body: { instances },
          timeoutMs: RESTART_WAIT_MS,
        })) as { results: HandoverResult[]; note?: string };
        print(
          ctx,
          opts.json
            ? JSON.stringify(answer, null, 2)
            : renderRestarts(answer.results) + (answer.note ? `\nnote: ${answer.note}` : ''),
        );
        if (answer.results.some((r) => !r.ok)) throw new CliExit(1);
      },
    );
}
