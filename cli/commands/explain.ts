import type { Command } from 'commander';
import { notBuilt, type CliContext } from '../context.ts';

export function registerExplain(program: Command, _ctx: CliContext): void {
  program
    .command('explain <source> <destination>')
    .description('explain why a call from source to destination succeeds or is refused')
    .action(() => notBuilt('explain', 6));
}
