import t from 'tap';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../agent/files.ts';

t.test('writes to one path land in the order they were asked for', async (t) => {
  const path = join(t.testdir({}), 'cache', 'protocol-api');
  // started together: with unordered renames an earlier value could land last
  await Promise.all(Array.from({ length: 20 }, (_, i) => writeFileAtomic(path, `v${i}`)));
  t.equal(readFileSync(path, 'utf8'), 'v19', 'the last value wins');
  t.equal(statSync(path).mode & 0o777, 0o600, 'private by default');
});

t.test('a failed write does not block the next one', async (t) => {
  const dir = t.testdir({ file: 'x' });
  // a path under a regular file cannot be written
  await t.rejects(writeFileAtomic(join(dir, 'file', 'sub'), 'a'), {
    code: 'REMORA_E_AGENT_DATA_DIR',
  });
  await writeFileAtomic(join(dir, 'ok'), 'b');
  t.equal(readFileSync(join(dir, 'ok'), 'utf8'), 'b');
});
