// What the agent's spawner starts: node with the proxy's V8 options, then `remora proxy` with
// the instance's arguments, detached, output appended to a 0600 log file — and never with the
// agent's CAP_NET_ADMIN.
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  capabilityDropArgs,
  createProcessSpawner,
  parseCapabilities,
  type SpawnerOptions,
} from '../../agent/spawn.ts';
import { PROXY_NODE_OPTIONS } from '../../lib/proxy-api/index.ts';
import { findExecutable } from '../../lib/util/index.ts';

const SPAWN_MODULE = fileURLToPath(new URL('../../agent/spawn.ts', import.meta.url));
const NET_ADMIN = 1n << 12n;
const SETPCAP = 1n << 8n;

interface Seen {
  execArgv: string[];
  argv: string[];
  caps: { CapInh: string; CapPrm: string; CapEff: string; CapBnd: string; CapAmb: string };
}

/** A stand-in for bin/remora.js that reports how it was started, with its capability sets. */
function fakeRemora(dir: string): string {
  const bin = join(dir, 'fake-remora.cjs');
  writeFileSync(
    bin,
    `const s = require('fs').readFileSync('/proc/self/status', 'utf8');
const caps = Object.fromEntries(s.split('\\n').filter((l) => l.startsWith('Cap')).map((l) => l.split(/:\\s*/)));
console.log(JSON.stringify({ execArgv: process.execArgv, argv: process.argv.slice(2), caps }));`,
  );
  return bin;
}

async function runOnce(o: SpawnerOptions, logFile: string): Promise<Seen> {
  const spawnProxy = createProcessSpawner(o);
  const p = spawnProxy({ instance: 'api-1', socketPath: '/run/x.sock', adminPort: 19001, logFile });
  // the spawner unrefs its children (they outlive the agent): keep this test's loop alive
  const keepAlive = setInterval(() => {}, 50);
  const code = await new Promise((resolve) => p.onExit((c) => resolve(c)));
  clearInterval(keepAlive);
  if (code !== 0)
    throw new Error(`fake proxy exited ${String(code)}: ${readFileSync(logFile, 'utf8')}`);
  return JSON.parse(readFileSync(logFile, 'utf8')) as Seen;
}

const capBit = (hex: string, bit: bigint): boolean => ((BigInt(`0x${hex}`) >> bit) & 1n) === 1n;

t.test('a proxy process gets the V8 options and its instance arguments', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-spawn-'));
  const logFile = join(dir, 'proxy.log');
  const seen = await runOnce(
    { remoraBin: fakeRemora(dir), env: { PATH: process.env.PATH }, capabilities: null },
    logFile,
  );
  t.ok(PROXY_NODE_OPTIONS.length > 0);
  t.same(seen.execArgv, [...PROXY_NODE_OPTIONS]);
  t.same(seen.argv, [
    'proxy',
    '--instance',
    'api-1',
    '--agent-socket',
    '/run/x.sock',
    '--admin',
    '19001',
  ]);
  t.equal(statSync(logFile).mode & 0o777, 0o600, 'the log file is private');
});

t.test('which capabilities are dropped, from the agent’s own sets', async (t) => {
  const status =
    'Name:\tnode\nCapInh:\t0000000000001000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\nCapBnd:\t0000000000001000\nCapAmb:\t0000000000001000\n';
  const caps = parseCapabilities(status);
  t.same(caps, {
    inheritable: NET_ADMIN,
    effective: NET_ADMIN,
    bounding: NET_ADMIN,
    ambient: NET_ADMIN,
  });
  t.equal(parseCapabilities('Name:\tx\n'), null, 'no Cap lines: not Linux, nothing known');
  t.same(
    capabilityDropArgs(caps),
    ['--inh-caps=-all', '--ambient-caps=-all'],
    'systemd drop-in: ambient and inheritable cleared',
  );
  const none = { inheritable: 0n, effective: 0n, bounding: NET_ADMIN, ambient: 0n };
  t.same(
    capabilityDropArgs(none),
    [],
    'an agent without the capability starts proxies as they are',
  );
  const root = {
    inheritable: 0n,
    effective: (1n << 41n) - 1n,
    bounding: (1n << 41n) - 1n,
    ambient: 0n,
  };
  t.same(
    capabilityDropArgs(root),
    ['--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-net_admin'],
    'root: removed from the bounding set too',
  );
  t.same(capabilityDropArgs({ ...root, effective: root.effective & ~SETPCAP }), [
    '--inh-caps=-all',
    '--ambient-caps=-all',
  ]);
  t.same(capabilityDropArgs(null), []);
});

t.test(
  'without setpriv the agent says so, once, with a code, and still starts proxies',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'remora-spawn-'));
    const warnings: string[] = [];
    const seen = await runOnce(
      {
        remoraBin: fakeRemora(dir),
        env: { PATH: process.env.PATH },
        capabilities: {
          inheritable: 0n,
          effective: NET_ADMIN,
          bounding: NET_ADMIN,
          ambient: NET_ADMIN,
        },
        setpriv: null,
        onWarning: (m) => warnings.push(m),
      },
      join(dir, 'proxy.log'),
    );
    t.equal(warnings.length, 1);
    t.match(warnings[0], /setpriv.*util-linux/);
    t.equal(seen.argv[0], 'proxy');
  },
);

const setpriv = findExecutable('setpriv', process.env.PATH);
const asRoot = process.getuid?.() === 0;

t.test(
  'root agent: the proxy runs without CAP_NET_ADMIN',
  { skip: !asRoot || !setpriv ? 'needs root and setpriv' : false },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'remora-spawn-'));
    const own = parseCapabilities(readFileSync('/proc/self/status', 'utf8'))!;
    t.ok(own.effective & NET_ADMIN, 'this test process holds CAP_NET_ADMIN');
    const seen = await runOnce(
      { remoraBin: fakeRemora(dir), env: { PATH: process.env.PATH } },
      join(dir, 'proxy.log'),
    );
    t.notOk(capBit(seen.caps.CapEff, 12n), 'not effective');
    t.notOk(capBit(seen.caps.CapBnd, 12n), 'not in the bounding set: it cannot come back');
    t.ok(
      capBit(seen.caps.CapEff, 10n),
      'other root capabilities are left alone (CAP_NET_BIND_SERVICE)',
    );
    t.same(seen.execArgv, [...PROXY_NODE_OPTIONS], 'setpriv executed node itself');
  },
);

t.test(
  'unprivileged agent with the ambient CAP_NET_ADMIN of the systemd drop-in: the proxy has none',
  {
    skip:
      !asRoot || !setpriv
        ? 'needs root (to become nobody with an ambient capability) and setpriv'
        : false,
  },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'remora-spawn-'));
    chmodSync(dir, 0o777);
    const bin = fakeRemora(dir);
    const logFile = join(dir, 'proxy.log');
    const agentLike = join(dir, 'agent-like.mts');
    writeFileSync(
      agentLike,
      `import { readFileSync } from 'node:fs';
import { createProcessSpawner } from ${JSON.stringify(SPAWN_MODULE)};
const own = readFileSync('/proc/self/status', 'utf8').split('\\n').filter((l) => l.startsWith('CapAmb'))[0];
const p = createProcessSpawner({ remoraBin: ${JSON.stringify(bin)}, env: { PATH: process.env.PATH } })({ instance: 'api-1', socketPath: '/run/x.sock', adminPort: 19001, logFile: ${JSON.stringify(logFile)} });
const keep = setInterval(() => {}, 50);
p.onExit((code) => { clearInterval(keep); console.log(JSON.stringify({ own, code })); });`,
    );
    // the agent as systemd runs it with the drop-in: a plain user holding only CAP_NET_ADMIN,
    // ambient. `env -i` keeps the test runner's child-process hooks (NODE_OPTIONS) out of it.
    const child = spawn(
      '/usr/bin/env',
      [
        '-i',
        `PATH=${process.env.PATH ?? ''}`,
        setpriv!,
        '--reuid=nobody',
        '--regid=nogroup',
        '--clear-groups',
        '--inh-caps=+net_admin',
        '--ambient-caps=+net_admin',
        '--',
        process.execPath,
        agentLike,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise((r) => child.once('exit', r));
    t.equal(code, 0, err);
    const agent = JSON.parse(out) as { own: string; code: number };
    t.ok(
      capBit(agent.own.split(/:\s*/)[1]!, 12n),
      'the agent-like process holds ambient CAP_NET_ADMIN',
    );
    t.equal(agent.code, 0);
    const seen = JSON.parse(readFileSync(logFile, 'utf8')) as Seen;
    t.notOk(capBit(seen.caps.CapEff, 12n), 'the proxy has no effective CAP_NET_ADMIN');
    t.notOk(capBit(seen.caps.CapAmb, 12n), 'nor an ambient one to hand down');
    t.notOk(capBit(seen.caps.CapInh, 12n));
    t.same(seen.argv.slice(0, 3), ['proxy', '--instance', 'api-1']);
  },
);
