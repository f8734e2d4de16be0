// Transparent interception rules (docs/transparent.md): pure functions from an instance's plan to
// the `iptables-restore --noflush` input that installs, rebuilds or removes its two nat chains.
// Nothing here runs a command, so unit tests check the exact rules without root.
import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';

/**
 * The address family of a rule set: 4 is `iptables`, 6 is `ip6tables`. Both get the same chains:
 * IPv6 callers of the app's port go to the sidecar like IPv4 ones (an app listening on `::` is
 * not reachable around the mesh), and the upstreams' IPv6 addresses are redirected to the
 * proxy's listeners on ::1 (the agent asks the proxy for them).
 */
export type Family = 4 | 6;

/** Every chain the agent manages starts with this; iptables allows at most 28 characters. */
export const CHAIN_PREFIX = 'REMORA-';
export const MAX_CHAIN_NAME = 28;

export interface InstanceChains {
  /** Jumped to from PREROUTING: traffic arriving for the app's port. */
  inbound: string;
  /** Jumped to from OUTPUT: this host's connections to mesh services. */
  outbound: string;
}

/** Four hex digits naming the node, so that agents sharing a network namespace never clash. */
export function nodeTag(node: string): string {
  return createHash('sha256').update(`node:${node}`).digest('hex').slice(0, 4);
}

/**
 * `REMORA-<node tag>-<instance hash>-IN` and `…-OUT` (24 and 25 characters): a hash, because an
 * instance ID may be up to 128 characters and iptables chain names at most 28.
 */
export function chainsFor(node: string, instanceId: string): InstanceChains {
  const h = createHash('sha256').update(`instance:${node}/${instanceId}`).digest('hex').slice(0, 8);
  const base = `${CHAIN_PREFIX}${nodeTag(node)}-${h}`;
  return { inbound: `${base}-IN`, outbound: `${base}-OUT` };
}

/** One mesh destination the app may dial, and the proxy listener that carries it. */
export interface RedirectTarget {
  /** Upstream service name (for the rule comment). */
  service: string;
  /** The destination's address as Consul reports it (IPv4 or IPv6). */
  address: string;
  port: number;
  /** Port of the proxy listener that takes it (on 127.0.0.1, and on ::1 for IPv6 rules). */
  toPort: number;
}

export interface TransparentPlan {
  instanceId: string;
  /** The app's port: plain callers of it are sent to the sidecar's mTLS listener (0: none). */
  appPort: number;
  sidecarPort: number;
  /** Connections of this user (the proxies) pass untouched: the loop guard. */
  proxyUid: number;
  /**
   * The user the app runs as (`proxy.config.app_user`): only its connections are redirected, so
   * that several transparent instances on one host each carry their own app's calls. Absent:
   * every local process's calls are.
   */
  appUid?: number;
  targets: RedirectTarget[];
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(address: string): boolean {
  return IPV4.test(address);
}

/** A comment iptables accepts (≤ 256 characters, no quotes). */
function comment(text: string): string[] {
  return ['-m', 'comment', '--comment', `"${text.replace(/["\\\n]/g, '').slice(0, 200)}"`];
}

/**
 * The rules of the two chains of one family, as argument lists (without `-A <chain>`), in order.
 * Targets whose address is not of that family are left out (see skippedTargets), as are
 * duplicates.
 */
export function chainRules(
  plan: TransparentPlan,
  family: Family = 4,
): { inbound: string[][]; outbound: string[][] } {
  const inbound: string[][] = [];
  if (plan.appPort > 0 && plan.appPort !== plan.sidecarPort) {
    inbound.push([
      '-p',
      'tcp',
      '--dport',
      String(plan.appPort),
      ...comment(`remora ${plan.instanceId} inbound`),
      '-j',
      'REDIRECT',
      '--to-ports',
      String(plan.sidecarPort),
    ]);
  }
  const outbound: string[][] = [
    [
      '-m',
      'owner',
      '--uid-owner',
      String(plan.proxyUid),
      ...comment('remora: the proxies own traffic'),
      '-j',
      'RETURN',
    ],
  ];
  if (plan.appUid !== undefined && plan.appUid !== plan.proxyUid) {
    outbound.push([
      '-m',
      'owner',
      '!',
      '--uid-owner',
      String(plan.appUid),
      ...comment(`remora ${plan.instanceId}: calls of its app only`),
      '-j',
      'RETURN',
    ]);
  }
  const seen = new Set<string>();
  for (const t of sortTargets(plan.targets)) {
    const key = `${t.address}:${t.port}`;
    if (familyOf(t.address) !== family || seen.has(key)) continue;
    seen.add(key);
    outbound.push([
      '-d',
      family === 4 ? `${t.address}/32` : `${t.address}/128`,
      '-p',
      'tcp',
      '--dport',
      String(t.port),
      ...comment(`remora ${plan.instanceId} to ${t.service}`),
      '-j',
      'REDIRECT',
      '--to-ports',
      String(t.toPort),
    ]);
  }
  return { inbound, outbound };
}

/** The family of an IP address, or null for anything else (a host name). */
export function familyOf(address: string): Family | null {
  return isIpv4(address) ? 4 : isIPv6(address) ? 6 : null;
}

/** Targets that get no rule: host names, and IPv6 addresses when IPv6 rules are not managed. */
export function skippedTargets(
  plan: TransparentPlan,
  families: readonly Family[],
): RedirectTarget[] {
  return plan.targets.filter((t) => {
    const f = familyOf(t.address);
    return f === null || !families.includes(f);
  });
}

function sortTargets(targets: readonly RedirectTarget[]): RedirectTarget[] {
  return [...targets].sort((a, b) =>
    a.address !== b.address ? (a.address < b.address ? -1 : 1) : a.port - b.port,
  );
}

/**
 * Whether the family needs chains for this plan: IPv4 always (the chains are its record of the
 * instance), IPv6 for an app port to guard or an IPv6 destination.
 */
export function hasRules(plan: TransparentPlan, family: Family): boolean {
  const r = chainRules(plan, family);
  return family === 4 || r.inbound.length > 0 || r.outbound.some((x) => x.includes('REDIRECT'));
}

/** The jump rules, as `iptables -S` prints them (without `-A`). */
export function jumpRules(chains: InstanceChains): { prerouting: string[]; output: string[] } {
  return {
    prerouting: ['PREROUTING', '-p', 'tcp', '-j', chains.inbound],
    output: ['OUTPUT', '-p', 'tcp', '-j', chains.outbound],
  };
}

/** What `iptables -t nat -S` shows of the REMORA chains. */
export interface NatListing {
  /** Chains named REMORA-… (from `-N` lines). */
  chains: string[];
  /** `-A PREROUTING|OUTPUT … -j REMORA-…` lines, as printed. */
  jumps: { line: string; from: string; chain: string }[];
}

export function parseNatListing(text: string): NatListing {
  const chains: string[] = [];
  const jumps: NatListing['jumps'] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const n = /^-N (\S+)$/.exec(line);
    if (n && n[1]!.startsWith(CHAIN_PREFIX)) chains.push(n[1]!);
    const j = /^-A (\S+) .*-j (REMORA-\S+)$/.exec(line);
    if (j && !j[1]!.startsWith(CHAIN_PREFIX)) jumps.push({ line, from: j[1]!, chain: j[2]! });
  }
  return { chains, jumps };
}

/**
 * `iptables-restore --noflush` input that (re)builds an instance's chains atomically: declaring a
 * chain flushes it, the rules follow, and the jumps are added only when `listing` lacks them.
 */
export function installScript(
  node: string,
  plan: TransparentPlan,
  listing: NatListing,
  family: Family = 4,
): string {
  const chains = chainsFor(node, plan.instanceId);
  const rules = chainRules(plan, family);
  const jumps = jumpRules(chains);
  const has = (from: string, chain: string) =>
    listing.jumps.some((j) => j.from === from && j.chain === chain);
  const lines = ['*nat', `:${chains.inbound} - [0:0]`, `:${chains.outbound} - [0:0]`];
  for (const r of rules.inbound) lines.push(['-A', chains.inbound, ...r].join(' '));
  for (const r of rules.outbound) lines.push(['-A', chains.outbound, ...r].join(' '));
  if (!has('PREROUTING', chains.inbound)) lines.push(['-A', ...jumps.prerouting].join(' '));
  if (!has('OUTPUT', chains.outbound)) lines.push(['-A', ...jumps.output].join(' '));
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Input that removes the given chains and every jump to them (as listed), or null if none exist. */
export function removeScript(chains: readonly string[], listing: NatListing): string | null {
  const present = chains.filter((c) => listing.chains.includes(c));
  const jumps = listing.jumps.filter((j) => chains.includes(j.chain));
  if (present.length === 0 && jumps.length === 0) return null;
  const lines = ['*nat'];
  for (const j of jumps) lines.push(j.line.replace(/^-A /, '-D '));
  for (const c of present) lines.push(`-F ${c}`);
  for (const c of present) lines.push(`-X ${c}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** The REMORA chains of `node` in the listing whose instance is not in `keep`. */
export function staleChains(node: string, listing: NatListing, keep: Iterable<string>): string[] {
  const tag = `${CHAIN_PREFIX}${nodeTag(node)}-`;
  const wanted = new Set<string>();
  for (const id of keep) {
    const c = chainsFor(node, id);
    wanted.add(c.inbound);
    wanted.add(c.outbound);
  }
  const names = new Set([...listing.chains, ...listing.jumps.map((j) => j.chain)]);
  return [...names].filter((c) => c.startsWith(tag) && !wanted.has(c)).sort();
}
