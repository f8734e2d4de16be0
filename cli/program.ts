import { Command } from 'commander';
import type { CliContext } from './context.ts';

type Register = (program: Command, ctx: CliContext) => void;

/**
 * Every subcommand, loaded on demand: a `remora proxy` process loads only the proxy's modules,
 * which keeps each proxy's memory down (one runs per service instance).
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  dev: async () => (await import('./commands/dev.ts')).registerDev,
  devconsul: async () => (await import('./commands/devconsul.ts')).registerDevconsul,
  control: async () => (await import('./commands/control.ts')).registerControl,
  agent: async () => (await import('./commands/agent.ts')).registerAgent,
  proxy: async () => (await import('./commands/proxy.ts')).registerProxy,
  intention: async () => (await import('./commands/intention.ts')).registerIntention,
  token: async () => (await import('./commands/token.ts')).registerToken,
  ca: async () => (await import('./commands/ca.ts')).registerCa,
  status: async () => (await import('./commands/status.ts')).registerStatus,
  'restart-proxies': async () =>
    (await import('./commands/restart-proxies.ts')).registerRestartProxies,
  explain: async () => (await import('./commands/explain.ts')).registerExplain,
  traces: async () => (await import('./commands/traces.ts')).registerTraces,
};

export const SUBCOMMANDS = Object.keys(COMMANDS);

/**
 * The `remora` command tree. When `argv` names a subcommand only that one is loaded; otherwise
 * (help, version, a typo) all are, so help lists every subcommand.
 */
export async function createProgram(ctx: CliContext, argv: readonly string[]): Promise<Command> {
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
  const wanted = argv[2];
  const names = wanted !== undefined && Object.hasOwn(COMMANDS, wanted) ? [wanted] : SUBCOMMANDS;
  const registers = await Promise.all(names.map((name) => COMMANDS[name]!()));
  for (const register of registers) register(program, ctx);
  return program;
}
