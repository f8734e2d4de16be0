import type { Command } from 'commander';
import { RemoraError } from '../../lib/errors/index.ts';
import { createToken, isValidNodeName, isValidServiceGlob } from '../../lib/nats/index.ts';
import { print, type CliContext } from '../context.ts';
import { addOperatorOptions, withOperatorSession } from './control.ts';

export function registerToken(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('token')
    .description('node tokens that authorize an agent to request certificates');
  addOperatorOptions(
    cmd
      .command('create <node> <serviceGlobs...>')
      .description(
        'create a node token for the given node and service globs (* matches any run of characters); prints only the token',
      )
      .option('--ttl <hours>', 'lifetime in hours (default: no expiry)'),
  ).action(async (node: string, globs: string[], opts: { ttl?: string; config?: string }) => {
    if (!isValidNodeName(node))
      throw new RemoraError(
        'REMORA_E_USAGE',
        `node name ${JSON.stringify(node)} is not valid (letters, digits, ., -, _)`,
      );
    for (const g of globs)
      if (!isValidServiceGlob(g))
        throw new RemoraError(
          'REMORA_E_USAGE',
          `service glob ${JSON.stringify(g)} is not valid (letters, digits, -, _ and *)`,
        );
    let ttlSeconds: number | undefined;
    if (opts.ttl !== undefined) {
      const hours = Number(opts.ttl);
      if (!Number.isFinite(hours) || hours <= 0)
        throw new RemoraError(
          'REMORA_E_USAGE',
          `--ttl ${JSON.stringify(opts.ttl)} is not a positive number of hours`,
        );
      ttlSeconds = Math.round(hours * 3600);
    }
    await withOperatorSession(ctx, opts, async (s) => {
      const r = await createToken(
        s.nc,
        s.config.datacenter,
        s.operatorToken(),
        {
          node,
          services: globs,
          ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
        },
        s.req,
      );
      print(ctx, r.token);
      ctx.stderr.write(
        `node token for ${r.node}, services ${r.services.join(' ')}, ${r.expiresAt ? `expires ${r.expiresAt}` : 'no expiry'}; put it in the agent config (nodeToken)\n`,
      );
    });
  });
}
