#!/usr/bin/env node
// Entry point of the `remora` command. Remora's sources are TypeScript that Node runs directly
// (type stripping, on by default from Node 22.18 and in Node 24). On an older Node 22 the flag
// is added by re-executing once.
import module from 'node:module';

if (process.features.typescript) {
  // cache compiled code on disk (per user, in the OS temp dir): faster starts, less memory
  module.enableCompileCache?.();
  await import('../cli/main.ts');
} else {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(
    process.execPath,
    ['--experimental-strip-types', '--no-warnings=ExperimentalWarning', ...process.argv.slice(1)],
    { stdio: 'inherit' },
  );
  process.exitCode = r.status ?? 1;
}
