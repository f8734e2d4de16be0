// What the agent's spawner starts: node with the proxy's V8 options, then `remora proxy` with
// the instance's arguments, detached, output appended to a 0600 log file.
import t from 'tap';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createProcessSpawner, PROXY_NODE_OPTIONS } from '../../agent/spawn.ts';

t.test('a proxy process gets the V8 options and its instance arguments', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-spawn-'));
  const bin = join(dir, 'fake-remora.cjs');
  // stands in for bin/remora.js: reports how it was started
  writeFileSync(
    bin,
    `console.log(JSON.stringify({ execArgv: process.execArgv, argv: process.argv.slice(2) }));`,
  );
  const logFile = join(dir, 'proxy.log');
  const spawnProxy = createProcessSpawner({ remoraBin: bin, env: { PATH: process.env.PATH } });
  const p = spawnProxy({ instance: 'api-1', socketPath: '/run/x.sock', adminPort: 19001, logFile });
  // the spawner unrefs its children (they outlive the agent): keep this test's loop alive
  const keepAlive = setInterval(() => {}, 50);
  const code = await new Promise((resolve) => p.onExit((c) => resolve(c)));
  clearInterval(keepAlive);
  t.equal(code, 0);
  const seen = JSON.parse(readFileSync(logFile, 'utf8')) as { execArgv: string[]; argv: string[] };
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
