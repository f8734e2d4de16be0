// A terminating gateway's way to services outside the mesh (proxy/inbound/terminating.ts): the
// certificate picked by SNI, instances taken in turn with the next one on a refused connection,
// and TLS originated with the entry's CA, client certificate and SNI (strict name check).
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import http2 from 'node:http2';
import { X509Certificate } from 'node:crypto';
import { createTerminatingSet } from '../../../proxy/inbound/terminating.ts';
import { freePort } from '../../helpers/nats.ts';
import { createMeshCerts } from '../../helpers/mesh-certs.ts';
import { hasCode } from '../../../lib/errors/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import type { TerminatingService } from '../../../lib/proxy-api/index.ts';

const limits = { maxHeaderBytes: 16384, maxHeaders: 100 } as never;
const certs = createMeshCerts();
const leaf = certs.cachedLeaf('legacy');

function service(over: Partial<TerminatingService>): TerminatingService {
  return {
    service: 'legacy',
    sni: 'legacy.default.dc1.internal.x.remora',
    protocol: 'tcp',
    certPem: leaf.certPem,
    keyPem: leaf.keyPem,
    endpoints: [],
    ...over,
  };
}

const endpoint = (port: number, id = `e${port}`) => ({
  id,
  address: '127.0.0.1',
  port,
  weight: 1,
  node: 'db-host',
});

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    const s = await p;
    (s as net.Socket).destroy();
    return undefined;
  } catch (err) {
    return hasCode(err) ? err.code : String(err);
  }
}

t.test('the SNI picks the service and its certificate; another SNI none', async (t) => {
  const set = createTerminatingSet({ limits });
  t.teardown(() => set.close());
  set
    .prepare(
      { services: [service({ sni: 'Legacy.default.dc1.internal.x.remora' })] },
      [certs.ca.certPem],
      undefined,
    )
    .commit();
  t.equal(
    set.target('legacy.default.dc1.internal.x.remora')?.service,
    'legacy',
    'case does not matter',
  );
  t.ok(set.context('legacy.default.dc1.internal.x.remora'));
  t.equal(set.target('api.default.dc1.internal.x.remora'), undefined);
  t.equal(set.target(false), undefined, 'no SNI, no service');
  set.prepare(undefined, [], undefined).commit();
  t.equal(set.target('legacy.default.dc1.internal.x.remora'), undefined, 'unlinked');
});

t.test('instances in turn, the next one when a connection is refused', async (t) => {
  const seen: number[] = [];
  const a = net.createServer((s) => (seen.push(1), s.end()));
  const b = net.createServer((s) => (seen.push(2), s.end()));
  const [pa, pb, dead] = [await listen(a), await listen(b), await freePort()];
  t.teardown(() => (a.close(), b.close()));
  const set = createTerminatingSet({ limits });
  t.teardown(() => set.close());
  set
    .prepare(
      { services: [service({ endpoints: [endpoint(dead), endpoint(pa), endpoint(pb)] })] },
      [],
      undefined,
    )
    .commit();
  const target = set.byService('legacy')!;
  for (let i = 0; i < 3; i += 1) (await target.dial(1000)).destroy();
  await waitFor('three connections taken', () => seen.length === 3);
  t.same(seen.sort(), [1, 1, 2], 'the dead instance is skipped, the others share the calls');
  set.prepare({ services: [service({ endpoints: [endpoint(dead)] })] }, [], undefined).commit();
  t.equal(await codeOf(set.byService('legacy')!.dial(1000)), 'REMORA_E_PROXY_CONNECT_FAILED');
  set.prepare({ services: [service({ endpoints: [] })] }, [], undefined).commit();
  t.equal(await codeOf(set.byService('legacy')!.dial(1000)), 'REMORA_E_PROXY_NO_ENDPOINTS');
});

t.test(
  'TLS origination: the CA file decides, a client certificate is presented, SNI is checked',
  async (t) => {
    // the external server's certificate: issued by the entry's CA, for a DNS name
    const server = certs.leaf('db-server');
    const client = certs.leaf('gateway-client');
    const other = createMeshCerts();
    const clients: (string | undefined)[] = [];
    const srv = tls.createServer(
      {
        cert: server.certPem,
        key: server.keyPem,
        ca: certs.ca.certPem,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (s) => {
        clients.push(s.getPeerCertificate()?.subjectaltname);
        s.end('ok');
      },
    );
    const port = await listen(srv);
    t.teardown(() => srv.close());
    const set = createTerminatingSet({ limits });
    t.teardown(() => set.close());
    const dialWith = (over: Partial<TerminatingService>) => {
      set
        .prepare({ services: [service({ endpoints: [endpoint(port)], ...over })] }, [], undefined)
        .commit();
      return set.byService('legacy')!.dial(2000);
    };
    const s = (await dialWith({
      tls: { caPem: certs.ca.certPem, certPem: client.certPem, keyPem: client.keyPem },
    })) as tls.TLSSocket;
    t.ok(s.authorized, 'the server chains to the CA file');
    t.equal(
      new X509Certificate(s.getPeerX509Certificate()!.raw).fingerprint256,
      new X509Certificate(server.certPem).fingerprint256,
    );
    // the server answers once it took the handshake, client certificate included
    t.equal(await new Promise((r) => s.once('data', (d: Buffer) => r(d.toString()))), 'ok');
    s.destroy();
    t.match(clients.at(-1), /svc\/gateway-client/, 'the client certificate was presented');
    t.equal(
      await codeOf(dialWith({ tls: { caPem: other.ca.certPem } })),
      'REMORA_E_PROXY_UPSTREAM_IDENTITY',
      'a server another CA issued is refused',
    );
    t.equal(
      await codeOf(dialWith({ tls: { caPem: certs.ca.certPem, sni: 'db.corp.example' } })),
      'REMORA_E_PROXY_UPSTREAM_IDENTITY',
      'with SNI, a certificate without that name is refused (strict SAN match)',
    );
  },
);

t.test('HTTP/2 to a service outside the mesh: h2c, or h2 over the originated TLS', async (t) => {
  const server = certs.leaf('h2-server');
  const plain = http2.createServer((_req, res) => res.end('h2c'));
  const secure = http2.createSecureServer(
    { cert: server.certPem, key: server.keyPem },
    (_req, res) => res.end('h2 over TLS'),
  );
  const [pp, sp] = [await listen(plain), await listen(secure)];
  t.teardown(() => (plain.close(), secure.close()));
  const set = createTerminatingSet({ limits });
  t.teardown(() => set.close());
  const get = (session: http2.ClientHttp2Session) =>
    new Promise<string>((resolve, reject) => {
      const req = session.request({ ':path': '/' });
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => resolve(body));
      req.on('error', reject);
      req.end();
    });
  set
    .prepare(
      {
        services: [
          service({ service: 'a', sni: 'a', protocol: 'http2', endpoints: [endpoint(pp)] }),
          service({
            service: 'b',
            sni: 'b',
            protocol: 'grpc',
            endpoints: [endpoint(sp)],
            tls: { caPem: certs.ca.certPem },
          }),
        ],
      },
      [],
      undefined,
    )
    .commit();
  t.equal(await get(set.byService('a')!.h2Session(1000)), 'h2c');
  const b = set.byService('b')!.h2Session(1000);
  t.equal(await get(b), 'h2 over TLS');
  t.equal(set.byService('b')!.h2Session(1000), b, 'one session, reused');
});
