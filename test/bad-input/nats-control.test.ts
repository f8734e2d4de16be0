// Malformed, hostile and oversized NATS messages to a real `remora control` process: every
// request gets a coded error reply (never silence, never a crash), and control keeps serving.
import t from 'tap';
import fc from 'fast-check';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectNats, subjects, type NatsConnection } from '../../lib/nats/index.ts';
import { waitFor } from '../../lib/util/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { startNatsServer } from '../helpers/nats.ts';
import { startDevConsulProcess } from '../helpers/devconsul.ts';
import { REMORA_BIN, startProc } from '../integration/agent/harness.ts';

t.setTimeout(180_000);

const OPERATOR_TOKEN = 'bad-input-operator-token-0123456789';
const dir = await mkdtemp(join(tmpdir(), 'remora-bad-nats-'));
// a server that lets 4 MiB through, so control itself must refuse bodies over its 1 MiB bound
await writeFile(join(dir, 'nats.conf'), 'max_payload: 4194304\n');
const nats = await startNatsServer(['-c', join(dir, 'nats.conf')]);
const consul = await startDevConsulProcess();
const control = startProc([REMORA_BIN, 'control', '--log-level', 'warn'], {
  REMORA_CONTROL_NATS_SERVERS: nats.url,
  REMORA_CONTROL_CONSUL_ADDRESS: consul.url,
  REMORA_CONTROL_OPERATOR_TOKEN: OPERATOR_TOKEN,
  REMORA_CONTROL_TRACING_ENDPOINT: '',
});
const nc: NatsConnection = await connectNats({
  servers: nats.url,
  name: 'bad-input-test',
  logger: createSilentLogger(),
});
t.teardown(async () => {
  await nc.close();
  await control.stop('SIGTERM', 5000);
  await consul.stop();
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});
const S = subjects('dc1');

interface Reply {
  v?: unknown;
  error?: { code?: unknown; message?: unknown };
  [k: string]: unknown;
}

async function ask(subject: string, body: string | Uint8Array): Promise<Reply> {
  const data = typeof body === 'string' ? new TextEncoder().encode(body) : body;
  const m = await nc.request(subject, data, { timeout: 10_000 });
  return JSON.parse(new TextDecoder().decode(m.data)) as Reply;
}

const codeOf = (r: Reply): string | null =>
  typeof r.error?.code === 'string' ? r.error.code : null;

await waitFor(
  'control to serve ca.roots',
  async () => (await ask(S.caRoots, '{"v":1}').catch(() => null))?.roots ?? null,
  90_000,
  250,
);

const writeSubjects = [
  S.caSign,
  S.caRotate,
  S.intentionsUpsert,
  S.intentionsDelete,
  S.intentionsPolicy,
  S.tokensCreate,
];
const allSubjects = [S.caRoots, S.intentionsGet, ...writeSubjects];

const hostile: [string, string | Uint8Array][] = [
  ['an empty body', ''],
  ['JSON null', 'null'],
  ['a JSON array', '[1,2,3]'],
  ['a JSON number', '42'],
  ['truncated JSON', '{"v":1,'],
  ['invalid UTF-8', new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
  ['a future version', '{"v":2}'],
  ['a string version', '{"v":"1"}'],
  ['a __proto__ key', '{"v":1,"__proto__":{"admin":true},"node":"n"}'],
  ['JSON nested 20000 deep', `${'['.repeat(20_000)}${']'.repeat(20_000)}`],
  ['a 2 MiB body over the 1 MiB bound', `{"v":1,"csr":"${'A'.repeat(2 * 1024 * 1024)}"}`],
];

t.test('every subject answers hostile bodies with a coded error and keeps serving', async (t) => {
  for (const subject of allSubjects)
    for (const [what, body] of hostile) {
      const r = await ask(subject, body);
      const code = codeOf(r);
      // the two read subjects take an empty request; a valid answer is fine there, silence is not
      if (code === null && (subject === S.caRoots || subject === S.intentionsGet) && r.v === 1)
        continue;
      t.match(code, /^REMORA_E_(NATS|CONTROL)_/, `${subject}: ${what} → ${code}`);
    }
  t.equal(control.child.exitCode, null, 'control is still running');
  t.ok((await ask(S.caRoots, '{"v":1}')).roots, 'control still answers ca.roots');
});

t.test('operator subjects refuse a missing, wrong or near-miss operator token', async (t) => {
  const bodies = [
    { v: 1, node: 'n1', services: ['*'] },
    { v: 1, node: 'n1', services: ['*'], operatorToken: 'wrong' },
    { v: 1, node: 'n1', services: ['*'], operatorToken: `${OPERATOR_TOKEN}x` },
    { v: 1, node: 'n1', services: ['*'], operatorToken: OPERATOR_TOKEN.slice(0, -1) },
  ];
  for (const b of bodies) {
    const r = await ask(S.tokensCreate, JSON.stringify(b));
    t.match(codeOf(r), /^REMORA_E_/, `refused: ${codeOf(r)}`);
    t.notOk('token' in r, 'no token is handed out');
  }
});

t.test(
  'random JSON to the write subjects never yields a token, a certificate or silence',
  async (t) => {
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...writeSubjects),
        fc.oneof(
          fc.jsonValue(),
          fc.record({
            v: fc.constant(1),
            node: fc.string(),
            token: fc.string(),
            service: fc.string(),
            serviceId: fc.string(),
            csr: fc.string(),
            services: fc.array(fc.string()),
          }),
        ),
        async (subject, value) => {
          const r = await ask(subject, JSON.stringify(value) ?? 'null');
          const ok = /^REMORA_E_/.test(codeOf(r) ?? '') && !('token' in r) && !('cert' in r);
          if (ok) refused += 1;
          return ok;
        },
      ),
      { numRuns: 150 },
    );
    t.equal(refused, 150, 'all 150 random requests were refused with a code');
    t.ok((await ask(S.caRoots, '{"v":1}')).roots, 'control still answers ca.roots');
  },
);
