import type { Command } from 'commander';
import { RemoraError } from '../../lib/errors/index.ts';
import {
  describeIntentionJwt,
  evaluateIntentions,
  sortIntentions,
  validateIntention,
  type Intention,
} from '../../lib/intentions/index.ts';
import {
  deleteIntention,
  requestIntentions,
  setIntentionsPolicy,
  upsertIntention,
} from '../../lib/nats/index.ts';
import { CliExit, print, type CliContext } from '../context.ts';
import { addOperatorOptions, withOperatorSession } from './control.ts';

/** `remora intention check` exits with this code when the call would be denied (as consul does). */
export const DENIED_EXIT_CODE = 2;

function describeAction(i: Intention): string {
  const jwt = i.jwt ? `, requires ${describeIntentionJwt(i.jwt)}` : '';
  if (i.action) return `${i.action}${jwt}`;
  return `L7 (${i.permissions?.length ?? 0} permission${i.permissions?.length === 1 ? '' : 's'}${jwt})`;
}

function parseJwt(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_USAGE',
      `--jwt is not valid JSON (${(err as Error).message}); pass an object like '{"providers":[{"name":"okta","verifyClaims":[{"path":["role"],"value":"admin"}]}]}'`,
    );
  }
}

function parsePermissions(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_USAGE',
      `--permissions is not valid JSON (${(err as Error).message}); pass a list like '[{"action":"allow","http":{"pathPrefix":"/v1"}}]'`,
    );
  }
}

function parseHeaders(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0)
      throw new RemoraError('REMORA_E_USAGE', `--header ${JSON.stringify(p)} is not name=value`);
    out[p.slice(0, eq).toLowerCase()] = p.slice(eq + 1);
  }
  return out;
}

export function registerIntention(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('intention')
    .description('manage intentions: which service may call which');
  addOperatorOptions(
    cmd
      .command('create <source> <destination>')
      .description(
        'allow (default) or deny calls from source to destination; replaces an existing one',
      )
      .option('--deny', 'create a deny intention')
      .option('--allow', 'create an allow intention (the default)')
      .option('--permissions <json>', 'L7 permissions as a JSON list (instead of allow/deny)')
      .option(
        '--jwt <json>',
        'tokens every request must carry, as JSON: {"providers":[{"name":"<jwt-provider>","verifyClaims":[{"path":["role"],"value":"admin"}]}]} (HTTP destinations)',
      )
      .option('--description <text>', 'free text shown by intention list'),
  ).action(
    async (
      source: string,
      destination: string,
      opts: {
        deny?: boolean;
        allow?: boolean;
        permissions?: string;
        jwt?: string;
        description?: string;
        config?: string;
      },
    ) => {
      if (opts.deny && opts.allow)
        throw new RemoraError('REMORA_E_USAGE', 'give at most one of --allow and --deny');
      const raw: Record<string, unknown> = { source, destination };
      if (opts.permissions !== undefined) {
        if (opts.deny || opts.allow)
          throw new RemoraError(
            'REMORA_E_USAGE',
            '--permissions replaces --allow/--deny; give one or the other',
          );
        raw.permissions = parsePermissions(opts.permissions);
      } else raw.action = opts.deny ? 'deny' : 'allow';
      if (opts.jwt !== undefined) raw.jwt = parseJwt(opts.jwt);
      if (opts.description !== undefined) raw.description = opts.description;
      const intention = validateIntention(raw, 'intention');
      await withOperatorSession(ctx, opts, async (s) => {
        const r = await upsertIntention(
          s.nc,
          s.config.datacenter,
          s.operatorToken(),
          intention,
          s.req,
        );
        print(
          ctx,
          `Created: ${r.intention.source} => ${r.intention.destination} (${describeAction(r.intention)}, precedence ${r.intention.precedence}); revision ${r.revision}`,
        );
        for (const w of r.warnings ?? []) ctx.stderr.write(`warning: ${w}\n`);
      });
    },
  );
  addOperatorOptions(
    cmd
      .command('delete <source> <destination>')
      .description('delete the intention between source and destination'),
  ).action(async (source: string, destination: string, opts: { config?: string }) => {
    await withOperatorSession(ctx, opts, async (s) => {
      const r = await deleteIntention(
        s.nc,
        s.config.datacenter,
        s.operatorToken(),
        { source, destination },
        s.req,
      );
      print(ctx, `Deleted: ${source} => ${destination}; revision ${r.revision}`);
    });
  });
  addOperatorOptions(
    cmd
      .command('list')
      .description('list intentions in precedence order')
      .option('--json', 'print the snapshot as JSON'),
  ).action(async (opts: { json?: boolean; config?: string }) => {
    await withOperatorSession(ctx, opts, async (s) => {
      const snap = await requestIntentions(s.nc, s.config.datacenter, s.req);
      if (opts.json) {
        print(ctx, JSON.stringify(snap, null, 2));
        return;
      }
      const rows = sortIntentions(snap.intentions).map((i) => [
        String(i.precedence),
        i.source,
        i.destination,
        describeAction(i),
        i.description ?? '',
      ]);
      const table = [['PRECEDENCE', 'SOURCE', 'DESTINATION', 'ACTION', 'DESCRIPTION'], ...rows];
      const widths = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
      for (const r of table)
        print(
          ctx,
          r
            .map((cell, c) => cell.padEnd(widths[c]!))
            .join('  ')
            .trimEnd(),
        );
      print(
        ctx,
        `default policy: ${snap.defaultPolicy}${snap.auditMode ? ' (audit mode: denials logged, not enforced)' : ''}; revision ${snap.revision}`,
      );
    });
  });
  addOperatorOptions(
    cmd
      .command('policy')
      .description('show or change the default policy (no intention matches) and audit mode')
      .option('--default <policy>', 'allow or deny')
      .option('--audit <mode>', 'on: log and count denials without enforcing them; off: enforce'),
  ).action(async (opts: { default?: string; audit?: string; config?: string }) => {
    if (opts.default !== undefined && opts.default !== 'allow' && opts.default !== 'deny')
      throw new RemoraError(
        'REMORA_E_USAGE',
        `--default must be allow or deny, got ${JSON.stringify(opts.default)}`,
      );
    if (opts.audit !== undefined && opts.audit !== 'on' && opts.audit !== 'off')
      throw new RemoraError(
        'REMORA_E_USAGE',
        `--audit must be on or off, got ${JSON.stringify(opts.audit)}`,
      );
    await withOperatorSession(ctx, opts, async (s) => {
      const snap =
        opts.default === undefined && opts.audit === undefined
          ? await requestIntentions(s.nc, s.config.datacenter, s.req)
          : await setIntentionsPolicy(
              s.nc,
              s.config.datacenter,
              s.operatorToken(),
              {
                ...(opts.default !== undefined
                  ? { defaultPolicy: opts.default as 'allow' | 'deny' }
                  : {}),
                ...(opts.audit !== undefined ? { auditMode: opts.audit === 'on' } : {}),
              },
              s.req,
            );
      print(
        ctx,
        `default policy: ${snap.defaultPolicy}; audit mode: ${snap.auditMode ? 'on (denials logged, not enforced)' : 'off'}; revision ${snap.revision}`,
      );
    });
  });
  addOperatorOptions(
    cmd
      .command('check <source> <destination>')
      .description(
        `say whether source may call destination and which intention decides (exit ${DENIED_EXIT_CODE} when denied)`,
      )
      .option('--method <method>', 'HTTP method, to evaluate L7 permissions')
      .option('--path <path>', 'HTTP path, to evaluate L7 permissions')
      .option('--header <name=value...>', 'HTTP request header(s), to evaluate L7 permissions'),
  ).action(
    async (
      source: string,
      destination: string,
      opts: { method?: string; path?: string; header?: string[]; config?: string },
    ) => {
      await withOperatorSession(ctx, opts, async (s) => {
        const snap = await requestIntentions(s.nc, s.config.datacenter, s.req);
        const request =
          opts.method !== undefined || opts.path !== undefined
            ? {
                method: (opts.method ?? 'GET').toUpperCase(),
                path: opts.path ?? '/',
                headers: parseHeaders(opts.header ?? []),
              }
            : undefined;
        const d = evaluateIntentions(snap, {
          source,
          destination,
          ...(request ? { request } : {}),
        });
        const verdict = d.needsRequest
          ? 'Allowed at connection level; L7 permissions decide each request (give --method/--path)'
          : d.allowed
            ? 'Allowed'
            : d.enforced
              ? 'Denied'
              : 'Denied (audit mode: logged, not enforced)';
        print(ctx, `${verdict}: ${d.reason}`);
        if (!d.allowed) throw new CliExit(DENIED_EXIT_CODE);
      });
    },
  );
}
