import t from 'tap';
/* eslint-disable @typescript-eslint/no-explicit-any -- mutation table over an untyped clone */
import { decodeProxySnapshot } from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeSnapshot, makeUpstream } from '../../helpers/mesh-certs.ts';

const mesh = createMeshCerts();
const leaf = mesh.leaf('web');
const other = mesh.leaf('api');
const good = makeSnapshot(mesh, leaf, {
  upstreams: [makeUpstream(mesh, 'api', [20001, 20002], { localBindPort: 9191 })],
  intentions: {
    intentions: [
      {
        source: 'web',
        destination: 'api',
        permissions: [{ action: 'allow', http: { pathPrefix: '/v1', methods: ['GET'] } }],
      },
    ],
  },
});

t.test('a valid snapshot decodes to an equal value', async (t) => {
  t.same(decodeProxySnapshot(JSON.parse(JSON.stringify(good))), good);
});

function mutate(fn: (s: any) => void): unknown {
  const s = structuredClone(good) as any;
  fn(s);
  return s;
}

const cases: Array<[string, (s: any) => void, string]> = [
  ['an unknown top-level field', (s) => (s.extra = 1), 'snapshot.extra'],
  ['a negative version', (s) => (s.version = -1), 'snapshot.version'],
  ['an out-of-range port', (s) => (s.inbound.bindPort = 70000), 'inbound.bindPort'],
  ['an unknown protocol', (s) => (s.inbound.protocol = 'udp'), 'inbound.protocol'],
  [
    'a destination that is not a SPIFFE ID',
    (s) => (s.upstreams[0].destinationSpiffeId = 'api'),
    'upstreams[0].destinationSpiffeId',
  ],
  [
    'an unknown balancer',
    (s) => (s.upstreams[0].loadBalancer = 'random'),
    'upstreams[0].loadBalancer',
  ],
  [
    'a zero endpoint weight',
    (s) => (s.upstreams[0].endpoints[0].weight = 0),
    'upstreams[0].endpoints[0].weight',
  ],
  ['a key that does not match the certificate', (s) => (s.tls.keyPem = other.keyPem), 'tls.keyPem'],
  [
    'a certificate for another identity',
    (s) => ((s.tls.certPem = other.certPem), (s.tls.keyPem = other.keyPem)),
    'tls.certPem',
  ],
  ['no roots', (s) => (s.tls.rootsPem = []), 'tls.rootsPem'],
  ['a leaf used as a root', (s) => (s.tls.rootsPem = [other.certPem]), 'tls.rootsPem[0]'],
  ['garbage as a certificate', (s) => (s.tls.certPem = 'nope'), 'tls.certPem'],
  [
    'an intention with both action and permissions',
    (s) => (s.intentions.intentions[0].action = 'allow'),
    'intentions.intentions[0]',
  ],
  [
    'an invalid path regex',
    (s) => (s.intentions.intentions[0].permissions[0].http.pathRegex = '('),
    'intentions.intentions[0].permissions[0].http.pathRegex',
  ],
  [
    'a lower-case method',
    (s) => (s.intentions.intentions[0].permissions[0].http.methods = ['get']),
    'intentions.intentions[0].permissions[0].http.methods[0]',
  ],
  ['a sample ratio above 1', (s) => (s.tracing.sampleRatio = 2), 'tracing.sampleRatio'],
  [
    'two upstreams on one local port',
    (s) => s.upstreams.push(structuredClone(s.upstreams[0])),
    'upstreams[1].localBindPort',
  ],
  [
    'an instance SPIFFE ID for another service',
    (s) => (s.instance.service = 'api'),
    'instance.spiffeId',
  ],
];

for (const [what, fn, field] of cases) {
  t.test(`a snapshot with ${what} is refused naming ${field}`, async (t) => {
    try {
      decodeProxySnapshot(mutate(fn));
      t.fail('accepted');
    } catch (err: any) {
      t.equal(err.code, 'REMORA_E_PROXY_SNAPSHOT_INVALID');
      t.equal(err.details.field, field);
      t.notMatch(err.message, /PRIVATE KEY/);
    }
  });
}
