import { Command } from 'commander';
import type { CliContext } from './context.ts';
import { registerDev } from './commands/dev.ts';
import { registerDevconsul } from './commands/devconsul.ts';
import { registerControl } from './commands/control.ts';
import { registerAgent } from './commands/agent.ts';
import { registerProxy } from './commands/proxy.ts';
import { registerIntention } from './commands/intention.ts';
import { registerToken } from './commands/token.ts';
import { registerCa } from './commands/ca.ts';
import { registerStatus } from './commands/status.ts';
import { registerExplain } from './commands/explain.ts';
import { registerTraces } from './commands/traces.ts';

/** The `remora` command tree. Each subcommand lives in its own file under commands/. */
export function createProgram(ctx: CliContext): Command {
  const program = new Command('remora')
    .description(
      'Remora: a sidecar service mesh for VMs and containers (mTLS, intentions, balancing, tracing)',
    )
    .version('0.1.0')
    .showHelpAfterError()
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
    })
    .exitOverride();
  for (const register of [
    registerDev,
    registerDevconsul,
    registerControl,
    registerAgent,
    registerProxy,
    registerIntention,
    registerToken,
    registerCa,
    registerStatus,
    registerExplain,
    registerTraces,
  ]) {
    register(program, ctx);
  }
  return program;
}
