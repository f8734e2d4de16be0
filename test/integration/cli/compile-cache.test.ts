// Proxies are TypeScript run by Node's type stripping. Compiled code is kept in Node's on-disk
// compile cache; a proxy that finds its code there never loads the stripper (about 20 MB each).
// After an upgrade the cache is cold: the agent fills it when it starts, before any proxy.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMeshCerts, makeSnapshot } from '../../helpers/mesh-certs.ts';
import { reapOnExit } from '../../helpers/reaper.ts';
import { PROXY_NODE_OPTIONS } from '../../../lib/proxy-api/index.ts';

const BIN = fileURLToPath(new URL('../../../bin/remora.js', import.meta.url));

/** Runs `remora proxy` with a static snapshot until it is listening; returns the modules it loaded. */
async function proxyModules(dir: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  return (await startProxy(dir, env)).stop();
}

/** Starts `remora proxy`; resolves once it is listening, with a stop() that reports its modules. */
async function startProxy(
  dir: string,
  env: NodeJS.ProcessEnv,
): Promise<{ stop: () => Promise<string[]> }> {
  const mesh = createMeshCerts();
  const snap = join(dir, 'snapshot.json');
  writeFileSync(snap, JSON.stringify(makeSnapshot(mesh, mesh.cachedLeaf('api'), {})), {
    mode: 0o600,
  });
  const report = join(dir, 'modules.json');
  const hook = join(dir, 'report.mjs');
  // records every built-in module the process loaded, at exit
  writeFileSync(
    hook,
    `import { writeFileSync } from 'node:fs';
process.on('exit', () => writeFileSync(${JSON.stringify(report)}, JSON.stringify(process.moduleLoadList)));`,
  );
  // started as the agent starts proxies, with their V8 flags
  const child = spawn(
    process.execPath,
    [
      ...PROXY_NODE_OPTIONS,
      BIN,
      'proxy',
      '--static-config',
      snap,
      '--admin',
      '0',
      '--log-level',
      'info',
    ],
    { env: { ...env, NODE_OPTIONS: `--import=${hook}` }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  reapOnExit(child); // killed even if this test is
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL'); // never leave it running
      reject(new Error(`proxy did not start: ${out}`));
    }, 30_000);
    const onOutput = (c: Buffer): void => {
      out += c.toString();
      if (out.includes('admin listening')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput); // logs go to stderr
  });
  return {
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      return JSON.parse(readFileSync(report, 'utf8')) as string[];
    },
  };
}

const stripper = (mods: string[]) => mods.some((m) => m.includes('amaro'));

t.test('after the agent has started, a proxy runs without the TypeScript stripper', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-ccache-'));
  const cache = join(dir, 'cache');
  const env = { PATH: process.env.PATH, NODE_COMPILE_CACHE: cache };

  t.ok(
    stripper(await proxyModules(mkdtempSync(join(dir, 'p')), env)),
    'with a cold cache, a proxy loads the stripper',
  );

  const cache2 = join(dir, 'cache2');
  const env2 = { PATH: process.env.PATH, NODE_COMPILE_CACHE: cache2 };
  // an agent whose configuration is missing stops at once (exit 78), after filling the cache
  const agent = spawnSync(process.execPath, [BIN, 'agent', '--config', join(dir, 'missing.json')], {
    env: env2,
    encoding: 'utf8',
  });
  t.equal(agent.status, 78, agent.stderr);
  t.ok(readdirSync(cache2).length > 0, 'the agent wrote the compile cache');
  t.notOk(
    stripper(await proxyModules(mkdtempSync(join(dir, 'p')), env2)),
    'the proxy found its code compiled',
  );
});

t.test('a proxy fills the cache once it is listening, for the proxies after it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-ccache-'));
  const env = { PATH: process.env.PATH, NODE_COMPILE_CACHE: join(dir, 'cache') };
  const first = await startProxy(mkdtempSync(join(dir, 'p')), env);
  // the first one still runs (Node would otherwise write its cache only at exit)
  t.notOk(
    stripper(await proxyModules(mkdtempSync(join(dir, 'p')), env)),
    'the second proxy found its code compiled',
  );
  t.ok(stripper(await first.stop()), 'the first one, with a cold cache, compiled it');
});
