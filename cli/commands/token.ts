import type { Command } from 'commander';
import { notBuilt, type CliContext } from '../context.ts';

export function registerToken(program: Command, _ctx: CliContext): void {
  const cmd = program
    .command('token')
    .description('node tokens that authorize an agent to request certificates');
  cmd
    .command('create <node> <serviceGlobs...>')
    .description('create a node token for the given node and service globs')
    .action(() => notBuilt('token create', 4));
}
