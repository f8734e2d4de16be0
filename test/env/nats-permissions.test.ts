// The NATS credentials that compose/setup.sh and vagrant/setup.sh generate give each role exactly
// the subjects of DESIGN §4, enforced by a real nats-server running the committed server config:
// control serves requests and publishes changes; agents request ca.sign/ca.roots/intentions.get
// and hear *.changed; operators request intentions.upsert/delete and tokens.create.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, credsAuthenticator, type NatsConnection } from 'nats';
import { startNatsServer } from '../helpers/nats.ts';
import { waitFor } from '../../lib/util/index.ts';
import { repoRoot, runTool, toolMissing } from './tools.ts';
// @ts-expect-error -- a plain JavaScript module (compose/ is not part of the TypeScript project)
import { INBOX_PREFIXES, natsPermissions, writeMeshSecrets } from '../../compose/gen-secrets.js';

const DC = 'dc1';
const p = `remora.v1.${DC}`;
const ALL = [
  'ca.roots',
  'ca.roots.changed',
  'ca.sign',
  'ca.rotate',
  'intentions.get',
  'intentions.changed',
  'intentions.upsert',
  'intentions.delete',
  'intentions.policy',
  'tokens.create',
].map((s) => `${p}.${s}`);

const reason = await toolMissing('nats-server', 'nats-server');

t.test(
  'the committed server configs accept the generated users',
  { skip: reason ?? false },
  async (t) => {
    const dir = t.testdir({});
    writeMeshSecrets(dir, { datacenter: DC });
    for (const conf of ['compose/nats/nats.conf', 'vagrant/files/nats-server.conf']) {
      writeFileSync(join(dir, 'nats.conf'), readFileSync(join(repoRoot, conf)));
      const r = await runTool('nats-server', ['-c', join(dir, 'nats.conf'), '-t']);
      t.equal(r.code, 0, `${conf}: ${r.stderr.trim()}`);
    }
  },
);

t.test('each role may use exactly its subjects', { skip: reason ?? false }, async (t) => {
  const dir = t.testdir({});
  writeMeshSecrets(dir, { datacenter: DC });
  // the committed config without its fixed ports (the test server takes a free one)
  const conf = readFileSync(join(repoRoot, 'compose/nats/nats.conf'), 'utf8').replace(
    /^(port|http_port):.*$/gm,
    '',
  );
  writeFileSync(join(dir, 'nats.conf'), conf);
  const server = await startNatsServer(['-c', join(dir, 'nats.conf')]);
  t.teardown(() => server.stop());
  const conns: NatsConnection[] = [];
  t.teardown(() => Promise.all(conns.map((c) => c.close())));
  const as = async (role: string): Promise<NatsConnection> => {
    const nc = await connect({
      servers: server.url,
      authenticator: credsAuthenticator(readFileSync(join(dir, `${role}.creds`))),
      name: `test-${role}`,
      // each role may subscribe only to its own reply inboxes
      inboxPrefix: (INBOX_PREFIXES as Record<string, string>)[role],
    });
    conns.push(nc);
    return nc;
  };
  const control = await as('control');
  const agent = await as('agent');
  const operator = await as('operator');

  t.test('an unknown client is refused', async (t) => {
    await t.rejects(connect({ servers: server.url }), /Authorization Violation/i);
  });

  t.test('publishes reach control only on the subjects the role may use', async (t) => {
    const seen = new Map<string, Set<string>>();
    const observer = await as('control');
    const sub = observer.subscribe(`${p}.>`);
    void (async () => {
      for await (const m of sub) {
        const who = m.headers?.get('x-role') ?? '?';
        seen.set(who, (seen.get(who) ?? new Set()).add(m.subject));
      }
    })();
    await observer.flush();
    const { headers } = await import('nats');
    for (const [role, nc] of [
      ['agent', agent],
      ['operator', operator],
      ['control', control],
    ] as const) {
      const h = headers();
      h.set('x-role', role);
      for (const subject of ALL) nc.publish(subject, undefined, { headers: h });
      await nc.flush();
    }
    // a marker from each role that every role may publish is not available, so wait for the
    // expected set and then for one more round trip through the server
    const perms = natsPermissions(DC) as Record<string, { publish: { allow: string[] } }>;
    for (const role of ['agent', 'operator', 'control']) {
      const allowed = perms[role]!.publish.allow.filter((s) => s.startsWith(p));
      await waitFor(
        `${role}'s allowed publishes to arrive`,
        () => allowed.every((s) => seen.get(role)?.has(s)),
        5000,
      );
    }
    await observer.flush();
    t.same([...(seen.get('agent') ?? [])].sort(), [
      `${p}.ca.roots`,
      `${p}.ca.sign`,
      `${p}.intentions.get`,
    ]);
    t.same([...(seen.get('operator') ?? [])].sort(), [
      `${p}.ca.roots`,
      `${p}.ca.rotate`,
      `${p}.intentions.delete`,
      `${p}.intentions.get`,
      `${p}.intentions.policy`,
      `${p}.intentions.upsert`,
      `${p}.tokens.create`,
    ]);
    t.same([...(seen.get('control') ?? [])].sort(), [
      `${p}.ca.roots.changed`,
      `${p}.intentions.changed`,
    ]);
  });

  t.test('control answers an agent’s request (responses are allowed)', async (t) => {
    const sub = control.subscribe(`${p}.ca.roots`, { queue: 'remora-control' });
    void (async () => {
      for await (const m of sub) m.respond(new TextEncoder().encode('{"v":1}'));
    })();
    await control.flush();
    const reply = await agent.request(`${p}.ca.roots`, undefined, { timeout: 3000 });
    t.equal(new TextDecoder().decode(reply.data), '{"v":1}');
    sub.unsubscribe();
  });

  t.test('agents and operators hear change announcements', async (t) => {
    for (const nc of [agent, operator]) {
      const sub = nc.subscribe(`${p}.intentions.changed`, { max: 1 });
      await nc.flush();
      control.publish(`${p}.intentions.changed`, new TextEncoder().encode('{}'));
      for await (const m of sub) t.equal(m.subject, `${p}.intentions.changed`);
    }
  });

  t.test('an agent may not listen to signing requests or token traffic', async (t) => {
    for (const subject of [`${p}.ca.sign`, `${p}.tokens.create`, `${p}.>`]) {
      const sub = agent.subscribe(subject);
      // nats.js ends the subscription's iterator with the server's permissions violation
      const outcome = await (async () => {
        try {
          for await (const _m of sub) return 'received a message';
          return 'closed without an error';
        } catch (err) {
          return (err as Error).message;
        }
      })();
      t.match(
        outcome,
        /permissions violation/i,
        `subscribing to ${subject} is refused: ${outcome}`,
      );
    }
  });
});
