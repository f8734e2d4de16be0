import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrateNote, startAdminServer } from '../../agent/admin.ts';
import type { AgentStatus } from '../../agent/index.ts';
import type { HandoverResult } from '../../agent/supervisor.ts';

async function start(t: { teardown(fn: () => unknown): void }, note: string | null = null) {
  const asked: (readonly string[])[] = [];
  const admin = await startAdminServer({
    port: 0,
    status: () => ({ node: 'n1' }) as unknown as AgentStatus,
    restartProxies: async (ids) => {
      asked.push(ids);
      return ids.map((instance): HandoverResult => ({ instance, ok: true, oldPid: 1, newPid: 2 }));
    },
    restartNote: () => note,
  });
  t.teardown(() => admin.close());
  const post = (body: string, type = 'application/json', method = 'POST') =>
    fetch(`http://127.0.0.1:${admin.port}/proxies/restart`, {
      method,
      headers: { 'content-type': type },
      ...(method === 'GET' ? {} : { body }),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));
  return { asked, post };
}

t.test('POST /proxies/restart restarts the instances named, or all with {}', async (t) => {
  const a = await start(t);
  t.same((await a.post('{"instances":["web-1","api-1"]}')).body, {
    results: [
      { instance: 'web-1', ok: true, oldPid: 1, newPid: 2 },
      { instance: 'api-1', ok: true, oldPid: 1, newPid: 2 },
    ],
  });
  t.same((await a.post('{}')).body, { results: [] });
  t.same(a.asked, [['web-1', 'api-1'], []], 'an empty list means every instance');
});

t.test('the host note comes with the results', async (t) => {
  const a = await start(t, 'set it to 1');
  t.same((await a.post('{}')).body, { results: [], note: 'set it to 1' });
});

t.test('anything but a JSON POST of instance IDs is refused and restarts nothing', async (t) => {
  const a = await start(t);
  const cases: [string, string, string, number, RegExp][] = [
    ['{}', 'text/plain', 'POST', 415, /content-type: application\/json/],
    ['', 'application/json', 'GET', 405, /use POST/],
    ['{"instances":"web-1"}', 'application/json', 'POST', 400, /must be a list of instance IDs/],
    ['[1]', 'application/json', 'POST', 400, /must be a JSON object/],
    ['{not json', 'application/json', 'POST', 400, /cannot read the request/],
    [`{"instances":["${'x'.repeat(70_000)}"]}`, 'application/json', 'POST', 400, /over 65536/],
  ];
  for (const [body, type, method, status, message] of cases) {
    const r = await a.post(body, type, method);
    t.equal(r.status, status, `${method} ${type} ${body.slice(0, 30)}`);
    t.match(r.body, { error: { code: 'REMORA_E_USAGE', message } });
  }
  t.same(a.asked, []);
});

t.test('migrateNote says so only where the kernel would reset queued connections', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'remora-admin-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'tcp_migrate_req');
  await writeFile(file, '0\n');
  t.match(migrateNote(file), /^net\.ipv4\.tcp_migrate_req is 0 on this host: .* set it to 1/);
  await writeFile(file, '1\n');
  t.equal(migrateNote(file), null);
  t.equal(migrateNote(join(dir, 'missing')), null, 'a kernel without the setting: nothing said');
});

t.test(
  'a restart that throws is answered 500 with its code; the endpoint keeps serving',
  async (t) => {
    const admin = await startAdminServer({
      port: 0,
      status: () => ({ node: 'n1' }) as unknown as AgentStatus,
      restartProxies: () => Promise.reject(new Error('boom')),
    });
    t.teardown(() => admin.close());
    const r = await fetch(`http://127.0.0.1:${admin.port}/proxies/restart`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    t.equal(r.status, 500);
    t.match(await r.json(), { error: { code: /^REMORA_E_/, message: /boom/ } });
    t.equal((await fetch(`http://127.0.0.1:${admin.port}/live`)).status, 200);
  },
);
