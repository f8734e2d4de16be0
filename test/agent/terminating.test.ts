// The agent's reading of a terminating-gateway entry (docs/gateways.md, "Terminating
// gateways"): what it links, what is left out and said, the services it plans (wildcard
// expanded, protocols checked), the TLS files read on the host, and the gateway's definition
// and Consul registration.
import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decodeTerminatingEntry,
  planTerminating,
  readOriginationTls,
} from '../../agent/terminating.ts';
import { decodeDefinitionFile } from '../../agent/definitions.ts';
import { gatewayCheckId, registrationFor } from '../../agent/agent.ts';
import { hasCode } from '../../lib/errors/index.ts';
import type { Protocol } from '../../lib/proxy-api/index.ts';
import { createMeshCerts } from '../helpers/mesh-certs.ts';

t.test('an entry in either spelling gives the services it links and their TLS files', async (t) => {
  const pascal = decodeTerminatingEntry({
    Kind: 'terminating-gateway',
    Name: 'tgw',
    Services: [
      { Name: 'db', CAFile: '/ca.pem', CertFile: '/c.pem', KeyFile: '/k.pem', SNI: 'db.corp' },
      { Name: '*', CAFile: '/common-ca.pem' },
    ],
  });
  t.same(pascal.problems, []);
  t.same(pascal.entry, {
    name: 'tgw',
    services: [
      { name: 'db', caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem', sni: 'db.corp' },
      { name: '*', caFile: '/common-ca.pem' },
    ],
  });
  const snake = decodeTerminatingEntry({
    kind: 'terminating-gateway',
    Name: 'tgw',
    services: [{ name: 'db', ca_file: '/ca.pem', sni: 'db.corp' }],
  });
  t.same(snake.entry.services, [{ name: 'db', caFile: '/ca.pem', sni: 'db.corp' }]);
});

t.test(
  'what cannot apply is left out with a sentence naming the field; the rest is linked',
  async (t) => {
    const { entry, problems } = decodeTerminatingEntry({
      Name: 'tgw',
      Services: [
        { Name: 'ok' },
        'db',
        { Name: 'bad name!' },
        { Name: 'tgw' },
        { Name: 'ok' },
        { Name: 'half', CertFile: '/c.pem', KeyFile: '/k.pem' },
        { Name: 'typed', CAFile: 7 },
        { Name: 'host', DisableAutoHostRewrite: 'yes' },
        { Name: 'keep', disable_auto_host_rewrite: true },
      ],
    });
    t.same(
      entry.services.map((s) => s.name),
      ['ok', 'keep'],
    );
    t.equal(entry.services[1]!.disableAutoHostRewrite, true, 'snake_case read too');
    t.match(problems, [
      /Services\[1\] must be an object/,
      /Services\[2\]\.Name must be a service name or "\*", got "bad name!"/,
      /Services\[3\]\.Name tgw is the gateway itself/,
      /Services\[4\]\.Name ok is linked twice/,
      /Services\[5\]: half sets CertFile without all of CAFile, CertFile and KeyFile/,
      /Services\[6\]\.CAFile must be a string, got 7; typed is left out/,
      /Services\[7\]\.DisableAutoHostRewrite must be true or false, got "yes"; host is left out/,
    ]);
    t.match(decodeTerminatingEntry({ Name: 'tgw', Services: { Name: 'x' } }).problems, [
      /Services must be a list; the gateway links no service/,
    ]);
  },
);

t.test('the plan expands "*" to the catalog, each service with its protocol', async (t) => {
  const protocols: Record<string, Protocol> = { web: 'http', stream: 'grpc', db: 'tcp' };
  const protocolOf = (n: string): Protocol => protocols[n] ?? 'tcp';
  const { entry } = decodeTerminatingEntry({
    Name: 'tgw',
    Services: [
      { Name: 'db', CAFile: '/db-ca.pem' },
      { Name: '*', CAFile: '/common.pem' },
      { Name: 'stream' },
    ],
  });
  const plan = planTerminating(entry, {
    gateway: 'tgw',
    protocolOf,
    catalog: ['consul', 'db', 'legacy', 'tgw', 'web', 'web-sidecar-proxy', 'stream'],
  });
  t.same(
    plan.services,
    [
      { name: 'db', protocol: 'tcp', caFile: '/db-ca.pem' },
      { name: 'legacy', protocol: 'tcp', caFile: '/common.pem' },
      { name: 'stream', protocol: 'grpc' },
      { name: 'web', protocol: 'http', caFile: '/common.pem' },
    ],
    "a named service keeps its own settings; '*' gives the others the wildcard's; not the gateway, consul or sidecars",
  );
  t.same(plan.problems, []);
  t.same(
    planTerminating(entry, { gateway: 'tgw', protocolOf, catalog: null }).services.map(
      (s) => s.name,
    ),
    ['db', 'stream'],
    'while the catalog is unknown, "*" links nothing yet',
  );
});

t.test(
  'TLS files are read on the host; one that cannot be read is a coded error naming it',
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'remora-tgw-unit-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const certs = createMeshCerts();
    const leaf = certs.cachedLeaf('client');
    await writeFile(join(dir, 'ca.pem'), certs.ca.certPem);
    await writeFile(join(dir, 'c.pem'), leaf.certPem);
    await writeFile(join(dir, 'k.pem'), leaf.keyPem);
    await writeFile(join(dir, 'junk.pem'), 'not a certificate');
    const svc = (files: object) => ({ name: 'db', protocol: 'tcp' as const, ...files });
    t.equal(readOriginationTls('tgw', svc({})), null, 'no TLS fields: plain TCP');
    t.same(
      readOriginationTls(
        'tgw',
        svc({
          caFile: join(dir, 'ca.pem'),
          certFile: join(dir, 'c.pem'),
          keyFile: join(dir, 'k.pem'),
          sni: 'db.corp',
        }),
      ),
      { caPem: certs.ca.certPem, certPem: leaf.certPem, keyPem: leaf.keyPem, sni: 'db.corp' },
    );
    const missing = join(dir, 'missing.pem');
    const errorOf = (files: object) => {
      try {
        readOriginationTls('tgw', svc(files));
        return null;
      } catch (err) {
        return err;
      }
    };
    const e1 = errorOf({ caFile: missing });
    t.ok(hasCode(e1, 'REMORA_E_AGENT_TERMINATING_TLS_FILE'));
    t.match((e1 as Error).message, `CAFile ${missing} of db cannot be read (ENOENT)`);
    t.match((e1 as { details: object }).details, { service: 'db', field: 'CAFile', file: missing });
    const e2 = errorOf({ caFile: join(dir, 'junk.pem') });
    t.match((e2 as Error).message, /CAFile .*junk\.pem of db is not a PEM certificate/);
    const e3 = errorOf({
      caFile: join(dir, 'ca.pem'),
      certFile: join(dir, 'c.pem'),
      keyFile: join(dir, 'c.pem'),
    });
    t.match((e3 as Error).message, /KeyFile .*c\.pem of db is not a PEM private key/);
  },
);

t.test('a terminating gateway definition, and its registration as Consul holds one', async (t) => {
  const ok = decodeDefinitionFile(
    JSON.stringify({
      service: { kind: 'terminating-gateway', name: 'tgw', port: 8443, meta: { team: 'db' } },
    }),
    'tgw.json',
  );
  t.same(ok.problems, []);
  const def = ok.services[0]!;
  t.equal(def.kind, 'terminating-gateway');
  const body = registrationFor(def, {
    node: 'node-a',
    sidecarPort: 8443,
    advertiseAddress: '10.0.0.5',
    checkTtlMs: 10_000,
    ready: false,
  });
  t.match(body, {
    kind: 'terminating-gateway',
    id: 'tgw',
    name: 'tgw',
    port: 8443,
    address: '10.0.0.5',
    meta: { team: 'db', 'remora-node': 'node-a' },
    checks: [
      {
        CheckID: gatewayCheckId('tgw'),
        Name: 'Remora terminating gateway ready',
        Status: 'critical',
      },
    ],
  });
  t.notOk('connect' in body, 'no sidecar');
  for (const [service, message] of [
    [
      { kind: 'terminating-gateway', name: 'tgw' },
      /field service\.port is required on a terminating gateway/,
    ],
    [
      { kind: 'terminating-gateway', name: 'tgw', port: 1, connect: { sidecar_service: {} } },
      /field service\.connect cannot be set on a terminating gateway/,
    ],
  ] as const) {
    const r = decodeDefinitionFile(JSON.stringify({ service }), 'tgw.json');
    t.equal(r.problems[0]?.code, 'REMORA_E_AGENT_DEFINITION_INVALID');
    t.match(r.problems[0]?.message, message);
  }
});
