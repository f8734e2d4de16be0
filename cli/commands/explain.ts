import type { Command } from 'commander';
import { describeError, isErrorCode, RemoraError } from '../../lib/errors/index.ts';
import { evaluateIntentions, sortIntentions } from '../../lib/intentions/index.ts';
import { requestIntentions } from '../../lib/nats/index.ts';
import { CliExit, print, type CliContext } from '../context.ts';
import { addOperatorOptions, withOperatorSession } from './control.ts';

/** Exit code when the explained call would be refused. */
export const EXPLAIN_DENIED_EXIT_CODE = 2;

function explainCode(ctx: CliContext, code: string): void {
  if (!isErrorCode(code))
    throw new RemoraError(
      'REMORA_E_USAGE',
      `${code} is not a Remora error code; see docs/errors.md`,
      { code },
    );
  const spec = describeError(code);
  print(ctx, `${code}${spec.status ? ` (HTTP ${spec.status})` : ''}`);
  print(ctx, `  what happened: ${spec.meaning}`);
  print(ctx, `  what to do:    ${spec.remedy}`);
}

export function registerExplain(program: Command, ctx: CliContext): void {
  addOperatorOptions(
    program
      .command('explain <source> <destination>')
      .description(
        'explain why a call from source to destination succeeds or is refused (the deciding intention, or the meaning of an x-remora-error code)',
      )
      .option(
        '--code <code>',
        'explain the x-remora-error code a refused call carried (no network needed)',
      )
      .option('--method <method>', 'HTTP method, to evaluate L7 permissions')
      .option('--path <path>', 'HTTP path, to evaluate L7 permissions'),
  ).action(
    async (
      source: string,
      destination: string,
      opts: { code?: string; method?: string; path?: string; config?: string },
    ) => {
      if (opts.code !== undefined) {
        explainCode(ctx, opts.code);
        return;
      }
      await withOperatorSession(ctx, opts, async (s) => {
        const snap = await requestIntentions(s.nc, s.config.datacenter, s.req);
        const request =
          opts.method !== undefined || opts.path !== undefined
            ? { method: (opts.method ?? 'GET').toUpperCase(), path: opts.path ?? '/', headers: {} }
            : undefined;
        const d = evaluateIntentions(snap, {
          source,
          destination,
          ...(request ? { request } : {}),
        });
        print(
          ctx,
          `${source} → ${destination}: ${d.allowed ? 'allowed' : d.enforced ? 'DENIED' : 'denied (audit mode: logged, not enforced)'}`,
        );
        print(ctx, `  decided by: ${d.reason}`);
        if (d.needsRequest)
          print(
            ctx,
            '  L7 permissions decide each request; give --method and --path to evaluate one',
          );
        const relevant = sortIntentions(snap.intentions).filter(
          (i) =>
            (i.source === source || i.source === '*') &&
            (i.destination === destination || i.destination === '*'),
        );
        print(
          ctx,
          `  intentions that match this pair (precedence order; revision ${snap.revision}, default policy ${snap.defaultPolicy}):`,
        );
        if (relevant.length === 0) print(ctx, '    none');
        for (const i of relevant)
          print(
            ctx,
            `    ${i.source} → ${i.destination}: ${i.action ?? `${i.permissions?.length ?? 0} L7 permission(s)`} (precedence ${i.precedence})`,
          );
        if (!d.allowed && d.enforced) {
          print(ctx, `  refused calls carry x-remora-error: REMORA_E_PROXY_INTENTION_DENIED`);
          print(ctx, `  to allow: remora intention create ${source} ${destination}`);
          throw new CliExit(EXPLAIN_DENIED_EXIT_CODE);
        }
      });
    },
  );
}
