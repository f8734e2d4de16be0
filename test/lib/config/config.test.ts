import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ALL_SCHEMAS,
  controlSchema,
  defineSchema,
  listLeaves,
  loadConfig,
  redactConfig,
  renderConfigDoc,
  type ProgramSchema,
} from '../../../lib/config/index.ts';
import { hasCode } from '../../../lib/errors/index.ts';

const root = new URL('../../../', import.meta.url).pathname;

const schema = defineSchema('demo', 'a demo program', {
  port: { doc: 'a port', format: 'port', default: 8080 },
  mode: { doc: 'a mode', format: ['a', 'b'], default: 'a' },
  secret: { doc: 'a secret', format: String, default: '', sensitive: true },
  nested: { depthMs: { doc: 'a nested number', format: 'nat', default: 5 } },
});

function problemsOf(fn: () => unknown): Array<{ key: string; value: unknown; reason: string }> {
  try {
    fn();
  } catch (err) {
    if (hasCode(err, 'REMORA_E_CONFIG_INVALID')) return err.details.problems as never;
    throw err;
  }
  throw new Error('expected REMORA_E_CONFIG_INVALID');
}

t.test('defaults apply when nothing is given', async (t) => {
  t.same(loadConfig(schema), { port: 8080, mode: 'a', secret: '', nested: { depthMs: 5 } });
});

t.test('env names follow REMORA_<PROGRAM>_<KEY>', async (t) => {
  const envs = listLeaves(schema.tree).map(([, l]) => l.env);
  t.same(envs, [
    'REMORA_DEMO_PORT',
    'REMORA_DEMO_MODE',
    'REMORA_DEMO_SECRET',
    'REMORA_DEMO_NESTED_DEPTH_MS',
  ]);
});

t.test('file < env < flags', async (t) => {
  const dir = t.testdir({
    'c.json': JSON.stringify({ port: 1000, mode: 'b', nested: { depthMs: 7 } }),
  });
  const file = join(dir, 'c.json');
  const c = loadConfig(schema, {
    file,
    env: {
      REMORA_DEMO_PORT: '2000',
      REMORA_DEMO_NESTED_DEPTH_MS: '9',
      PATH: '/bin',
      REMORA_OTHER_X: '1',
    },
    overrides: { port: 3000 },
  });
  t.equal(c.port, 3000, 'flag wins');
  t.equal(c.nested.depthMs, 9, 'env beats file');
  t.equal(c.mode, 'b', 'file beats default');
});

t.test('an unknown key in the file stops loading, naming the key and value', async (t) => {
  const dir = t.testdir({ 'c.json': JSON.stringify({ prot: 1, nested: { depth: 2 } }) });
  const problems = problemsOf(() => loadConfig(schema, { file: join(dir, 'c.json') }));
  t.same(
    problems.map((p) => [p.key, p.value]),
    [
      ['prot', 1],
      ['nested.depth', 2],
    ],
  );
  t.match(problems[0]!.reason, /unknown key/);
});

t.test('a bad value names the key, the value and the reason', async (t) => {
  const problems = problemsOf(() => loadConfig(schema, { overrides: { port: 70000, mode: 'c' } }));
  t.same(
    problems.map((p) => [p.key, p.value]),
    [
      ['port', 70000],
      ['mode', 'c'],
    ],
  );
  t.match(problems[0]!.reason, /ports must be within range/);
  t.match(problems[1]!.reason, /one of the possible values/);
});

t.test('a bad environment value names the variable it came from', async (t) => {
  const problems = problemsOf(() =>
    loadConfig(schema, { env: { REMORA_DEMO_NESTED_DEPTH_MS: 'soon' } }),
  );
  t.equal(problems[0]!.key, 'nested.depthMs');
  t.equal(problems[0]!.value, 'soon');
  t.match(problems[0]!.reason, /REMORA_DEMO_NESTED_DEPTH_MS/);
});

t.test('an unknown REMORA_<PROGRAM>_ variable is refused', async (t) => {
  const problems = problemsOf(() => loadConfig(schema, { env: { REMORA_DEMO_PROT: '1' } }));
  t.equal(problems[0]!.key, 'REMORA_DEMO_PROT');
});

t.test('secrets are redacted in errors and in redactConfig', async (t) => {
  let message = '';
  try {
    loadConfig(schema, { overrides: { secret: 42 as unknown as string, port: -1 } });
  } catch (err) {
    message = (err as Error).message;
  }
  t.match(message, /port=-1/);
  const c = loadConfig(schema, { overrides: { secret: 'hunter2' } });
  t.equal(c.secret, 'hunter2');
  t.notMatch(JSON.stringify(redactConfig(schema, c)), /hunter2/);
});

t.test('an unreadable or non-JSON file is its own coded error', async (t) => {
  const dir = t.testdir({ 'bad.json': '{ nope', 'arr.json': '[1]' });
  for (const f of ['missing.json', 'bad.json', 'arr.json']) {
    t.throws(
      () => loadConfig(schema, { file: join(dir, f) }),
      { code: 'REMORA_E_CONFIG_FILE_UNREADABLE' },
      f,
    );
  }
});

t.test('every key of every program has a doc, a format and a default', async (t) => {
  for (const s of ALL_SCHEMAS) {
    for (const [key, leaf] of listLeaves(s.tree)) {
      t.ok(
        leaf.doc.length > 5 && leaf.format !== undefined && Object.hasOwn(leaf, 'default'),
        `${s.program}.${key}`,
      );
      t.match(leaf.env, new RegExp(`^REMORA_${s.program.toUpperCase()}_[A-Z0-9_]+$`));
    }
    t.doesNotThrow(() => loadConfig(s as ProgramSchema), `${s.program} defaults are valid`);
  }
  t.equal(controlSchema.program, 'control');
});

t.test('control refuses a leaf lifetime too short to renew before it expires', async (t) => {
  const load = (v: string) => () =>
    loadConfig(controlSchema, { env: { REMORA_CONTROL_LEAF_TTL_SECONDS: v } });
  t.same(problemsOf(load('30')), [
    {
      key: 'leafTtlSeconds',
      value: 30,
      reason: 'must be 0 (use leafTtlHours) or a whole number of seconds ≥ 60',
    },
  ]);
  t.equal(load('60')().leafTtlSeconds, 60);
  t.equal(load('0')().leafTtlSeconds, 0);
});

t.test('docs/config.md is generated from the schemas and current', async (t) => {
  const onDisk = readFileSync(join(root, 'docs/config.md'), 'utf8');
  const fresh = renderConfigDoc(ALL_SCHEMAS);
  if (onDisk !== fresh && process.env.REMORA_UPDATE_DOCS)
    writeFileSync(join(root, 'docs/config.md'), fresh);
  t.equal(onDisk, fresh, 'docs/config.md is stale: run `npm run docs`');
});

t.test('consul.dnsDomains: comma-separated in the environment, each a DNS domain', async (t) => {
  const env = (v: string) => ({
    REMORA_CONTROL_CONSUL_DNS_DOMAINS: v,
    REMORA_CONTROL_OPERATOR_TOKEN: 'x'.repeat(32),
  });
  const domains = (v: string) => loadConfig(controlSchema, { env: env(v) }).consul.dnsDomains;
  t.same(domains('consul, example.org'), ['consul', 'example.org']);
  t.same(domains('consul.'), ['consul.'], 'a trailing dot is a domain too');
  t.match(
    problemsOf(() => loadConfig(controlSchema, { env: env('bad domain') })),
    [{ key: 'consul.dnsDomains', reason: /"bad domain" is not a DNS domain/ }],
  );
  t.match(
    problemsOf(() => loadConfig(controlSchema, { env: env('consul,,x') })),
    [{ key: 'consul.dnsDomains', reason: /"" is not a DNS domain/ }],
  );
});
