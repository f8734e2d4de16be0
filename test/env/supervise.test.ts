// compose/legacy/supervise.sh, the small supervisor of the legacy (VM-like) container, run for real
// with stand-ins for `consul` and `node` on PATH: it starts consul, the app and the agent in that
// order (the agent with its node token read from the token file), restarts a program that exits,
// forwards SIGHUP to the agent, and stops everything in reverse order on SIGTERM.
import t from 'tap';
import { spawn } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../../lib/util/index.ts';
import { repoRoot, toolMissing } from './tools.ts';

const standIn = (roleExpr: string) => `#!/usr/bin/env bash
${roleExpr}
echo "start $role $$ token=\${REMORA_AGENT_NODE_TOKEN:-none}" >> "$SUPERVISE_LOG"
trap 'echo "term $role" >> "$SUPERVISE_LOG"; exit 0' TERM
trap 'echo "hup $role" >> "$SUPERVISE_LOG"' HUP
while :; do sleep 0.1 & wait $!; done
`;

t.test(
  'the legacy supervisor starts, restarts, reloads and stops its programs in order',
  { skip: (await toolMissing('bash', 'bash')) ?? false },
  async (t) => {
    const dir = t.testdir({ bin: {}, token: 'node-token-for-legacy\n', 'log.txt': '' });
    const log = join(dir, 'log.txt');
    writeFileSync(join(dir, 'bin/consul'), standIn('role=consul'));
    writeFileSync(
      join(dir, 'bin/node'),
      standIn(
        'case "$*" in *demo-http.js*) role=app ;; *remora.js*) role=agent ;; *) role=other ;; esac',
      ),
    );
    chmodSync(join(dir, 'bin/consul'), 0o755);
    chmodSync(join(dir, 'bin/node'), 0o755);
    const sup = spawn('bash', [join(repoRoot, 'compose/legacy/supervise.sh')], {
      env: {
        PATH: `${join(dir, 'bin')}:${process.env.PATH ?? ''}`,
        SUPERVISE_LOG: log,
        REMORA_HOME: repoRoot,
        TOKEN_FILE: join(dir, 'token'),
        NODE_NAME: 'legacy-test',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    sup.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = () => {
      try {
        return readFileSync(log, 'utf8').split('\n').filter(Boolean);
      } catch {
        return []; // the test directory is already gone at teardown
      }
    };
    t.teardown(() => {
      if (sup.exitCode === null) sup.kill('SIGKILL');
      // stand-ins left behind by a failing supervisor: each logged its own PID
      for (const l of lines().filter((x) => x.startsWith('start '))) {
        try {
          process.kill(Number(l.split(' ')[2]), 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
    const starts = () => lines().filter((l) => l.startsWith('start '));

    await waitFor('three programs to start', () => starts().length >= 3, 15_000);
    await waitFor(
      'the supervisor to report three starts',
      () => (stderr.match(/started /g) ?? []).length >= 3,
      5000,
    );
    t.same(
      [...stderr.matchAll(/started (\w+)/g)].map((m) => m[1]),
      ['consul', 'app', 'agent'],
      'consul, then the app, then the agent',
    );
    const agentLine = starts().find((l) => l.startsWith('start agent'))!;
    t.match(
      agentLine,
      /token=node-token-for-legacy$/,
      'the agent gets its node token from the file',
    );

    const appPid = Number(
      starts()
        .find((l) => l.startsWith('start app'))!
        .split(' ')[2],
    );
    process.kill(appPid, 'SIGKILL');
    await waitFor(
      'the app to be restarted',
      () => starts().filter((l) => l.startsWith('start app')).length === 2,
      15_000,
    );
    t.pass('a program that dies is started again');

    sup.kill('SIGHUP');
    await waitFor('the agent to receive SIGHUP', () => lines().includes('hup agent'), 10_000);
    t.notOk(lines().includes('hup app'), 'only the agent is reloaded');

    const exited = new Promise<number | null>((resolve) =>
      sup.once('exit', (code) => resolve(code)),
    );
    sup.kill('SIGTERM');
    t.equal(await exited, 0, `the supervisor exits 0 (${stderr.trim().split('\n').at(-1)})`);
    t.same(
      lines().filter((l) => l.startsWith('term ')),
      ['term agent', 'term app', 'term consul'],
      'stopped in reverse order: the agent first, Consul last',
    );
  },
);
