import type { Command } from 'commander';
import { notBuilt, type CliContext } from '../context.ts';

export function registerStatus(program: Command, _ctx: CliContext): void {
  program
    .command('status')
    .description(
      "this host's instances, their proxies, certificate expiry, upstream endpoints, last errors",
    )
    .action(() => notBuilt('status', 5));
}
