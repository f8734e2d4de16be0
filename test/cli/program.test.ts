import t from 'tap';
import { join } from 'node:path';
import { runRemora } from '../helpers/cli.ts';

const SUBCOMMANDS = [
  'dev',
  'devconsul',
  'control',
  'agent',
  'proxy',
  'intention',
  'token',
  'ca',
  'status',
  'explain',
  'traces',
];

t.test('remora --help lists every subcommand', async (t) => {
  const r = await runRemora(['--help']);
  t.equal(r.code, 0);
  for (const name of SUBCOMMANDS) t.match(r.stdout, new RegExp(`^  ${name}\\b`, 'm'), name);
});

t.test('each subcommand has its own --help', async (t) => {
  for (const name of ['control', 'intention', 'ca']) {
    const r = await runRemora([name, '--help']);
    t.equal(r.code, 0, `${name} --help exits 0`);
    t.match(r.stdout, `Usage: remora ${name}`);
  }
});

t.test('an unknown key in the control config stops it, naming the key', async (t) => {
  const dir = t.testdir({ 'bad.json': JSON.stringify({ datacenter: 'dc1', leafTTL: 4 }) });
  const r = await runRemora(['control', '--config', join(dir, 'bad.json')]);
  t.equal(r.code, 78, 'exits with EX_CONFIG');
  t.match(r.stderr, /REMORA_E_CONFIG_INVALID/);
  t.match(r.stderr, /leafTTL=4: unknown key/);
});

t.test('an unknown subcommand is a usage error', async (t) => {
  const r = await runRemora(['frobnicate']);
  t.equal(r.code, 2);
  t.match(r.stderr, /unknown command 'frobnicate'/);
});
