import type { Command } from 'commander';
import { notBuilt, type CliContext } from '../context.ts';

export function registerCa(program: Command, _ctx: CliContext): void {
  const cmd = program.command('ca').description('the mesh certificate authority');
  cmd
    .command('roots')
    .description('show the trusted roots and the active one')
    .action(() => notBuilt('ca roots', 4));
  cmd
    .command('rotate')
    .description(
      'add a new root, keep the old one trusted until its last leaf expires, make agents renew',
    )
    .action(() => notBuilt('ca rotate', 4));
}
