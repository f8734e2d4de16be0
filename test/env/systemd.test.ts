// The systemd units pass `systemd-analyze verify` with no output at all (it only warns, with exit
// status 0, about unknown keys and bad values, so any output is a failure), and carry the
// restart, ordering and hardening policy that docs/environments.md promises.
//
// How the units are verified on a machine that is not the target host: verify insists that every
// Exec*= executable exists. The units name the paths of an installed host (/usr/local/bin/node,
// /usr/local/bin/consul, ...), so each unit folder is copied into a temporary directory (drop-in
// folders included, so drop-ins are verified with their unit) and, in the copy only, each Exec*=
// executable that does not exist here is replaced: the Node path by the Node running these tests
// and any other by an executable stub at a temporary absolute path. Everything else is verified
// as written; the substitutions are listed in the test output.
import t from 'tap';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import {
  listFiles,
  parseUnit,
  repoRoot,
  runTool,
  toolMissing,
  unitList,
  unitValue,
} from './tools.ts';

const UNIT_RE = /\.(service|socket|timer|target|path|mount)$/;
const unitFiles = [
  ...listFiles('systemd', (p) => UNIT_RE.test(p)),
  ...listFiles('vagrant', (p) => UNIT_RE.test(p)),
];
const unitDirs = [...new Set(unitFiles.map((f) => dirname(f)))];

/** Copies a folder of units and rewrites missing Exec*= executables; returns the substitutions. */
function stage(srcDir: string, dest: string): string[] {
  cpSync(join(repoRoot, srcDir), dest, { recursive: true });
  const stubs = join(dest, '.stubs');
  mkdirSync(stubs, { recursive: true });
  const notes: string[] = [];
  const rewrite = (file: string): void => {
    const text = readFileSync(file, 'utf8');
    const out = text.replace(
      /^(Exec\w+=)([-@:+!]*)(\/\S+)/gm,
      (line, key: string, prefix: string, exe: string) => {
        if (existsSync(exe)) return line;
        let replacement: string;
        if (basename(exe) === 'node') {
          replacement = process.execPath;
        } else {
          replacement = join(stubs, exe.replaceAll('/', '_'));
          writeFileSync(replacement, '#!/bin/sh\nexit 0\n');
          chmodSync(replacement, 0o755);
        }
        notes.push(`${basename(file)}: ${exe} -> ${replacement}`);
        return `${key}${prefix}${replacement}`;
      },
    );
    writeFileSync(file, out);
  };
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, name.name);
      if (name.isDirectory() && name.name.endsWith('.d')) walk(p);
      else if (name.isFile() && (UNIT_RE.test(name.name) || name.name.endsWith('.conf')))
        rewrite(p);
    }
  };
  walk(dest);
  return notes;
}

const reason = await toolMissing('systemd-analyze', 'systemd');

t.test('the unit folders hold the agent and control units', async (t) => {
  t.ok(unitFiles.includes('systemd/remora-agent.service'));
  t.ok(unitFiles.includes('systemd/remora-control.service'));
  t.ok(existsSync(join(repoRoot, 'systemd/remora-agent.service.d/transparent.conf')));
});

t.test(
  'every unit passes systemd-analyze verify with no output at all',
  { skip: reason ?? false },
  async (t) => {
    for (const dir of unitDirs) {
      const staged = join(t.testdirName, dir.replaceAll('/', '_'));
      mkdirSync(dirname(staged), { recursive: true });
      const notes = stage(dir, staged);
      for (const n of notes) t.comment(`substituted for verify: ${n}`);
      const units = unitFiles
        .filter((f) => dirname(f) === dir)
        .map((f) => join(staged, basename(f)));
      const r = await runTool('systemd-analyze', ['verify', ...units], {
        cwd: staged,
        env: { SYSTEMD_LOG_COLOR: '0', SYSTEMD_LOG_TARGET: 'console' },
      });
      t.equal(r.code, 0, `systemd-analyze verify exits 0 for ${dir}`);
      t.equal(
        `${r.stdout}${r.stderr}`.trim(),
        '',
        `systemd-analyze verify prints nothing for ${dir}`,
      );
    }
  },
);

t.test(
  'the verify gate catches what systemd only warns about',
  { skip: reason ?? false },
  async (t) => {
    const dir = t.testdir({});
    stage('systemd', join(dir, 'u'));
    const unit = join(dir, 'u', 'remora-control.service');
    writeFileSync(
      unit,
      readFileSync(unit, 'utf8').replace('Restart=on-failure', 'Restart=sometimes\nRestartSecs=2'),
    );
    const r = await runTool('systemd-analyze', ['verify', unit], {
      env: { SYSTEMD_LOG_COLOR: '0', SYSTEMD_LOG_TARGET: 'console' },
    });
    t.equal(r.code, 0, 'systemd-analyze itself still exits 0');
    t.match(
      r.stderr,
      /RestartSecs/,
      'but names the unknown key, which the gate treats as a failure',
    );
    t.match(r.stderr, /sometimes/, 'and the bad value');
  },
);

const readUnit = (p: string) => parseUnit(readFileSync(join(repoRoot, p), 'utf8'));

for (const name of ['remora-agent', 'remora-control']) {
  t.test(
    `${name}.service restarts on failure, stops restarting on a config error, and reloads with SIGHUP`,
    async (t) => {
      const u = readUnit(`systemd/${name}.service`);
      t.equal(unitValue(u, 'Service', 'Restart'), 'on-failure');
      t.equal(
        unitValue(u, 'Service', 'RestartPreventExitStatus'),
        '78',
        'exit 78 (config error) is final',
      );
      t.equal(unitValue(u, 'Service', 'ExecReload'), '/bin/kill -HUP $MAINPID');
      t.match(
        unitValue(u, 'Service', 'ExecStart') ?? '',
        /^\/\S+\/node \/opt\/remora\/bin\/remora\.js (agent|control) --config \/etc\/remora\/(agent|control)\.json$/,
      );
      t.ok(unitList(u, 'Unit', 'After').includes('network-online.target'));
      t.ok(unitList(u, 'Unit', 'Wants').includes('network-online.target'));
      t.ok(
        unitList(u, 'Unit', 'After').includes('consul.service'),
        'starts after the local Consul agent',
      );
      t.ok(unitList(u, 'Unit', 'Wants').includes('consul.service'));
    },
  );

  t.test(
    `${name}.service runs as a dedicated unprivileged user in a read-only system`,
    async (t) => {
      const u = readUnit(`systemd/${name}.service`);
      t.equal(unitValue(u, 'Service', 'User'), 'remora');
      t.equal(unitValue(u, 'Service', 'NoNewPrivileges'), 'yes');
      t.equal(unitValue(u, 'Service', 'ProtectSystem'), 'strict');
      t.ok(unitList(u, 'Service', 'ReadWritePaths').length > 0, 'names the paths it may write');
      t.same(unitList(u, 'Service', 'CapabilityBoundingSet'), [], 'no capability at all');
      t.same(unitList(u, 'Service', 'AmbientCapabilities'), []);
      t.equal(
        unitValue(u, 'Service', 'MemoryDenyWriteExecute'),
        undefined,
        "V8's JIT needs W+X pages",
      );
    },
  );
}

t.test('CAP_NET_ADMIN is granted only by the transparent-mode drop-in', async (t) => {
  const dropIn = parseUnit(
    readFileSync(join(repoRoot, 'systemd/remora-agent.service.d/transparent.conf'), 'utf8'),
  );
  t.same(unitList(dropIn, 'Service', 'CapabilityBoundingSet'), ['CAP_NET_ADMIN']);
  t.same(unitList(dropIn, 'Service', 'AmbientCapabilities'), ['CAP_NET_ADMIN']);
  const granting = unitFiles
    .concat(listFiles('systemd', (p) => p.endsWith('.conf')))
    .filter((f) =>
      /CAP_[A-Z_]+/.test(readFileSync(join(repoRoot, f), 'utf8').replace(/^#.*$/gm, '')),
    );
  t.same(granting, ['systemd/remora-agent.service.d/transparent.conf']);
});

t.test('systemd rates both units as well confined', { skip: reason ?? false }, async (t) => {
  const dir = t.testdir({});
  stage('systemd', join(dir, 'u'));
  for (const [unit, threshold] of [
    ['remora-control.service', 20],
    ['remora-agent.service', 25], // with the transparent drop-in staged next to it
  ] as const) {
    const r = await runTool(
      'systemd-analyze',
      ['security', '--offline=yes', `--threshold=${threshold}`, '--no-pager', join(dir, 'u', unit)],
      { env: { SYSTEMD_LOG_COLOR: '0', SYSTEMD_COLORS: '0' } },
    );
    const level = /Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout)?.[1];
    t.equal(
      r.code,
      0,
      `${unit} exposure ${level} is at most ${threshold / 10} on systemd's 0-10 scale`,
    );
  }
});
