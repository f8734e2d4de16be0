import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  ERRORS,
  RemoraError,
  hasCode,
  isErrorCode,
  toRemoraError,
} from '../../../lib/errors/index.ts';
import { renderErrorDoc } from '../../../lib/errors/doc.ts';

const root = new URL('../../../', import.meta.url).pathname;
const SOURCE_DIRS = ['lib', 'control', 'agent', 'proxy', 'cli', 'bench', 'examples'];

function sourceFiles(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  return entries.flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return /\.(ts|js)$/.test(name) ? [p] : [];
  });
}

t.test('docs/errors.md lists exactly the declared codes, in both directions', async (t) => {
  const doc = readFileSync(join(root, 'docs/errors.md'), 'utf8');
  const documented = new Set([...doc.matchAll(/^## (REMORA_E_[A-Z0-9_]+)$/gm)].map((m) => m[1]));
  const declared = new Set(Object.keys(ERRORS));
  t.same(
    [...declared].filter((c) => !documented.has(c)),
    [],
    'every declared code is documented',
  );
  t.same(
    [...documented].filter((c) => !declared.has(c!)),
    [],
    'every documented code is declared',
  );
  t.equal(doc, renderErrorDoc(), 'docs/errors.md is current (run `npm run docs`)');
});

t.test('every REMORA_E_ code used in the sources is declared', async (t) => {
  const used = new Map<string, string>();
  for (const dir of SOURCE_DIRS) {
    for (const file of sourceFiles(join(root, dir))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/REMORA_E_[A-Z0-9_]*[A-Z0-9]/g))
        used.set(m[0], file);
    }
  }
  const undeclared = [...used]
    .filter(([code]) => !isErrorCode(code))
    .map(([c, f]) => `${c} in ${f}`);
  t.same(undeclared, [], 'no undeclared codes');
});

t.test('every code has a meaning and a remedy that end in full stops', async (t) => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    t.match(code, /^REMORA_E_[A-Z0-9_]+$/, `${code} is well-formed`);
    t.ok(spec.meaning.length > 10 && spec.remedy.length > 10, `${code} explains itself`);
  }
});

t.test('a RemoraError carries its code, details and remedy', async (t) => {
  const err = new RemoraError('REMORA_E_USAGE', 'missing <service>', { arg: 'service' });
  t.ok(hasCode(err, 'REMORA_E_USAGE'));
  t.notOk(hasCode(err, 'REMORA_E_INTERNAL'));
  t.equal(err.remedy, ERRORS.REMORA_E_USAGE.remedy);
  t.same(JSON.parse(JSON.stringify(err)), {
    code: 'REMORA_E_USAGE',
    message: 'missing <service>',
    details: { arg: 'service' },
  });
});

t.test('anything thrown maps to a coded error with the original as cause', async (t) => {
  const plain = new Error('boom');
  const wrapped = toRemoraError(plain);
  t.equal(wrapped.code, 'REMORA_E_INTERNAL');
  t.equal(wrapped.cause, plain);
  t.equal(toRemoraError('text').message, 'text');
  const coded = { code: 'REMORA_E_USAGE', message: 'x', details: { a: 1 } };
  t.equal(toRemoraError(coded).code, 'REMORA_E_USAGE', 'a coded plain object keeps its code');
  t.notOk(hasCode(null));
  t.notOk(hasCode({ code: 'ENOENT' }));
});
