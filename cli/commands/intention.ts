import type { Command } from 'commander';
import { notBuilt, type CliContext } from '../context.ts';

export function registerIntention(program: Command, _ctx: CliContext): void {
  const cmd = program
    .command('intention')
    .description('manage intentions: which service may call which');
  cmd
    .command('create <source> <destination>')
    .description('allow (default) or deny calls from source to destination')
    .option('--deny', 'create a deny intention')
    .action(() => notBuilt('intention create', 4));
  cmd
    .command('delete <source> <destination>')
    .description('delete the intention between source and destination')
    .action(() => notBuilt('intention delete', 4));
  cmd
    .command('list')
    .description('list intentions in precedence order')
    .action(() => notBuilt('intention list', 4));
  cmd
    .command('check <source> <destination>')
    .description('say whether source may call destination, and which intention decides')
    .action(() => notBuilt('intention check', 4));
}
