// Bad configuration stops each program at start with a coded error naming the key and value —
// and never echoes a secret given next to the bad value.
import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runRemora } from '../helpers/cli.ts';

const SECRET = 'op-secret-must-not-be-echoed-0123456789';
const dir = await mkdtemp(join(tmpdir(), 'remora-bad-config-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

const cases: [string, string[], Record<string, string>, RegExp][] = [
  [
    'control with an unknown default policy',
    ['control'],
    { REMORA_CONTROL_DEFAULT_POLICY: 'maybe', REMORA_CONTROL_OPERATOR_TOKEN: SECRET },
    /defaultPolicy|DEFAULT_POLICY/,
  ],
  [
    'control with a leaf TTL that is not a number',
    ['control'],
    { REMORA_CONTROL_LEAF_TTL_HOURS: 'soon', REMORA_CONTROL_OPERATOR_TOKEN: SECRET },
    /leafTtlHours|LEAF_TTL_HOURS/,
  ],
  [
    'an agent with an admin port out of range',
    ['agent'],
    { REMORA_AGENT_ADMIN_PORT: '99999', REMORA_AGENT_NODE_TOKEN: SECRET },
    /adminPort|ADMIN_PORT/,
  ],
  [
    'a proxy with a negative header timeout',
    ['proxy', '--instance', 'x'],
    { REMORA_PROXY_HTTP_HEADER_TIMEOUT_MS: '-5' },
    /headerTimeout|HEADER_TIMEOUT/i,
  ],
];

for (const [what, args, env, key] of cases)
  t.test(`${what} stops at start with a coded error naming the key`, async (t) => {
    const r = await runRemora(args, { env, timeoutMs: 30_000 });
    t.not(r.code, 0, 'exits non-zero');
    const out = r.stdout + r.stderr;
    t.match(out, /REMORA_E_CONFIG_/, 'with a config error code');
    t.match(out, key, 'naming the key');
    t.notOk(out.includes(SECRET), 'without echoing the secret set next to it');
  });

t.test('a config file with an unknown key or broken JSON is refused', async (t) => {
  await writeFile(
    join(dir, 'unknown.json'),
    JSON.stringify({ operatorToken: SECRET, colour: 'blue' }),
  );
  await writeFile(join(dir, 'broken.json'), `{"operatorToken": "${SECRET}", `);
  for (const file of ['unknown.json', 'broken.json']) {
    const r = await runRemora(['control', '--config', join(dir, file)], { timeoutMs: 30_000 });
    const out = r.stdout + r.stderr;
    t.not(r.code, 0, `${file}: exits non-zero`);
    t.match(out, /REMORA_E_CONFIG_/, `${file}: coded`);
    t.notOk(out.includes(SECRET), `${file}: the secret in the file is not echoed`);
  }
});
