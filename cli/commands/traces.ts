import type { Command } from 'commander';
import { notBuilt, type CliContext } from '../context.ts';

export function registerTraces(program: Command, _ctx: CliContext): void {
  program
    .command('traces <service>')
    .description("recent traces for a service from Jaeger's query API, as a terminal waterfall")
    .action(() => notBuilt('traces', 7));
}
