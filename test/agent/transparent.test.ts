// Transparent interception on the agent side, without root: the rules an instance gets, the chain
// names, the start-up clean-up of stale chains, the owner exclusion, the coded errors when
// iptables is missing or not allowed, and the definition fields that turn it on.
import t, { type Test } from 'tap';
import { mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  chainRules,
  chainsFor,
  createPortAllocator,
  createTransparentManager,
  installScript,
  meshOnlyRules,
  meshOnlyScript,
  parseTableListing,
  removeScript,
  staleChains,
  targetsFromEntries,
  type CommandRunner,
  type TransparentPlan,
} from '../../agent/transparent/index.ts';
import { decodeDefinitionFile, mergeDefinitions } from '../../agent/definitions.ts';
import {
  asProtocol,
  derivedDestinations,
  protocolFromEntries,
} from '../../agent/transparent/derive.ts';
import type { IntentionsSnapshot } from '../../lib/intentions/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createClock } from '../../lib/util/index.ts';

const plan: TransparentPlan = {
  instanceId: 'web-1',
  appPort: 8080,
  sidecarPort: 21000,
  proxyUid: 998,
  targets: [
    { service: 'echo', address: '10.0.0.13', port: 7000, toPort: 15002 },
    { service: 'api', address: '10.0.0.12', port: 8080, toPort: 15001 },
    { service: 'api', address: '10.0.0.12', port: 8080, toPort: 15001 },
    { service: 'api', address: 'api.example', port: 8080, toPort: 15001 },
  ],
};

t.test('chain names are REMORA-<node>-<instance>, at most 28 characters, per node', async (t) => {
  const a = chainsFor('vm1', 'web-1');
  t.match(a.inbound, /^REMORA-[0-9a-f]{4}-[0-9a-f]{8}-IN$/);
  t.match(a.outbound, /^REMORA-[0-9a-f]{4}-[0-9a-f]{8}-OUT$/);
  const long = chainsFor('n'.repeat(200), 'x'.repeat(128));
  t.ok(long.outbound.length <= 28, `${long.outbound} fits iptables' 28 characters`);
  t.same(chainsFor('vm1', 'web-1'), a, 'stable across runs');
  t.not(chainsFor('vm2', 'web-1').inbound, a.inbound, 'another node gets other chains');
  t.not(chainsFor('vm1', 'web-2').inbound, a.inbound, 'another instance gets other chains');
  t.equal(a.inbound.slice(0, 12), chainsFor('vm1', 'zzz').inbound.slice(0, 12), 'node tag shared');
});

t.test('an instance gets an inbound redirect and owner-guarded outbound redirects', async (t) => {
  const r = chainRules(plan);
  t.same(r.inbound, [
    [
      '-p',
      'tcp',
      '--dport',
      '8080',
      '-m',
      'comment',
      '--comment',
      '"remora web-1 inbound"',
      '-j',
      'REDIRECT',
      '--to-ports',
      '21000',
    ],
  ]);
  t.same(
    r.outbound,
    [
      [
        '-m',
        'owner',
        '--uid-owner',
        '998',
        '-m',
        'comment',
        '--comment',
        '"remora: the proxies own traffic"',
        '-j',
        'RETURN',
      ],
      [
        '-d',
        '10.0.0.12/32',
        '-p',
        'tcp',
        '--dport',
        '8080',
        '-m',
        'comment',
        '--comment',
        '"remora web-1 to api"',
        '-j',
        'REDIRECT',
        '--to-ports',
        '15001',
      ],
      [
        '-d',
        '10.0.0.13/32',
        '-p',
        'tcp',
        '--dport',
        '7000',
        '-m',
        'comment',
        '--comment',
        '"remora web-1 to echo"',
        '-j',
        'REDIRECT',
        '--to-ports',
        '15002',
      ],
    ],
    'the owner RETURN comes first; duplicates and host names are left out',
  );
  t.same(chainRules({ ...plan, appPort: 0 }).inbound, [], 'an excluded app port: no inbound rule');
});

t.test('with app_user, only the calls of the app are redirected', async (t) => {
  const r = chainRules({ ...plan, appUid: 1001 });
  t.same(
    r.outbound[1],
    [
      '-m',
      'owner',
      '!',
      '--uid-owner',
      '1001',
      '-m',
      'comment',
      '--comment',
      '"remora web-1: calls of its app only"',
      '-j',
      'RETURN',
    ],
    'after the proxies guard, every other user returns',
  );
  t.equal(r.outbound.length, 4, 'then the same redirects');
  t.same(
    chainRules({ ...plan, appUid: 998 }).outbound.length,
    3,
    'an app running as the proxies user gets no second guard',
  );
  const script = installScript('vm1', { ...plan, appUid: 1001 }, parseTableListing(''));
  t.match(script, /-m owner ! --uid-owner 1001 -m comment/);
});

t.test('the install script flushes both chains and adds each jump only once', async (t) => {
  const c = chainsFor('vm1', 'web-1');
  const fresh = installScript('vm1', plan, parseTableListing(''));
  const lines = fresh.split('\n');
  t.equal(lines[0], '*nat');
  t.equal(lines[1], `:${c.inbound} - [0:0]`);
  t.equal(lines[2], `:${c.outbound} - [0:0]`);
  t.ok(lines.includes(`-A PREROUTING -p tcp -j ${c.inbound}`));
  t.ok(lines.includes(`-A OUTPUT -p tcp -j ${c.outbound}`));
  t.equal(lines.at(-2), 'COMMIT');
  const listing = parseTableListing(
    [
      '-P OUTPUT ACCEPT',
      `-N ${c.inbound}`,
      `-N ${c.outbound}`,
      `-A PREROUTING -p tcp -j ${c.inbound}`,
      `-A OUTPUT -p tcp -j ${c.outbound}`,
      `-A ${c.outbound} -m owner --uid-owner 998 -j RETURN`,
    ].join('\n'),
  );
  const again = installScript('vm1', plan, listing);
  t.notOk(again.includes('-A PREROUTING'), 'no second PREROUTING jump');
  t.notOk(again.includes('-A OUTPUT'), 'no second OUTPUT jump');
});

t.test('stale chains of this node are removed with their jumps; others stay', async (t) => {
  const keep = chainsFor('vm1', 'web-1');
  const gone = chainsFor('vm1', 'old-1');
  const other = chainsFor('vm2', 'old-1');
  const listing = parseTableListing(
    [
      `-N ${keep.inbound}`,
      `-N ${keep.outbound}`,
      `-N ${gone.inbound}`,
      `-N ${gone.outbound}`,
      `-N ${other.outbound}`,
      '-N DOCKER_OUTPUT',
      `-A PREROUTING -p tcp -j ${gone.inbound}`,
      `-A OUTPUT -p tcp -j ${gone.outbound}`,
      `-A OUTPUT -p tcp -j ${other.outbound}`,
      `-A OUTPUT -p tcp -j ${keep.outbound}`,
    ].join('\n'),
  );
  const stale = staleChains('vm1', listing, ['web-1']);
  t.same(stale, [gone.inbound, gone.outbound].sort());
  t.same(removeScript(stale, listing)!.split('\n'), [
    '*nat',
    `-D PREROUTING -p tcp -j ${gone.inbound}`,
    `-D OUTPUT -p tcp -j ${gone.outbound}`,
    ...stale.map((c) => `-F ${c}`),
    ...stale.map((c) => `-X ${c}`),
    'COMMIT',
    '',
  ]);
  t.equal(removeScript([chainsFor('vm1', 'none').inbound], listing), null, 'nothing to remove');
});

t.test('MeshDestinationsOnly: a filter chain refuses what no redirect carries', async (t) => {
  const rules = (p: TransparentPlan, family: 4 | 6) =>
    meshOnlyRules(p, family).map((r) => r.join(' '));
  t.same(
    rules({ ...plan, appUid: 1001 }, 4),
    [
      '-m owner --uid-owner 998 -m comment --comment "remora: the proxies own traffic" -j RETURN',
      '-m owner ! --uid-owner 1001 -m comment --comment "remora web-1: calls of its app only" -j RETURN',
      '-d 127.0.0.0/8 -m comment --comment "remora web-1: the proxy and local services" -j RETURN',
      '-m conntrack --ctdir REPLY -m comment --comment "remora web-1: answers to inbound connections" -j RETURN',
      '-p tcp --dport 53 -m comment --comment "remora web-1: DNS over TCP" -j RETURN',
      '-p tcp -m comment --comment "remora web-1: mesh destinations only" -j REJECT --reject-with tcp-reset',
    ],
    'the owner guards of the nat chain, then what passes, then a reset for the rest',
  );
  t.same(
    rules(plan, 6),
    [
      '-m owner --uid-owner 998 -m comment --comment "remora: the proxies own traffic" -j RETURN',
      '-d ::1/128 -m comment --comment "remora web-1: the proxy and local services" -j RETURN',
      '-m conntrack --ctdir REPLY -m comment --comment "remora web-1: answers to inbound connections" -j RETURN',
      '-p tcp --dport 53 -m comment --comment "remora web-1: DNS over TCP" -j RETURN',
      '-p tcp -m comment --comment "remora web-1: mesh destinations only" -j REJECT --reject-with tcp-reset',
    ],
    'IPv6: redirected calls land on ::1; without app_user every user but the proxies is held',
  );

  const c = chainsFor('vm1', 'web-1');
  t.match(c.meshOnly, /^REMORA-[0-9a-f]{4}-[0-9a-f]{8}-MESH$/);
  t.ok(c.meshOnly.length <= 28);
  const on = { ...plan, meshDestinationsOnly: true };
  t.same(meshOnlyScript('vm1', on, parseTableListing(''))!.split('\n'), [
    '*filter',
    `:${c.meshOnly} - [0:0]`,
    ...rules(plan, 4).map((r) => `-A ${c.meshOnly} ${r}`),
    `-A OUTPUT -p tcp -j ${c.meshOnly}`,
    'COMMIT',
    '',
  ]);
  const installed = parseTableListing(
    [`-N ${c.meshOnly}`, `-A OUTPUT -p tcp -j ${c.meshOnly}`].join('\n'),
  );
  t.notMatch(meshOnlyScript('vm1', on, installed), /-A OUTPUT/, 'no second jump');
  t.same(
    meshOnlyScript('vm1', plan, installed)!.split('\n'),
    [
      '*filter',
      `-D OUTPUT -p tcp -j ${c.meshOnly}`,
      `-F ${c.meshOnly}`,
      `-X ${c.meshOnly}`,
      'COMMIT',
      '',
    ],
    'the flag off: the chain and its jump go',
  );
  t.equal(meshOnlyScript('vm1', plan, parseTableListing('')), null, 'off, and nothing to remove');
  t.same(
    staleChains('vm1', installed, []),
    [c.meshOnly],
    'a gone instance’s filter chain is stale',
  );
  t.same(staleChains('vm1', installed, ['web-1']), [], 'a kept instance’s is not');
});

/**
 * A fake iptables: keeps each family's nat and filter listings as text, records every call, can be
 * told to fail (every call, the IPv6 tools, or restores that write the filter table).
 */
function fakeIptables(
  o: {
    fail?: { code: number; stderr: string } | 'ENOENT';
    fail6?: 'ENOENT';
    failFilter?: { code: number; stderr: string };
  } = {},
) {
  const calls: { command: string; args: string[]; input?: string }[] = [];
  // one nat and one filter table per family, as iptables and ip6tables keep them
  const tables: Record<string, string> = {
    '4/nat': '-P PREROUTING ACCEPT\n-P OUTPUT ACCEPT\n',
    '6/nat': '-P PREROUTING ACCEPT\n',
    '4/filter': '-P OUTPUT ACCEPT\n',
    '6/filter': '-P OUTPUT ACCEPT\n',
  };
  const runner: CommandRunner = async (command, args, input) => {
    calls.push({ command, args, ...(input !== undefined ? { input } : {}) });
    const family = command.startsWith('ip6') ? 6 : 4;
    if (o.fail === 'ENOENT' || (o.fail6 === 'ENOENT' && family === 6))
      throw Object.assign(new Error(`spawn ${command} ENOENT`), { code: 'ENOENT' });
    if (o.fail) return { code: o.fail.code, stdout: '', stderr: o.fail.stderr };
    if (command === 'iptables' || command === 'ip6tables')
      return { code: 0, stdout: tables[`${family}/${args[args.indexOf('-t') + 1]}`]!, stderr: '' };
    if (o.failFilter && input?.includes('*filter'))
      return { code: o.failFilter.code, stdout: '', stderr: o.failFilter.stderr };
    // apply the restore input to the text listings (enough for these tests)
    let table = '';
    for (const line of (input ?? '').split('\n')) {
      if (line.startsWith('*')) table = `${family}/${line.slice(1)}`;
      let listing = tables[table] ?? '';
      const decl = /^:(\S+) /.exec(line);
      if (decl) {
        if (!listing.includes(`-N ${decl[1]}\n`)) listing += `-N ${decl[1]}\n`;
        listing = listing
          .split('\n')
          .filter((l) => !l.startsWith(`-A ${decl[1]} `))
          .join('\n');
      } else if (line.startsWith('-A ')) listing += `${line}\n`;
      else if (line.startsWith('-D ')) listing = listing.replace(`-A ${line.slice(3)}\n`, '');
      else if (line.startsWith('-F '))
        listing = listing
          .split('\n')
          .filter((l) => !l.startsWith(`-A ${line.slice(3)} `))
          .join('\n');
      else if (line.startsWith('-X ')) listing = listing.replace(`-N ${line.slice(3)}\n`, '');
      if (table) tables[table] = listing;
    }
    return { code: 0, stdout: '', stderr: '' };
  };
  return {
    runner,
    calls,
    listing: (family: 4 | 6 = 4, table: 'nat' | 'filter' = 'nat') => tables[`${family}/${table}`]!,
  };
}

/** A fake iptables, a marker path in a temporary dir, and a maker of managers sharing them. */
function managers(t: Test, ipv6: boolean, fail?: Parameters<typeof fakeIptables>[0]) {
  const dir = mkdtempSync(join(tmpdir(), 'remora-tp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, 'transparent-rules');
  const ipt = fakeIptables(fail);
  const mk = () =>
    createTransparentManager({
      runner: ipt.runner,
      node: 'vm1',
      logger: createSilentLogger(),
      clock: createClock(),
      markerPath: marker,
      ipv6,
    });
  return { ipt, marker, mk };
}

t.test(
  'the manager installs, skips unchanged plans, and removes an instance’s rules',
  async (t) => {
    const { ipt, marker, mk } = managers(t, false);
    const m = mk();
    await m.apply(plan);
    const c = chainsFor('vm1', 'web-1');
    t.match(m.status('web-1'), { active: true, chains: [c.inbound, c.outbound], redirects: 3 });
    t.same(
      ipt.calls.map((x) => [x.command, ...x.args].join(' ')),
      ['iptables -w 5 -t nat -S', 'iptables-restore -w 5 --noflush', 'iptables -w 5 -t filter -S'],
      'one listing and one atomic restore, never a shell; the first plan looks for a filter chain an earlier run may have left',
    );
    t.ok(existsSync(marker), 'the marker records that rules may be installed');
    await m.apply(plan);
    t.equal(ipt.calls.length, 3, 'an unchanged plan runs nothing');
    await m.apply({ ...plan, targets: plan.targets.slice(0, 1) });
    t.equal(
      ipt.calls.length,
      5,
      'a changed plan rebuilds the chains, and knows there is no filter chain',
    );
    t.equal(ipt.listing().match(/-j REMORA-/g)?.length, 2, 'still one jump per chain');
    await m.remove('web-1');
    t.notMatch(ipt.listing(), /REMORA/, 'no REMORA chain or jump is left');
    t.equal(m.status('web-1'), null);
    t.notOk(existsSync(marker), 'the marker goes with the last chains');
  },
);

t.test('with IPv6, the same chains in ip6tables: app port and IPv6 destinations', async (t) => {
  const { ipt, marker, mk } = managers(t, true);
  const m = mk();
  const six = { service: 'api', address: 'fd00::12', port: 8080, toPort: 15001 };
  const dual = { ...plan, targets: [...plan.targets, six] };
  await m.apply(dual);
  const c = chainsFor('vm1', 'web-1');
  t.match(m.status('web-1'), { active: true, redirects: 5 }, 'three IPv4 redirects, two IPv6');
  t.same(
    ipt.calls.map((x) => x.command),
    ['iptables', 'iptables-restore', 'iptables', 'ip6tables', 'ip6tables-restore', 'ip6tables'],
    'per family: nat listing and restore, a look at the filter table',
  );
  const v4 = ipt.listing(4);
  const v6 = ipt.listing(6);
  t.notMatch(v4, 'fd00::12', 'IPv4 rules hold no IPv6 address');
  t.match(v6, `-A ${c.inbound} -p tcp --dport 8080`);
  t.match(v6, '-j REDIRECT --to-ports 21000');
  t.match(v6, `-A PREROUTING -p tcp -j ${c.inbound}`);
  t.match(v6, `-A ${c.outbound} -m owner --uid-owner 998`, 'the loop guard');
  t.match(v6, `-A ${c.outbound} -d fd00::12/128 -p tcp --dport 8080`);
  t.match(v6, '-j REDIRECT --to-ports 15001');
  t.notMatch(v6, /10\.0\.0\.1/, 'IPv6 rules hold no IPv4 address');
  t.match(v6, `-A OUTPUT -p tcp -j ${c.outbound}`);

  // nothing for IPv6 to do (no app port, no IPv6 destination): its chains go, IPv4's stay
  await m.apply({ ...plan, appPort: 0 });
  t.notMatch(ipt.listing(6), /REMORA/, 'nothing left in the IPv6 table');
  t.match(ipt.listing(4), `-N ${c.outbound}`);
  await m.apply(plan);
  t.match(ipt.listing(6), `-N ${c.inbound}`, 'an app port to guard is enough');

  // a new agent that no longer has web-1 cleans both tables
  await mk().reconcile([]);
  t.notMatch(ipt.listing(4), /REMORA/);
  t.notMatch(ipt.listing(6), /REMORA/);
  t.notOk(existsSync(marker));

  await m.apply({ ...dual, instanceId: 'web-2' });
  await m.remove('web-2');
  t.notMatch(ipt.listing(6), /REMORA/, 'remove() clears the IPv6 table too');
});

t.test('MeshDestinationsOnly on, off and cleaned up, in both families', async (t) => {
  const { ipt, marker, mk } = managers(t, true);
  const m = mk();
  const c = chainsFor('vm1', 'web-1');
  const on = { ...plan, appPort: 0, meshDestinationsOnly: true };
  await m.apply(on);
  t.match(m.status('web-1'), {
    active: true,
    chains: [c.inbound, c.outbound, c.meshOnly],
    meshDestinationsOnly: true,
  });
  for (const family of [4, 6] as const) {
    const filter = ipt.listing(family, 'filter');
    t.match(filter, `-A OUTPUT -p tcp -j ${c.meshOnly}`, `IPv${family}: the jump`);
    t.match(filter, /-j REJECT --reject-with tcp-reset/, `IPv${family}: the refusal`);
  }
  t.notMatch(ipt.listing(6), /REMORA/, 'IPv6 needs no nat chain here, but refuses all the same');

  const before = ipt.calls.length;
  await m.apply(plan);
  t.match(m.status('web-1'), { active: true, chains: [c.inbound, c.outbound] });
  t.equal(m.status('web-1')!.meshDestinationsOnly, false);
  for (const family of [4, 6] as const)
    t.notMatch(ipt.listing(family, 'filter'), /REMORA/, `IPv${family}: turning it off removes it`);
  t.match(ipt.listing(), `-N ${c.outbound}`, 'the nat chains stay');
  t.same(
    ipt.calls.slice(before).map((x) => x.input?.split('\n')[0] ?? x.args.join(' ')),
    [
      '-w 5 -t nat -S',
      '*nat',
      '-w 5 -t filter -S',
      '*filter',
      '-w 5 -t nat -S',
      '*nat',
      '-w 5 -t filter -S',
      '*filter',
    ],
  );
  const off = ipt.calls.length;
  await m.apply({ ...plan, targets: plan.targets.slice(1) });
  t.notOk(
    ipt.calls.slice(off).some((x) => x.args.includes('filter')),
    'while off, a rebuild leaves the filter table alone',
  );

  // a restart while the flag was on, and the flag off when the new agent applies its plan
  await m.apply(on);
  const next = mk();
  await next.reconcile(['web-1']);
  t.match(
    ipt.listing(4, 'filter'),
    c.meshOnly,
    'the start-up clean-up keeps a kept instance’s chain',
  );
  await next.apply(plan);
  t.notMatch(ipt.listing(4, 'filter'), /REMORA/, 'its first plan without the flag removes it');
  t.notMatch(ipt.listing(6, 'filter'), /REMORA/);

  await next.apply(on);
  await next.remove('web-1');
  for (const family of [4, 6] as const)
    for (const table of ['nat', 'filter'] as const)
      t.notMatch(
        ipt.listing(family, table),
        /REMORA/,
        `remove(): none left in IPv${family} ${table}`,
      );
  await next.apply({ ...on, instanceId: 'old-1' });
  await mk().reconcile([]);
  t.notMatch(ipt.listing(4, 'filter'), /REMORA/, 'stale filter chains go at start-up');
  t.notMatch(ipt.listing(6, 'filter'), /REMORA/);
  t.notOk(existsSync(marker));
});

t.test('a refused filter rule is the instance’s coded error; its redirects stay', async (t) => {
  const { ipt, mk } = managers(t, false, {
    failFilter: { code: 2, stderr: 'iptables-restore: line 3 failed\n' },
  });
  const m = mk();
  await m.apply({ ...plan, meshDestinationsOnly: true });
  const st = m.status('web-1')!;
  t.equal(st.active, false);
  t.equal(st.lastError?.code, 'REMORA_E_AGENT_TRANSPARENT_RULES');
  t.match(st.lastError?.message, /cannot install the mesh-destinations-only rules/);
  t.match(st.lastError?.message, /web-1 keeps running/);
  t.match(ipt.listing(), chainsFor('vm1', 'web-1').outbound, 'the nat chains are in place');
});

t.test('without ip6tables on an IPv6 host, the instance says so; IPv4 rules stay', async (t) => {
  const { ipt, mk } = managers(t, true, { fail6: 'ENOENT' });
  const m = mk();
  await m.apply(plan);
  const st = m.status('web-1')!;
  t.equal(st.active, false);
  t.equal(st.lastError?.code, 'REMORA_E_AGENT_TRANSPARENT_UNAVAILABLE');
  t.match(st.lastError?.message, /`ip6tables` is not installed/);
  t.match(st.lastError?.message, /IPv6 nat table/, 'names the step');
  t.match(ipt.listing(4), chainsFor('vm1', 'web-1').outbound, 'the IPv4 rules are in place');
});

t.test('start-up clean-up removes stale chains, and never runs iptables needlessly', async (t) => {
  const { ipt, marker, mk } = managers(t, false);
  await mk().reconcile([]);
  t.equal(ipt.calls.length, 0, 'no transparent instance and no marker: no iptables call');
  const first = mk();
  await first.apply(plan);
  await first.apply({ ...plan, instanceId: 'old-1' });
  // a new agent whose definitions no longer hold old-1 (nor anything transparent)
  const second = mk();
  await second.reconcile(['web-1']);
  t.match(ipt.listing(), chainsFor('vm1', 'web-1').outbound, 'the kept instance’s chains stay');
  t.notMatch(ipt.listing(), chainsFor('vm1', 'old-1').outbound, 'stale chains are gone');
  await second.reconcile([]);
  t.notMatch(ipt.listing(), /REMORA/, 'with nothing transparent left, every chain goes');
  t.notOk(existsSync(marker));
});

t.test('without the privilege the instance gets a coded error naming the way out', async (t) => {
  const ipt = fakeIptables({
    fail: {
      code: 4,
      stderr:
        'iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n',
    },
  });
  const m = createTransparentManager({
    runner: ipt.runner,
    node: 'vm1',
    logger: createSilentLogger(),
    clock: createClock(),
    ipv6: false,
  });
  await m.apply(plan);
  const st = m.status('web-1')!;
  t.equal(st.active, false);
  t.equal(st.lastError?.code, 'REMORA_E_AGENT_TRANSPARENT_PRIVILEGE');
  t.match(st.lastError?.message, /web-1/, 'names the instance');
  t.match(st.lastError?.message, /iptables -w 5 -t nat -S/, 'names the failed command');
  t.match(st.lastError?.message, /CAP_NET_ADMIN/);
  t.match(st.lastError?.message, /transparent\.conf/, 'names the systemd drop-in');
  t.match(st.lastError?.message, /cap_add: \[NET_ADMIN\]/, 'names the compose setting');
  t.match(st.lastError?.message, /explicit upstream listeners/, 'says what keeps working');
  await m.apply(plan);
  t.equal(ipt.calls.length, 2, 'a failed plan is tried again on the next change');

  const missing = createTransparentManager({
    runner: fakeIptables({ fail: 'ENOENT' }).runner,
    node: 'vm1',
    logger: createSilentLogger(),
    clock: createClock(),
    ipv6: false,
  });
  await missing.apply(plan);
  t.equal(missing.status('web-1')?.lastError?.code, 'REMORA_E_AGENT_TRANSPARENT_UNAVAILABLE');

  const refused = createTransparentManager({
    runner: fakeIptables({ fail: { code: 2, stderr: 'iptables-restore: line 4 failed\n' } }).runner,
    node: 'vm1',
    logger: createSilentLogger(),
    clock: createClock(),
    ipv6: false,
  });
  await refused.apply(plan);
  t.equal(refused.status('web-1')?.lastError?.code, 'REMORA_E_AGENT_TRANSPARENT_RULES');
});

t.test('targets are the addresses clients dial: sidecar address, forwarded port', async (t) => {
  const entry = (svcAddr: string, nodeAddr: string, port?: number) => ({
    Node: { Node: 'n', Address: nodeAddr },
    Service: {
      ID: 'api-1-sidecar-proxy',
      Service: 'api-sidecar-proxy',
      Address: svcAddr,
      Port: 21000,
      Proxy: { DestinationServiceID: 'api-1', ...(port ? { LocalServicePort: port } : {}) },
    },
  });
  t.same(
    targetsFromEntries([
      entry('10.0.0.12', '10.0.0.2', 8080),
      entry('', '10.0.0.13', 8080),
      entry('127.0.0.1', '127.0.0.1', 8080),
      entry('10.0.0.14', '10.0.0.2'),
    ]),
    [
      { address: '10.0.0.12', port: 8080 },
      { address: '10.0.0.13', port: 8080 },
    ],
    'node address when the sidecar has none; loopback and port-less entries left out',
  );
});

t.test('the port allocator keeps a key’s port and skips reserved ones', async (t) => {
  const p = createPortAllocator(15001, 15003);
  t.equal(p.get('web-1/http', new Set([15001])), 15002);
  t.equal(p.get('web-1/http'), 15002, 'stable');
  t.equal(p.get('web-1/upstream/echo'), 15001);
  t.equal(p.get('web-2/http'), 15003);
  t.equal(p.get('web-3/http'), null, 'range exhausted');
  p.release('web-1/');
  t.equal(p.get('web-3/http'), 15001);
});

t.test('definitions turn transparent mode on in either spelling', async (t) => {
  const def = (service: Record<string, unknown>) =>
    decodeDefinitionFile(JSON.stringify({ service }), 'x.json');
  const withProxy = (proxy: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    def({ name: 'web', port: 8080, connect: { sidecar_service: { proxy } }, ...extra });

  const remora = withProxy(
    { upstreams: [{ destination_name: 'api', config: { protocol: 'http' } }] },
    { transparent: true },
  );
  t.same(remora.problems, []);
  t.equal(remora.services[0]!.sidecar!.transparent, true);
  t.equal(remora.services[0]!.sidecar!.upstreams[0]!.localBindPort, 0, 'port left to the agent');

  const consul = withProxy({ mode: 'transparent', upstreams: [{ DestinationName: 'api' }] });
  t.equal(consul.services[0]!.sidecar!.transparent, true, 'Consul’s proxy.mode spelling');
  t.equal(withProxy({ Mode: 'direct' }).services[0]!.sidecar!.transparent, false);
  t.equal(withProxy({}).services[0]!.sidecar!.transparent, false, 'off by default');

  const excluded = withProxy({ mode: 'transparent', config: { exclude_inbound_ports: [8080] } });
  t.same(excluded.services[0]!.sidecar!.excludeInboundPorts, [8080], 'exclude_inbound_ports');
  const badExclude = withProxy({ config: { exclude_inbound_ports: [0] } });
  t.match(badExclude.problems[0]?.message, /exclude_inbound_ports\[0\] must be a port/);

  t.equal(excluded.services[0]!.sidecar!.deriveUpstreams, true, 'derived upstreams by default');
  t.equal(
    withProxy({ mode: 'transparent', config: { derive_upstreams: false } }).services[0]!.sidecar!
      .deriveUpstreams,
    false,
    'derive_upstreams: false turns them off',
  );
  t.equal(withProxy({}).services[0]!.sidecar!.deriveUpstreams, false, 'never without interception');
  const appUser = (v: unknown) => withProxy({ mode: 'transparent', config: { app_user: v } });
  t.equal(appUser('nobody').services[0]!.sidecar!.appUid, 65534, 'a user name, from /etc/passwd');
  t.equal(appUser(1001).services[0]!.sidecar!.appUid, 1001, 'a numeric uid');
  t.equal(withProxy({}).services[0]!.sidecar!.appUid, null, 'absent: every user');
  t.match(
    appUser('no-such-user-x').problems[0]?.message,
    /app_user names no user of this host .*give the numeric uid/,
  );
  t.match(
    appUser(-1).problems[0]?.message,
    /app_user must be a user name or a numeric uid, got number -1/,
  );
  const badDerive = withProxy({ mode: 'transparent', config: { derive_upstreams: 'no' } });
  t.match(badDerive.problems[0], {
    code: 'REMORA_E_AGENT_DEFINITION_INVALID',
    message: /proxy.config.derive_upstreams must be true or false, got string "no"/,
  });

  const noPort = withProxy({ upstreams: [{ destination_name: 'api' }] });
  t.match(
    noPort.problems[0]?.message,
    /local_bind_port is required/,
    'explicit mode still needs it',
  );

  const clash = withProxy({ mode: 'transparent' }, { transparent: false });
  t.match(
    clash.problems[0]?.message,
    /field service.transparent is false but .*mode is "transparent"/,
  );
  const bad = withProxy({}, { transparent: 'yes' });
  t.match(bad.problems[0]?.message, /field service.transparent must be true or false/);
  const badMode = withProxy({ mode: 'magic' });
  t.match(badMode.problems[0]?.message, /mode must be one of , direct, transparent/);
  const noSidecar = def({ name: 'web', port: 8080, transparent: true });
  t.match(noSidecar.problems[0]?.message, /service.transparent needs connect.sidecar_service/);
  t.equal(noSidecar.problems[0]?.code, 'REMORA_E_AGENT_DEFINITION_INVALID');

  const two = mergeDefinitions([
    withProxy({ mode: 'transparent', upstreams: [{ destination_name: 'api' }] }),
    decodeDefinitionFile(
      JSON.stringify({
        service: {
          name: 'rep',
          port: 8081,
          connect: {
            sidecar_service: {
              proxy: { mode: 'transparent', upstreams: [{ destination_name: 'api' }] },
            },
          },
        },
      }),
      'y.json',
    ),
  ]);
  t.equal(two.services.length, 2, 'allocated upstream ports never clash at definition time');
});

t.test('derived upstreams: what intentions may allow, from the catalog', async (t) => {
  const policy = (
    defaultPolicy: 'allow' | 'deny',
    intentions: IntentionsSnapshot['intentions'],
    auditMode = false,
  ): IntentionsSnapshot => ({ revision: 1, defaultPolicy, auditMode, intentions });
  const services = ['api', 'consul', 'db', 'api-sidecar-proxy', 'web', 'web-sidecar-proxy'];
  const derive = (p: IntentionsSnapshot, explicit: string[] = []) =>
    derivedDestinations({ source: 'web', explicit: new Set(explicit), services, policy: p });

  t.same(derive(policy('allow', [])), ['api', 'db'], 'default allow: every mesh service');
  t.same(derive(policy('allow', []), ['api']), ['db'], 'an explicit upstream keeps its own');
  t.same(derive(policy('deny', [])), [], 'default deny and no intention: nothing');
  t.same(
    derive(policy('deny', [{ source: 'web', destination: '*', action: 'allow' }])),
    ['api', 'db'],
    'a wildcard destination',
  );
  t.same(
    derive(
      policy('allow', [
        { source: '*', destination: 'db', action: 'deny' },
        { source: 'web', destination: 'api', action: 'deny' },
      ]),
    ),
    [],
    'denials, exact and wildcard',
  );
  t.same(
    derive(policy('deny', [{ source: 'web', destination: 'db', action: 'deny' }], true)),
    ['api', 'db'],
    'audit mode lets every call through, so every service is reachable',
  );
  t.same(asProtocol('grpc'), 'grpc');
  t.equal(asProtocol('udp'), null);
  t.equal(protocolFromEntries([]), null, 'no sidecar listed: not a mesh service (yet)');
});
