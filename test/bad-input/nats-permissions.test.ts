// The NATS permissions that compose and Vagrant install (both generate them with
// compose/gen-secrets.js), enforced by a real nats-server with NKey users: what a host holding
// the agent's credentials can and cannot do on the bus. Connections use the programs' names, so
// they take the reply-inbox prefix each program takes by default (lib/nats/connect.ts).
import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSilentLogger } from '../../lib/log/index.ts';
import { connectNats, subjects, type NatsConnection } from '../../lib/nats/index.ts';
import { defaultInboxPrefix, INBOX_PREFIXES } from '../../lib/nats/connect.ts';
import { waitFor } from '../../lib/util/index.ts';
import { startNatsServer } from '../helpers/nats.ts';
// @ts-expect-error -- a plain JS script of the environments area, without type declarations
import { generateMeshSecrets } from '../../compose/gen-secrets.js';

interface Secrets {
  authConf: string;
  creds: Record<'control' | 'agent' | 'operator', string>;
}

const secrets = (generateMeshSecrets as (dc: string) => Secrets)('dc1');
const dir = await mkdtemp(join(tmpdir(), 'remora-nats-perm-'));
await writeFile(join(dir, 'nats-auth.conf'), secrets.authConf);
await writeFile(join(dir, 'nats.conf'), 'include ./nats-auth.conf\n');
const conns: NatsConnection[] = [];
/** The connection names the programs use: `remora control`, `remora agent`, the ops CLI. */
const NAMES = {
  control: 'remora-control@test',
  agent: 'remora-agent@node-a',
  operator: 'remora-cli',
} as const;
async function as(
  role: 'control' | 'agent' | 'operator',
  name: string = NAMES[role],
): Promise<NatsConnection> {
  await writeFile(join(dir, `${role}.creds`), secrets.creds[role], { mode: 0o600 });
  const nc = await connectNats({
    servers: nats.url,
    credsFile: join(dir, `${role}.creds`),
    name,
    logger: createSilentLogger(),
  });
  conns.push(nc);
  return nc;
}
const nats = await startNatsServer(['-c', join(dir, 'nats.conf')]);
t.teardown(async () => {
  for (const c of conns) await c.close();
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});
const S = subjects('dc1');
const enc = (o: object): Uint8Array => new TextEncoder().encode(JSON.stringify(o));

const control = await as('control');
// a stand-in control replica answering token and sign requests
for (const subject of [S.tokensCreate, S.caSign, S.intentionsUpsert, S.caRotate])
  control.subscribe(subject, {
    callback: (_err, m) => m.respond(enc({ v: 1, token: `issued-on-${subject}` })),
  });
await control.flush();

t.test('the agent role can request certificates, roots and intentions', async (t) => {
  const agent = await as('agent');
  const r = await agent.request(S.caSign, enc({ v: 1 }), { timeout: 5000 });
  t.match(new TextDecoder().decode(r.data), /issued-on/, 'ca.sign reaches control');
});

t.test('the agent role cannot create tokens, change intentions or rotate the CA', async (t) => {
  const agent = await as('agent');
  for (const subject of [S.tokensCreate, S.intentionsUpsert, S.caRotate]) {
    const r = await agent
      .request(subject, enc({ v: 1 }), { timeout: 2000 })
      .then(() => 'answered')
      .catch((e: Error) => e.message);
    t.not(r, 'answered', `${subject} is refused (${r})`);
  }
});

t.test('the agent role cannot listen to other hosts’ sign requests', async (t) => {
  const agent = await as('agent');
  const got: string[] = [];
  agent.subscribe(S.caSign, {
    callback: (e, m) => {
      if (!e) got.push(m.subject);
    },
  });
  await agent.flush().catch(() => undefined);
  const other = await as('agent');
  await other.request(S.caSign, enc({ v: 1 }), { timeout: 5000 });
  t.same(got, [], 'no CSR or node token of another host is delivered to it');
});

t.test('each program takes its role’s reply-inbox prefix by default', async (t) => {
  t.equal(defaultInboxPrefix(NAMES.control), INBOX_PREFIXES.control);
  t.equal(defaultInboxPrefix(NAMES.agent), `${INBOX_PREFIXES.agent}.node-a`);
  t.equal(defaultInboxPrefix('remora-agent@vm1.lab*'), `${INBOX_PREFIXES.agent}.vm1_lab_`);
  t.equal(defaultInboxPrefix(NAMES.operator), INBOX_PREFIXES.operator);
  t.equal(defaultInboxPrefix('remora-dev'), '_INBOX', 'anything else keeps the nats.js default');
  const err = await connectNats({
    servers: nats.url,
    name: 'x',
    inboxPrefix: '_INBOX.>',
    logger: createSilentLogger(),
  }).then(
    (nc) => nc.close().then(() => undefined),
    (e: unknown) => e as { code?: string },
  );
  t.equal(err?.code, 'REMORA_E_NATS_INBOX_PREFIX_INVALID', 'a wildcard prefix is refused');
});

t.test('the agent role cannot read replies meant for the operator (node tokens)', async (t) => {
  // a host with the agent credentials, named as another node, tries every inbox it could
  const spy = await as('agent', 'remora-agent@node-b');
  const stolen: string[] = [];
  const refused: string[] = [];
  const tries = ['_INBOX.>', `${INBOX_PREFIXES.operator}.>`, `${INBOX_PREFIXES.control}.>`, '>'];
  for (const subject of tries)
    spy.subscribe(subject, {
      callback: (e, m) => {
        if (e) refused.push(subject);
        else stolen.push(new TextDecoder().decode(m.data));
      },
    });
  await spy.flush();
  await waitFor('nats-server to refuse the four subscriptions', () => refused.length === 4, 5000);
  t.same(refused.sort(), [...tries].sort(), 'each subscription is a permissions violation');
  const operator = await as('operator');
  const reply = await operator.request(S.tokensCreate, enc({ v: 1 }), { timeout: 5000 });
  t.match(new TextDecoder().decode(reply.data), /issued-on/, 'the operator gets its reply');
  await spy.flush();
  t.same(stolen, [], 'the operator’s token reply is not delivered to an agent');
  // and the agent's own requests still work on the same connection
  const r = await spy.request(S.caSign, enc({ v: 1 }), { timeout: 5000 });
  t.match(new TextDecoder().decode(r.data), /issued-on/, 'the agent still gets certificates');
});

t.test('a client without its role’s prefix gets no replies', async (t) => {
  // e.g. a hand-made client on the default _INBOX: the server refuses its reply subscription
  const plain = await as('agent', 'hand-made');
  const r = await plain
    .request(S.caSign, enc({ v: 1 }), { timeout: 2000 })
    .then(() => 'answered')
    .catch((e: Error) => e.message);
  t.not(r, 'answered', `the request fails (${r})`);
});
