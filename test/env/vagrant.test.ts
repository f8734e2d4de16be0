// The Vagrant lab: `vagrant validate` accepts the Vagrantfile without a provider or a box (and
// refuses a misspelt setting, so the gate has teeth), the provisioning installs pinned versions
// from files that exist, and its install helper is idempotent.
import t from 'tap';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listFiles, repoRoot, runTool, toolMissing } from './tools.ts';

const vagrantDir = join(repoRoot, 'vagrant');
const reason = await toolMissing('vagrant', 'vagrant');
// Vagrant's machine-state folder goes to a temporary directory, not into the repository.
const dotfiles = mkdtempSync(join(tmpdir(), 'remora-vagrant-'));
t.teardown(() => rmSync(dotfiles, { recursive: true, force: true }));
const validate = (cwd: string) =>
  runTool('vagrant', ['validate', '-p'], {
    cwd,
    env: {
      VAGRANT_CHECKPOINT_DISABLE: '1',
      VAGRANT_VAGRANTFILE: 'Vagrantfile',
      VAGRANT_DOTFILE_PATH: dotfiles,
    },
    timeoutMs: 120_000,
  });

t.test('vagrant validate accepts the Vagrantfile', { skip: reason ?? false }, async (t) => {
  const r = await validate(vagrantDir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Vagrantfile validated successfully/);
});

t.test('vagrant validate refuses a misspelt setting', { skip: reason ?? false }, async (t) => {
  const dir = join(t.testdirName, 'vagrant');
  t.testdir({});
  cpSync(vagrantDir, dir, { recursive: true, filter: (p) => !p.includes('.vagrant') });
  const file = join(dir, 'Vagrantfile');
  writeFileSync(file, readFileSync(file, 'utf8').replace('node.vm.hostname', 'node.vm.hostnme'));
  const r = await validate(dir);
  t.not(r.code, 0);
  t.match(`${r.stdout}${r.stderr}`, /hostnme/);
});

const vagrantfile = readFileSync(join(vagrantDir, 'Vagrantfile'), 'utf8');
const provision = Object.fromEntries(
  listFiles('vagrant/provision', (p) => p.endsWith('.sh')).map((p) => [
    p,
    readFileSync(join(repoRoot, p), 'utf8'),
  ]),
);

t.test('one server VM and at least two app VMs on a private network', async (t) => {
  t.match(vagrantfile, /config\.vm\.define "server"/);
  const apps = [...vagrantfile.matchAll(/"(app-\d+)" => \{ ip: "(192\.168\.56\.\d+)"/g)];
  t.ok(apps.length >= 2, `app VMs: ${apps.map((m) => m[1]).join(', ')}`);
  t.match(vagrantfile, /private_network/);
  for (const m of apps)
    t.ok(
      listFiles(`vagrant/files/services/${m[1]}`, () => true).length > 0,
      `${m[1]} has service definitions`,
    );
});

t.test('provisioning pins every version it installs', async (t) => {
  const all = Object.values(provision).join('\n');
  for (const name of ['NODE', 'NPM', 'CONSUL', 'NATS', 'JAEGER'])
    t.match(
      all,
      new RegExp(`^${name}_VERSION=\\d+\\.\\d+\\.\\d+$`, 'm'),
      `${name} is pinned to an exact version`,
    );
  const nodeVersion = /^NODE_VERSION=(.+)$/m.exec(all)?.[1];
  const repoNode = JSON.parse(
    readFileSync(join(repoRoot, 'node_modules/node/package.json'), 'utf8'),
  ) as { version: string };
  t.equal(nodeVersion, repoNode.version, 'the VMs run the same Node as the repository toolchain');
  t.match(
    all,
    /^NODE_INTEGRITY="sha512-[A-Za-z0-9+/]+=*"$/m,
    'Node is checked against a pinned sha512',
  );
  t.match(
    all,
    /^NPM_INTEGRITY="sha512-[A-Za-z0-9+/]+=*"$/m,
    'npm is checked against a pinned sha512',
  );
  t.notMatch(all, /curl[^|\n]*\|\s*(ba)?sh/, 'nothing is piped from the network into a shell');
});

t.test('every file the provisioning installs exists in the repository', async (t) => {
  const all = Object.values(provision).join('\n');
  const refs = [...all.matchAll(/"\$(FILES|REMORA_HOME)\/([^"$]+)"/g)].map((m) =>
    m[1] === 'FILES' ? `vagrant/files/${m[2]}` : m[2]!,
  );
  t.ok(refs.length >= 8);
  for (const ref of refs) {
    if (ref.startsWith('node_modules/')) continue; // written by the provisioning itself
    t.ok(existsSync(join(repoRoot, ref)), `${ref} exists`);
  }
  const secrets = [...all.matchAll(/"\$SECRETS\/([^"]+)"/g)].map((m) => m[1]);
  const generator = readFileSync(join(repoRoot, 'compose/gen-secrets.js'), 'utf8');
  for (const s of secrets) {
    const base = s!.replace(/\.creds$/, '');
    t.ok(
      generator.includes(`'${s}'`) ||
        (generator.includes(`\`\${r}.creds\``) && ['control', 'agent', 'operator'].includes(base)),
      `${s} is written by the secrets generator`,
    );
  }
});

t.test(
  'install_file replaces a file only when its content changes',
  { skip: (await toolMissing('bash', 'bash')) ?? false },
  async (t) => {
    const dir = t.testdir({ 'src.txt': 'one\n' });
    const script = `
    set -euo pipefail
    source ${JSON.stringify(join(vagrantDir, 'provision/lib.sh'))}
    owner="$(id -un):$(id -gn)"
    install_file "$1/src.txt" "$1/out/dest.txt" 0640 "$owner" demo.service >/dev/null
    install_file "$1/src.txt" "$1/out/dest.txt" 0640 "$owner" demo.service >/dev/null
    echo "after two identical installs: \${#CHANGED_UNITS[@]}"
    echo two > "$1/src.txt"
    install_file "$1/src.txt" "$1/out/dest.txt" 0640 "$owner" demo.service >/dev/null
    echo "after a change: \${#CHANGED_UNITS[@]}"
    stat -c %a "$1/out/dest.txt"
    cat "$1/out/dest.txt"`;
    const r = await runTool('bash', ['-c', script, 'bash', dir]);
    t.equal(r.code, 0, r.stderr);
    t.same(r.stdout.trim().split('\n'), [
      'after two identical installs: 1',
      'after a change: 2',
      '640',
      'two',
    ]);
  },
);
