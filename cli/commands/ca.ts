import type { Command } from 'commander';
import { requestRoots, rotateCa, type RootsV1 } from '../../lib/nats/index.ts';
import { print, type CliContext } from '../context.ts';
import { addOperatorOptions, withOperatorSession } from './control.ts';

function printRoots(ctx: CliContext, roots: RootsV1): void {
  print(ctx, `trust domain: ${roots.trustDomain}`);
  for (const r of roots.roots)
    print(
      ctx,
      `${r.id === roots.activeRootId ? 'active ' : 'trusted'}  ${r.id}  notAfter ${r.notAfter}`,
    );
}

export function registerCa(program: Command, ctx: CliContext): void {
  const cmd = program.command('ca').description('the mesh certificate authority');
  addOperatorOptions(
    cmd
      .command('roots')
      .description('show the trusted roots and the active one')
      .option('--pem', 'print the trust bundle (every trusted root) as PEM')
      .option('--json', 'print the roots reply as JSON'),
  ).action(async (opts: { pem?: boolean; json?: boolean; config?: string }) => {
    await withOperatorSession(ctx, opts, async (s) => {
      const roots = await requestRoots(s.nc, s.config.datacenter, s.req);
      if (opts.json) print(ctx, JSON.stringify(roots, null, 2));
      else if (opts.pem) ctx.stdout.write(roots.roots.map((r) => r.pem.trimEnd() + '\n').join(''));
      else printRoots(ctx, roots);
    });
  });
  addOperatorOptions(
    cmd
      .command('rotate')
      .description(
        'add a new root, keep the old one trusted until its last leaf expires, make agents renew',
      ),
  ).action(async (opts: { config?: string }) => {
    await withOperatorSession(ctx, opts, async (s) => {
      const roots = await rotateCa(s.nc, s.config.datacenter, s.operatorToken(), {
        timeoutMs: Math.max(30_000, s.req.timeoutMs),
      });
      print(
        ctx,
        `rotated: new active root ${roots.activeRootId}; agents renew on ca.roots.changed`,
      );
      printRoots(ctx, roots);
    });
  });
}
