// The agent's transparent-interception manager (docs/transparent.md): installs, rebuilds and
// removes each transparent instance's nat chains through an injectable CommandRunner. Every
// iptables call goes through one queue, so two updates never interleave; a failure is recorded
// per instance (shown by `remora status`) and never touches other instances.
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
  parseNatListing,
  removeScript,
  skippedTargets,
  staleChains,
  type Family,
  type NatListing,
  type TransparentPlan,
} from './rules.ts';

export {
  chainsFor,
  chainRules,
  installScript,
  parseNatListing,
  removeScript,
  staleChains,
  nodeTag,
  CHAIN_PREFIX,
  type RedirectTarget,
  type TransparentPlan,
  type InstanceChains,
  type NatListing,
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
  lastError: { code: string; message: string; at: string } | null;
}

export interface TransparentManager {
  /** Installs or rebuilds the rules of one instance (skipped when unchanged). */
  apply(plan: TransparentPlan): Promise<void>;
  /** Removes one instance's chains and jumps. */
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

  async function list(instance: string, family: Family): Promise<NatListing> {
    const what = `list the ${TOOLS[family].label}nat table`;
    return parseNatListing(
      await run(instance, what, TOOLS[family].list, ['-w', '5', '-t', 'nat', '-S']),
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
      status: { active: false, chains: [], redirects: 0, lastError: null },
    };
    entry.status.active = false;
    entry.status.lastError = { code: err.code, message: err.message, at };
    entry.key = ''; // retried on the next change
    // log each distinct failure once, not on every endpoint change
    const errorKey = `${err.code}:${err.message}`;
    if (entry.errorKey !== errorKey) logError(logger, err, undefined, 'error');
    entry.errorKey = errorKey;
    state.set(id, entry);
  }

  return {
    apply(plan) {
      return enqueue(async () => {
        const key = JSON.stringify(plan);
        const prev = state.get(plan.instanceId);
        if (prev && prev.key === key && prev.status.active) return;
        const chains = chainsFor(node, plan.instanceId);
        let redirects = 0;
        try {
          for (const family of families) {
            const listing = await list(plan.instanceId, family);
            if (!hasRules(plan, family)) {
              // IPv6 with no app port to guard: only a chain left by an earlier plan goes
              const script = removeScript([chains.inbound, chains.outbound], listing);
              if (script !== null)
                await restore(plan.instanceId, 'remove the %interception rules', family, script);
              continue;
            }
            mark(true);
            const script = installScript(node, plan, listing, family);
            await restore(plan.instanceId, 'install the %interception rules', family, script);
            const rules = chainRules(plan, family);
            // the owner guards are not redirects
            redirects += [...rules.inbound, ...rules.outbound].filter((r) =>
              r.includes('REDIRECT'),
            ).length;
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
        logger.info(
          {
            instance: plan.instanceId,
            chains: [chains.inbound, chains.outbound],
            redirects,
            targets: plan.targets.length,
          },
          `transparent rules of ${plan.instanceId} installed`,
        );
        state.set(plan.instanceId, {
          key,
          errorKey: null,
          status: {
            active: true,
            chains: [chains.inbound, chains.outbound],
            redirects,
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
        try {
          let removed = false;
          for (const family of families) {
            const listing = await list(instanceId, family);
            const script = removeScript([chains.inbound, chains.outbound], listing);
            if (script === null) continue;
            await restore(instanceId, 'remove the %interception rules', family, script);
            removed = true;
          }
          if ([...state.values()].every((s) => !s.status.active)) mark(false);
          if (!removed) return;
          logger.info(
            { instance: instanceId, chains: [chains.inbound, chains.outbound] },
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
        for (const family of families) {
          let listing: NatListing;
          try {
            listing = await list(who, family);
          } catch (err) {
            // an agent without transparent instances need not have iptables at all
            if (kept.length > 0) logError(logger, toRemoraError(err), undefined, 'warn');
            else logger.debug({ err: toRemoraError(err).message }, 'no nat table to clean up');
            clean = false;
            continue;
          }
          const stale = staleChains(node, listing, kept);
          const script = removeScript(stale, listing);
          if (script === null) continue;
          try {
            await restore(who, 'remove stale %chains', family, script);
            logger.info(
              { chains: stale, family: `IPv${family}` },
              `removed ${stale.length} stale transparent chains`,
            );
          } catch (err) {
            logError(logger, toRemoraError(err), undefined, 'warn');
            clean = false;
          }
        }
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
