// Transparent interception rules (docs/transparent.md): pure functions from an instance's plan to
// the `iptables-restore --noflush` input that installs, rebuilds or removes its two nat chains,
// and its filter chain while the mesh entry says `MeshDestinationsOnly`. Nothing here runs a
// command, so unit tests check the exact rules without root.
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

/** The iptables tables the agent writes to. */
export type Table = 'nat' | 'filter';

export interface InstanceChains {
  /** Jumped to from PREROUTING: traffic arriving for the app's port. */
  inbound: string;
  /** Jumped to from OUTPUT: this host's connections to mesh services. */
  outbound: string;
  /**
   * In the filter table, jumped to from OUTPUT while the mesh entry sets `MeshDestinationsOnly`:
   * refuses the app's connections that its nat chain did not redirect to the proxy.
   */
  meshOnly: string;
}

/** Four hex digits naming the node, so that agents sharing a network namespace never clash. */
export function nodeTag(node: string): string {
  return createHash('sha256').update(`node:${node}`).digest('hex').slice(0, 4);
}

/**
 * `REMORA-<node tag>-<instance hash>-IN`, `…-OUT` and `…-MESH` (24, 25 and 26 characters): a
 * hash, because an instance ID may be up to 128 characters and iptables chain names at most 28.
 */
export function chainsFor(node: string, instanceId: string): InstanceChains {
  const h = createHash('sha256').update(`instance:${node}/${instanceId}`).digest('hex').slice(0, 8);
  const base = `${CHAIN_PREFIX}${nodeTag(node)}-${h}`;
  return { inbound: `${base}-IN`, outbound: `${base}-OUT`, meshOnly: `${base}-MESH` };
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
  /**
   * The mesh entry's `TransparentProxy.MeshDestinationsOnly`: the app's TCP connections that no
   * redirect sends to the proxy are refused (the filter chain), as Consul's Envoy refuses them
   * once it has no passthrough cluster. Absent: they pass untouched.
   */
  meshDestinationsOnly?: boolean;
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
  const outbound = ownerGuards(plan);
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

/**
 * The owner guards that start an instance's OUTPUT chains (nat and filter alike): the proxies'
 * own connections pass (the loop guard; they also reach Consul, NATS and other hosts' sidecars),
 * and with `app_user` so does every other user's.
 */
function ownerGuards(plan: TransparentPlan): string[][] {
  const guards = [
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
    guards.push([
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
  return guards;
}

/** Where a redirected connection lands: the loopback network of the family. */
const LOOPBACK: Record<Family, string> = { 4: '127.0.0.0/8', 6: '::1/128' };

/**
 * The rules of the filter chain that refuses, with `MeshDestinationsOnly`, the app's TCP
 * connections its proxy does not carry (argument lists without `-A <chain>`, in order). It only
 * ever RETURNs or REJECTs, never ACCEPTs, so the host's own filter rules still judge what passes:
 *
 * - the owner guards, as in the nat chain;
 * - loopback destinations: filter OUTPUT runs after nat OUTPUT, so a redirected connection
 *   already goes to 127.0.0.1 (::1); local services (a Consul agent on 127.0.0.1, explicit
 *   upstream listeners) are reached there too;
 * - answers: packets of connections that others opened to this host (conntrack's REPLY
 *   direction), e.g. to a port in `exclude_inbound_ports`; the app's own connections opened before
 *   the flag was set are not answers, and are cut like new ones;
 * - DNS over TCP (port 53, to any server): UDP is never refused (Consul's rules do not capture
 *   it either), so pinning TCP to resolv.conf's servers would close no hole;
 * - everything else gets a TCP reset: the app fails at once with ECONNREFUSED, not on a timeout.
 */
export function meshOnlyRules(plan: TransparentPlan, family: Family = 4): string[][] {
  const id = plan.instanceId;
  return [
    ...ownerGuards(plan),
    [
      '-d',
      LOOPBACK[family],
      ...comment(`remora ${id}: the proxy and local services`),
      '-j',
      'RETURN',
    ],
    [
      '-m',
      'conntrack',
      '--ctdir',
      'REPLY',
      ...comment(`remora ${id}: answers to inbound connections`),
      '-j',
      'RETURN',
    ],
    ['-p', 'tcp', '--dport', '53', ...comment(`remora ${id}: DNS over TCP`), '-j', 'RETURN'],
    [
      '-p',
      'tcp',
      ...comment(`remora ${id}: mesh destinations only`),
      '-j',
      'REJECT',
      '--reject-with',
      'tcp-reset',
    ],
  ];
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

/** The jump rules, as `iptables -S` prints them (without `-A`); `meshOnly`'s is in filter. */
export function jumpRules(chains: InstanceChains): {
  prerouting: string[];
  output: string[];
  meshOnly: string[];
} {
  return {
    prerouting: ['PREROUTING', '-p', 'tcp', '-j', chains.inbound],
    output: ['OUTPUT', '-p', 'tcp', '-j', chains.outbound],
    meshOnly: ['OUTPUT', '-p', 'tcp', '-j', chains.meshOnly],
  };
}

/** What `iptables -t <table> -S` shows of the REMORA chains. */
export interface TableListing {
  /** Chains named REMORA-… (from `-N` lines). */
  chains: string[];
  /** `-A PREROUTING|OUTPUT … -j REMORA-…` lines, as printed. */
  jumps: { line: string; from: string; chain: string }[];
}

export function parseTableListing(text: string): TableListing {
  const chains: string[] = [];
  const jumps: TableListing['jumps'] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const n = /^-N (\S+)$/.exec(line);
    if (n && n[1]!.startsWith(CHAIN_PREFIX)) chains.push(n[1]!);
    const j = /^-A (\S+) .*-j (REMORA-\S+)$/.exec(line);
    if (j && !j[1]!.startsWith(CHAIN_PREFIX)) jumps.push({ line, from: j[1]!, chain: j[2]! });
  }
  return { chains, jumps };
}

/** Whether the listing holds the jump from the built-in chain `from` to `chain`. */
function hasJump(listing: TableListing, from: string, chain: string): boolean {
  return listing.jumps.some((j) => j.from === from && j.chain === chain);
}

/**
 * `iptables-restore --noflush` input that (re)builds an instance's nat chains atomically:
 * declaring a chain flushes it, the rules follow, and the jumps are added only when `listing`
 * lacks them.
 */
export function installScript(
  node: string,
  plan: TransparentPlan,
  listing: TableListing,
  family: Family = 4,
): string {
  const chains = chainsFor(node, plan.instanceId);
  const rules = chainRules(plan, family);
  const jumps = jumpRules(chains);
  const lines = ['*nat', `:${chains.inbound} - [0:0]`, `:${chains.outbound} - [0:0]`];
  for (const r of rules.inbound) lines.push(['-A', chains.inbound, ...r].join(' '));
  for (const r of rules.outbound) lines.push(['-A', chains.outbound, ...r].join(' '));
  if (!hasJump(listing, 'PREROUTING', chains.inbound))
    lines.push(['-A', ...jumps.prerouting].join(' '));
  if (!hasJump(listing, 'OUTPUT', chains.outbound)) lines.push(['-A', ...jumps.output].join(' '));
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * `iptables-restore --noflush` input for the instance's filter table (`listing`): with
 * `meshDestinationsOnly`, (re)builds its chain atomically and adds the jump when missing;
 * without, removes the chain and its jump, or null when there is none.
 */
export function meshOnlyScript(
  node: string,
  plan: TransparentPlan,
  listing: TableListing,
  family: Family = 4,
): string | null {
  const chains = chainsFor(node, plan.instanceId);
  if (!plan.meshDestinationsOnly) return removeScript([chains.meshOnly], listing, 'filter');
  const lines = ['*filter', `:${chains.meshOnly} - [0:0]`];
  for (const r of meshOnlyRules(plan, family)) lines.push(['-A', chains.meshOnly, ...r].join(' '));
  if (!hasJump(listing, 'OUTPUT', chains.meshOnly))
    lines.push(['-A', ...jumpRules(chains).meshOnly].join(' '));
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * Input that removes the given chains of `table` and every jump to them (as listed), or null if
 * none exist.
 */
export function removeScript(
  chains: readonly string[],
  listing: TableListing,
  table: Table = 'nat',
): string | null {
  const present = chains.filter((c) => listing.chains.includes(c));
  const jumps = listing.jumps.filter((j) => chains.includes(j.chain));
  if (present.length === 0 && jumps.length === 0) return null;
  const lines = [`*${table}`];
  for (const j of jumps) lines.push(j.line.replace(/^-A /, '-D '));
  for (const c of present) lines.push(`-F ${c}`);
  for (const c of present) lines.push(`-X ${c}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** The REMORA chains of `node` in the listing (of either table) whose instance is not in `keep`. */
export function staleChains(node: string, listing: TableListing, keep: Iterable<string>): string[] {
  const tag = `${CHAIN_PREFIX}${nodeTag(node)}-`;
  const wanted = new Set<string>();
  for (const id of keep) {
    const c = chainsFor(node, id);
    wanted.add(c.inbound).add(c.outbound).add(c.meshOnly);
  }
  const names = new Set([...listing.chains, ...listing.jumps.map((j) => j.chain)]);
  return [...names].filter((c) => c.startsWith(tag) && !wanted.has(c)).sort();
}
