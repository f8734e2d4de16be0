// Every Remora config file and every service definition in compose/, vagrant/ and systemd/ loads
// through Remora's own schemas and the agent's decoder, and no JSON file there escapes both.
import t from 'tap';
import { basename, join } from 'node:path';
import { loadConfig } from '../../lib/config/index.ts';
import { ENV_DIRS, decodeServiceFile, listFiles, repoRoot, schemaFor } from './tools.ts';

const PROGRAM_FILE = /^(control|agent|proxy|dev|devconsul|cli)\.json$/;
const jsonFiles = ENV_DIRS.flatMap((d) => listFiles(d, (p) => p.endsWith('.json')));
const configFiles = jsonFiles.filter((f) => PROGRAM_FILE.test(basename(f)));
const definitionFiles = jsonFiles.filter((f) => f.includes('/services/'));

t.test('every JSON file is either a program config or a service definition', async (t) => {
  t.same(
    jsonFiles.filter((f) => !configFiles.includes(f) && !definitionFiles.includes(f)),
    [],
    'unclassified JSON files would escape validation',
  );
  t.ok(configFiles.length >= 6, `${configFiles.length} config files`);
  t.ok(definitionFiles.length >= 7, `${definitionFiles.length} service definition files`);
});

t.test('every program config loads through its schema', async (t) => {
  for (const file of configFiles) {
    const program = basename(file, '.json');
    const schema = schemaFor(program);
    t.ok(schema, `${file}: a schema for ${program}`);
    t.doesNotThrow(() => loadConfig(schema!, { file: join(repoRoot, file) }), `${file} loads`);
  }
});

t.test('a config file with a misspelt key is refused (the check has teeth)', async (t) => {
  const dir = t.testdir({ 'agent.json': JSON.stringify({ nodeTokn: 'x' }) });
  t.throws(() => loadConfig(schemaFor('agent')!, { file: join(dir, 'agent.json') }), {
    code: 'REMORA_E_CONFIG_INVALID',
  });
});

t.test('every service definition decodes without a problem', async (t) => {
  const ids = new Map<string, string[]>();
  for (const file of definitionFiles) {
    const r = await decodeServiceFile(join(repoRoot, file));
    t.same(r.problems, [], `${file} decodes cleanly`);
    t.ok(r.services.length > 0, `${file} defines a service`);
    const scope = file.split('/services/')[0]!;
    ids.set(scope, [...(ids.get(scope) ?? []), ...r.services.map((s) => s.id)]);
  }
  for (const [scope, list] of ids)
    t.equal(new Set(list).size, list.length, `service IDs are unique within ${scope}`);
});
