// Every shell script of the environments passes shellcheck (sourced helpers followed) with no
// finding at all, and the scripts a person runs are executable.
import t from 'tap';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ENV_DIRS, listFiles, repoRoot, runTool, toolMissing } from './tools.ts';

const isShell = (p: string): boolean =>
  p.endsWith('.sh') ||
  /^#!.*\b(ba)?sh\b/.test(readFileSync(join(repoRoot, p), 'utf8').split('\n')[0] ?? '');
const scripts = ENV_DIRS.flatMap((d) =>
  listFiles(d, (p) => !p.endsWith('.js') && !p.endsWith('.json') && isShell(p)),
);

t.test('the environments have shell scripts to check', async (t) => {
  for (const s of [
    'compose/setup.sh',
    'compose/legacy/supervise.sh',
    'vagrant/setup.sh',
    'vagrant/provision/common.sh',
  ])
    t.ok(scripts.includes(s), s);
});

t.test(
  'shellcheck finds nothing in any script',
  { skip: (await toolMissing('shellcheck', 'shellcheck')) ?? false },
  async (t) => {
    const r = await runTool('shellcheck', ['--external-sources', '--format=gcc', ...scripts]);
    t.equal(`${r.stdout}${r.stderr}`.trim(), '', `shellcheck output for ${scripts.length} scripts`);
    t.equal(r.code, 0);
  },
);

t.test('scripts are executable', async (t) => {
  for (const s of scripts) {
    if (s.endsWith('lib.sh')) continue; // sourced, not run
    t.ok(statSync(join(repoRoot, s)).mode & 0o111, `${s} is executable`);
  }
});
