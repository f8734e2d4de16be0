// Regenerates docs/config.md and docs/errors.md from the code. Run with `npm run docs`.
import { writeFileSync } from 'node:fs';
import { ALL_SCHEMAS, renderConfigDoc } from '../lib/config/index.ts';
import { renderErrorDoc } from '../lib/errors/doc.ts';

const root = new URL('../', import.meta.url);
writeFileSync(new URL('docs/config.md', root), renderConfigDoc(ALL_SCHEMAS));
writeFileSync(new URL('docs/errors.md', root), renderErrorDoc());
console.log('wrote docs/config.md and docs/errors.md');
