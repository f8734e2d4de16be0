import t from 'tap';
import { runRemora } from '../../helpers/cli.ts';

t.test(
  'remora explain --code tells what a proxy error means and what to do, offline',
  async (t) => {
    const r = await runRemora(
      ['explain', 'web', 'api', '--code', 'REMORA_E_PROXY_INTENTION_DENIED'],
      { timeoutMs: 30_000 },
    );
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /REMORA_E_PROXY_INTENTION_DENIED \(HTTP 403\)/);
    t.match(r.stdout, /remora intention create/);
    const bad = await runRemora(['explain', 'web', 'api', '--code', 'NOPE'], { timeoutMs: 30_000 });
    t.equal(bad.code, 2);
    t.match(bad.stderr, /not a Remora error code/);
  },
);
