// The agent's transparent-interception manager (docs/transparent.md): installs, rebuilds and
// removes each transparent instance's nat chains, and its filter chain while the mesh entry sets
// `MeshDestinationsOnly`, through an injectable CommandRunner. Every iptables call goes through
// one queue, so two updates never interleave; a failure is recorded per instance (shown by
// `remora status`) and never touches other instances.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { toRemoraError, type RemoraError } from '../../lib/errors/index.ts';
import { logError, type Logger } from '../../lib/log/index.ts';
import type { Clock } from '../../lib/util/index.ts';
import {
  IP6TABLES,
  IP6TABLES_RESTORE,
  IPTABLES,
  IPTABLES_RESTORE,
  iptablesError,
  type CommandRunner,
} from './iptables.ts';
import {
  chainRules,
  chainsFor,
  hasRules,
  installScript,
  meshOnlyScript,
  parseTableListing,
  removeScript,
  skippedTargets,
  staleChains,
  type Family,
  type Table,
  type TableListing,
  type TransparentPlan,
} from './rules.ts';

export {
  chainsFor,
  chainRules,
  installScript,
  meshOnlyRules,
  meshOnlyScript,
  parseTableListing,
  removeScript,
  staleChains,
  nodeTag,
  CHAIN_PREFIX,
  type RedirectTarget,
  type TransparentPlan,
  type InstanceChains,
  type TableListing,
} from './rules.ts';
export {
  createExecFileRunner,
  iptablesError,
  PRIVILEGE_REMEDY,
  type CommandRunner,
  type RunResult,
} from './iptables.ts';
export { createPortAllocator, type PortAllocator } from './ports.ts';
export { targetsFromEntries, type ServiceTarget } from './targets.ts';

export interface TransparentStatus {
  /** True while the instance's rules are installed as last planned. */
  active: boolean;
  chains: string[];
  /** Number of redirect rules (inbound + outbound, owner guard excluded; IPv4 and IPv6). */
  redirects: number;
  /** True while the filter chain of `MeshDestinationsOnly` is installed (non-mesh calls refused). */
  meshDestinationsOnly: boolean;
  lastError: { code: string; message: string; at: string } | null;
}

export interface TransparentManager {
  /** Installs or rebuilds the rules of one instance (skipped when unchanged). */
  apply(plan: TransparentPlan): Promise<void>;
  /** Removes one instance's chains and jumps (nat and filter). */
  remove(instanceId: string): Promise<void>;
  /**
   * Removes this node's REMORA chains of instances not in `keep` (start-up clean-up). With an empty
   * `keep` it looks only when the marker file says an earlier run installed rules, so an agent that
   * never used transparent mode never runs iptables.
   */
  reconcile(keep: Iterable<string>): Promise<void>;
  status(instanceId: string): TransparentStatus | null;
  /** Waits for queued iptables calls. */
  idle(): Promise<void>;
  /** Whether IPv6 rules are managed too (then the proxy needs its listeners on ::1 as well). */
  readonly ipv6: boolean;
}

const TOOLS: Record<Family, { list: string; restore: string; label: string }> = {
  4: { list: IPTABLES, restore: IPTABLES_RESTORE, label: '' },
  6: { list: IP6TABLES, restore: IP6TABLES_RESTORE, label: 'IPv6 ' },
};

/**
 * Whether this network namespace has IPv6 (an address on any interface, loopback included): then
 * an app listening on every address is reachable over IPv6 and needs the IPv6 inbound rule too.
 */
export function hostHasIpv6(): boolean {
  try {
    return readFileSync('/proc/net/if_inet6', 'utf8').trim() !== '';
  } catch {
    return false;
  }
}

export function createTransparentManager(o: {
  runner: CommandRunner;
  node: string;
  logger: Logger;
  clock: Clock;
  /** A file that exists while this agent may have chains installed (`<dataDir>/transparent-rules`). */
  markerPath?: string;
  /** Whether to manage the IPv6 (`ip6tables`) rules too; read once. Default: hostHasIpv6(). */
  ipv6?: boolean;
}): TransparentManager {
  const { runner, node, logger, clock } = o;
  const families: Family[] = (o.ipv6 ?? hostHasIpv6()) ? [4, 6] : [4];
  const mark = (on: boolean) => {
    if (!o.markerPath) return;
    try {
      if (on) writeFileSync(o.markerPath, `${node}\n`, { mode: 0o600 });
      else rmSync(o.markerPath, { force: true });
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'cannot update the transparent-rules marker');
    }
  };
  const state = new Map<
    string,
    { key: string; status: TransparentStatus; errorKey: string | null }
  >();
  /**
   * Instances this run knows to have no filter chain: the start-up clean-up found none, or their
   * last plan without `meshDestinationsOnly` was applied. For the others a chain may be left by an
   * earlier plan or an earlier run while the flag was on, so their filter table is looked at.
   */
  const noFilter = new Set<string>();
  let queue: Promise<void> = Promise.resolve();

  function enqueue(fn: () => Promise<void>): Promise<void> {
    const next = queue.then(fn, fn);
    queue = next.catch(() => undefined);
    return next;
  }

  /** Runs one command; throws the coded error for `instance` when it fails. */
  async function run(
    instance: string,
    what: string,
    command: string,
    args: string[],
    input?: string,
  ): Promise<string> {
    let r;
    try {
      r = await runner(command, args, input);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw iptablesError(instance, [command, ...args], { errno: e.code ?? 'ENOENT' }, what);
    }
    if (r.code !== 0) throw iptablesError(instance, [command, ...args], r, what);
    return r.stdout;
  }

  async function list(instance: string, family: Family, table: Table): Promise<TableListing> {
    const what = `list the ${TOOLS[family].label}${table} table`;
    return parseTableListing(
      await run(instance, what, TOOLS[family].list, ['-w', '5', '-t', table, '-S']),
    );
  }

  /**
   * Applies a restore script of one family (`-w 5 --noflush`: atomic, waits for the lock); a `%`
   * in `what` becomes the family's label ("IPv6 " or nothing) in error messages.
   */
  function restore(instance: string, what: string, family: Family, script: string) {
    const step = what.replace('%', TOOLS[family].label);
    return run(instance, step, TOOLS[family].restore, ['-w', '5', '--noflush'], script);
  }

  function fail(id: string, err: RemoraError): void {
    const st = state.get(id);
    const at = new Date(clock.now()).toISOString();
    const entry = st ?? {
      key: '',
      errorKey: null,
      status: {
        active: false,
        chains: [],
        redirects: 0,
        meshDestinationsOnly: false,
        lastError: null,
      },
    };
    entry.status.active = false;
    entry.status.lastError = { code: err.code, message: err.message, at };
    entry.key = ''; // retried on the next change
    noFilter.delete(id); // a failed step may have left a filter chain, or not
    // log each distinct failure once, not on every endpoint change
    const errorKey = `${err.code}:${err.message}`;
    if (entry.errorKey !== errorKey) logError(logger, err, undefined, 'error');
    entry.errorKey = errorKey;
    state.set(id, entry);
  }

  /**
   * Installs the instance's nat chains of one family, or removes them when the family needs none
   * (IPv6 with no app port to guard and no IPv6 destination); returns the redirects installed.
   */
  async function applyNat(plan: TransparentPlan, family: Family): Promise<number> {
    const chains = chainsFor(node, plan.instanceId);
    const listing = await list(plan.instanceId, family, 'nat');
    if (!hasRules(plan, family)) {
      const script = removeScript([chains.inbound, chains.outbound], listing);
      if (script !== null)
        await restore(plan.instanceId, 'remove the %interception rules', family, script);
      return 0;
    }
    mark(true);
    const script = installScript(node, plan, listing, family);
    await restore(plan.instanceId, 'install the %interception rules', family, script);
    const rules = chainRules(plan, family);
    // the owner guards are not redirects
    return [...rules.inbound, ...rules.outbound].filter((r) => r.includes('REDIRECT')).length;
  }

  /** Installs the instance's filter chain of one family, or removes it when the plan has none. */
  async function applyMeshOnly(plan: TransparentPlan, family: Family): Promise<void> {
    const on = plan.meshDestinationsOnly === true;
    const script = meshOnlyScript(
      node,
      plan,
      await list(plan.instanceId, family, 'filter'),
      family,
    );
    if (script === null) return;
    if (on) mark(true);
    const what = `${on ? 'install' : 'remove'} the %mesh-destinations-only rules`;
    await restore(plan.instanceId, what, family, script);
  }

  return {
    apply(plan) {
      return enqueue(async () => {
        const key = JSON.stringify(plan);
        const prev = state.get(plan.instanceId);
        if (prev && prev.key === key && prev.status.active) return;
        const chains = chainsFor(node, plan.instanceId);
        const meshOnly = plan.meshDestinationsOnly === true;
        let redirects = 0;
        try {
          for (const family of families) {
            redirects += await applyNat(plan, family);
            if (meshOnly || !noFilter.has(plan.instanceId)) await applyMeshOnly(plan, family);
          }
        } catch (err) {
          fail(plan.instanceId, toRemoraError(err));
          return;
        }
        const skipped = skippedTargets(plan, families);
        if (skipped.length > 0)
          logger.warn(
            { instance: plan.instanceId, skipped: skipped.map((t) => `${t.address}:${t.port}`) },
            `transparent mode for ${plan.instanceId}: destinations that are not ${families.length === 2 ? 'IP' : 'IPv4 '}addresses are not intercepted`,
          );
        const installed = [chains.inbound, chains.outbound, ...(meshOnly ? [chains.meshOnly] : [])];
        logger.info(
          {
            instance: plan.instanceId,
            chains: installed,
            redirects,
            targets: plan.targets.length,
            meshDestinationsOnly: meshOnly,
          },
          `transparent rules of ${plan.instanceId} installed`,
        );
        if (meshOnly) noFilter.delete(plan.instanceId);
        else noFilter.add(plan.instanceId);
        state.set(plan.instanceId, {
          key,
          errorKey: null,
          status: {
            active: true,
            chains: installed,
            redirects,
            meshDestinationsOnly: meshOnly,
            lastError: null,
          },
        });
      });
    },
    remove(instanceId) {
      return enqueue(async () => {
        const had = state.get(instanceId);
        state.delete(instanceId);
        const chains = chainsFor(node, instanceId);
        const tables: [Table, string[], string][] = [
          ['nat', [chains.inbound, chains.outbound], 'remove the %interception rules'],
        ];
        if (!noFilter.delete(instanceId))
          tables.push(['filter', [chains.meshOnly], 'remove the %mesh-destinations-only rules']);
        try {
          const removed: string[] = [];
          for (const family of families) {
            for (const [table, names, what] of tables) {
              const script = removeScript(names, await list(instanceId, family, table), table);
              if (script === null) continue;
              await restore(instanceId, what, family, script);
              removed.push(...names.filter((c) => !removed.includes(c)));
            }
          }
          if ([...state.values()].every((s) => !s.status.active)) mark(false);
          if (removed.length === 0) return;
          logger.info(
            { instance: instanceId, chains: removed },
            `transparent rules of ${instanceId} removed`,
          );
        } catch (err) {
          // nothing was installed without the privilege: only an instance with rules complains
          if (had?.status.active) logError(logger, toRemoraError(err), undefined, 'warn');
        }
      });
    },
    reconcile(keep) {
      const kept = [...keep];
      return enqueue(async () => {
        if (kept.length === 0 && (!o.markerPath || !existsSync(o.markerPath))) return;
        const who = '(start-up clean-up)';
        let clean = true;
        /** Filter chains seen, and in how many families the filter table could be listed. */
        const filterChains = new Set<string>();
        let filterListed = 0;
        for (const family of families) {
          for (const table of ['nat', 'filter'] as const) {
            let listing: TableListing;
            try {
              listing = await list(who, family, table);
            } catch (err) {
              // an agent without transparent instances need not have iptables at all
              if (kept.length > 0) logError(logger, toRemoraError(err), undefined, 'warn');
              else
                logger.debug({ err: toRemoraError(err).message }, `no ${table} table to clean up`);
              clean = false;
              continue;
            }
            if (table === 'filter') {
              filterListed++;
              for (const c of listing.chains) filterChains.add(c);
            }
            const stale = staleChains(node, listing, kept);
            const script = removeScript(stale, listing, table);
            if (script === null) continue;
            try {
              await restore(who, `remove stale %${table} chains`, family, script);
              logger.info(
                { chains: stale, family: `IPv${family}`, table },
                `removed ${stale.length} stale transparent chains`,
              );
            } catch (err) {
              logError(logger, toRemoraError(err), undefined, 'warn');
              clean = false;
            }
          }
        }
        // the kept instances without a filter chain need no look at the filter table in apply()
        if (filterListed === families.length)
          for (const id of kept)
            if (!filterChains.has(chainsFor(node, id).meshOnly)) noFilter.add(id);
        if (kept.length === 0 && clean) mark(false);
      });
    },
    status(instanceId) {
      const st = state.get(instanceId);
      return st ? structuredClone(st.status) : null;
    },
    idle: () => queue,
    ipv6: families.includes(6),
  };
}
