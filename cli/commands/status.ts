import type { Command } from 'commander';
import { cliSchema } from '../../lib/config/index.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import type { AgentStatus } from '../../agent/index.ts';
import { loadProgramConfig, print, type CliContext } from '../context.ts';

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function until(iso: string | null, now: number): string {
  if (!iso) return '-';
  const ms = Date.parse(iso) - now;
  if (ms <= 0) return `${iso} (EXPIRED)`;
  const h = Math.floor(ms / 3600_000);
  const m = Math.floor((ms % 3600_000) / 60_000);
  return `${iso} (in ${h}h${String(m).padStart(2, '0')}m)`;
}

/** The human view of an agent's status. */
export function renderStatus(s: AgentStatus, now: number): string {
  const out: string[] = [];
  out.push(`node ${s.node} · datacenter ${s.datacenter} · agent up since ${s.startedAt}`);
  out.push(
    s.waitingFor.length ? `waiting for: ${s.waitingFor.join('; ')}` : 'all dependencies reachable',
  );
  out.push(
    `trust bundle: ${s.trustBundle.known ? 'known' : 'unknown'} · intentions: revision ${s.intentions.revision ?? '-'}`,
  );
  out.push('');
  const rows = [
    [
      'INSTANCE',
      'SERVICE',
      'PROTOCOL',
      'SIDECAR',
      'REGISTERED',
      'PROXY PID',
      'READY',
      'RESTARTS',
      'CERT EXPIRES',
    ],
  ];
  for (const i of s.instances) {
    rows.push([
      i.id,
      i.service,
      i.kind ?? i.protocol ?? '-',
      i.sidecarPort === null ? '-' : String(i.sidecarPort),
      i.registered ? 'yes' : 'no',
      i.proxy?.pid == null ? '-' : String(i.proxy.pid),
      i.proxy ? (i.proxy.ready ? 'yes' : `no (${i.proxy.readyReason ?? i.proxy.state})`) : '-',
      i.proxy ? String(i.proxy.restarts) : '-',
      until(i.certificate?.notAfter ?? null, now),
    ]);
  }
  out.push(rows.length > 1 ? table(rows) : 'no service instances defined');
  const ups = [['UPSTREAM', 'ENDPOINTS', 'SYNCED', 'USED BY']];
  for (const u of s.upstreams)
    ups.push([
      // a terminating gateway's service outside the mesh is followed by its own instances
      u.service.startsWith('external+')
        ? `${u.service.slice('external+'.length)} (outside the mesh)`
        : u.service,
      String(u.endpoints),
      u.synced ? 'yes' : 'no',
      // an upstream a transparent instance derives from intentions (docs/transparent.md), or a
      // service an upstream's routes and splits send calls to (docs/agent.md)
      u.users
        .map((x) =>
          x
            .replace(/\/derived$/, ' (by intentions)')
            .replace(/\/targets$/, ' (routes, splits, redirect, failover)')
            .replace(/\/ingress$/, ' (ingress gateway)')
            .replace(/\/terminating$/, ' (terminating gateway)'),
        )
        .join(','),
    ]);
  if (ups.length > 1) out.push('', table(ups));
  // where a service-resolver sends an upstream's calls (docs/agent.md, "Redirect and failover")
  const chains: string[] = [];
  for (const i of s.instances)
    for (const u of i.upstreams) {
      const parts = [
        u.redirectedTo ? `redirected to ${u.redirectedTo}` : '',
        u.failover?.length ? `fails over to ${u.failover.join(', then ')}` : '',
      ].filter(Boolean);
      if (parts.length > 0) chains.push(`${i.id} → ${u.destination}: ${parts.join('; ')}`);
    }
  if (chains.length > 0) out.push('', ...chains);
  // permissive mutual TLS is a hole on purpose, for onboarding: said while it lasts
  const permissive = s.instances
    .filter((i) => i.mutualTls?.mode === 'permissive')
    .map(
      (i) =>
        `${i.id}: mutual TLS permissive (by ${i.mutualTls!.source === 'registration' ? 'its definition' : i.mutualTls!.source}): plain connections to its app's port reach the app without mTLS or intentions`,
    );
  if (permissive.length > 0) out.push('', ...permissive);
  // an ingress gateway's listeners as applied from its entry (docs/gateways.md)
  for (const i of s.instances) {
    if (i.kind !== 'ingress-gateway') continue;
    const ls = (i.listeners ?? []).map(
      (l) =>
        `  port ${l.port} ${l.protocol}${l.tls ? ' over TLS' : ''} → ${l.services.map((x) => (x.hosts.length > 0 ? `${x.name} (${x.hosts.join(', ')})` : x.name)).join(', ')}`,
    );
    out.push('', `ingress gateway ${i.id}:`, ...(ls.length > 0 ? ls : ['  no listener']));
  }
  // a terminating gateway's linked services (docs/gateways.md, "Terminating gateways")
  for (const i of s.instances) {
    if (i.kind !== 'terminating-gateway') continue;
    const ls = (i.linked ?? []).map(
      (l) =>
        `  ${l.name} ${l.protocol}, ${l.origination === 'plain' ? 'plain TCP' : l.origination === 'tls' ? 'TLS' : 'mutual TLS'} to ${l.endpoints} instance${l.endpoints === 1 ? '' : 's'}${l.error ? ` — not served: ${l.error.code}` : l.certificate ? '' : ' — waiting for its certificate'}`,
    );
    out.push('', `terminating gateway ${i.id}:`, ...(ls.length > 0 ? ls : ['  links no service']));
  }
  const errors: string[] = [];
  for (const i of s.instances) {
    for (const e of [
      i.registrationError,
      i.proxy?.lastError,
      i.certificate?.lastError,
      i.transparent?.lastError,
      ...i.warnings,
    ]) {
      if (e) errors.push(`${e.at} ${i.id}: ${e.code}: ${e.message}`);
    }
  }
  for (const p of s.problems) errors.push(`${p.code}: ${p.message}`);
  for (const m of [s.trustBundle, s.intentions]) {
    if (m.lastError) errors.push(`${m.lastError.at} ${m.lastError.code}: ${m.lastError.message}`);
  }
  for (const u of s.upstreams) {
    if (u.lastError)
      errors.push(`${u.lastError.at} ${u.service}: ${u.lastError.code}: ${u.lastError.message}`);
  }
  if (errors.length) out.push('', 'last errors:', ...errors.map((e) => `  ${e}`));
  return out.join('\n');
}

/**
 * Calls the agent's loopback admin endpoint (`agentAdmin`); the parsed JSON answer. An agent
 * that cannot be reached, or answers with an error, is a coded error naming the URL.
 */
export async function callAgentAdmin(
  base: string,
  path: string,
  init: { method?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<unknown> {
  const url = `${base.replace(/\/+$/, '')}${path}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: init.method ?? 'GET',
      signal: AbortSignal.timeout(init.timeoutMs ?? 5000),
      ...(init.body === undefined
        ? {}
        : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(init.body) }),
    });
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_AGENT_ADMIN_UNREACHABLE',
      `cannot reach the agent at ${url}: ${(err as Error).message}; is \`remora agent\` running here, and does --agent-admin match its adminPort?`,
      { url },
    );
  }
  const body: unknown = await res.json().catch(() => null);
  if (!res.ok) {
    const why = (body as { error?: { message?: string } } | null)?.error?.message;
    throw new RemoraError(
      'REMORA_E_AGENT_ADMIN_UNREACHABLE',
      `the agent at ${url} answered HTTP ${res.status}${why ? `: ${why}` : ''}; is --agent-admin the agent's adminPort, and the agent as new as this CLI?`,
      { url, status: res.status },
    );
  }
  return body;
}

export function registerStatus(program: Command, ctx: CliContext): void {
  program
    .command('status')
    .description(
      "this host's instances, their proxies, certificate expiry, upstream endpoints, last errors",
    )
    .option('-c, --config <file>', 'JSON config file (see docs/config.md, section remora cli)')
    .option('--agent-admin <url>', "URL of the agent's admin endpoint, e.g. http://127.0.0.1:18999")
    .option('--json', 'print the raw status JSON')
    .action(async (opts: { config?: string; agentAdmin?: string; json?: boolean }) => {
      const config = loadProgramConfig(cliSchema, ctx, opts.config, {
        agentAdmin: opts.agentAdmin,
      });
      const status = (await callAgentAdmin(config.agentAdmin, '/status')) as AgentStatus;
      print(ctx, opts.json ? JSON.stringify(status, null, 2) : renderStatus(status, Date.now()));
    });
}
