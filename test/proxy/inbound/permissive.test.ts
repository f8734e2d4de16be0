// The sidecar port in permissive mutual TLS mode tells a TLS ClientHello from a plain connection
// by its first byte, without losing any, however the caller's bytes arrive.
import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSilentLogger } from '../../../lib/log/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import { createProxy, type Proxy } from '../../../proxy/proxy.ts';
import type { ProxySnapshot } from '../../../lib/proxy-api/index.ts';
import { createMeshCerts, makeSnapshot } from '../../helpers/mesh-certs.ts';
import { startEchoApp, startEchoTcp } from '../../integration/proxy/mesh.ts';

const mesh = createMeshCerts();
const SNIFF_TIMEOUT_MS = 200;

async function startApi(
  t: Test,
  appPort: number,
  mode: 'strict' | 'permissive' = 'permissive',
  protocol: ProxySnapshot['inbound']['protocol'] = 'http',
): Promise<{ proxy: Proxy; port: number; snapshot: ProxySnapshot }> {
  const proxy = createProxy({ logger: createSilentLogger(), sniffTimeoutMs: SNIFF_TIMEOUT_MS });
  const base = makeSnapshot(mesh, mesh.cachedLeaf('api'), { appPort, protocol });
  const snapshot: ProxySnapshot = {
    ...base,
    inbound: { ...base.inbound, ...(mode === 'permissive' ? { mutualTlsMode: mode } : {}) },
  };
  await proxy.apply(snapshot);
  t.teardown(() => proxy.close());
  return { proxy, port: proxy.addresses().inbound!.port, snapshot };
}

/** Writes `bytes` on `s` one byte per turn of the event loop and a millisecond apart. */
async function trickle(s: net.Socket, bytes: Buffer): Promise<void> {
  for (const b of bytes) {
    if (s.destroyed) return;
    s.write(Buffer.from([b]));
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Everything the peer sends on a fresh connection until it closes or `until` matches. */
function exchange(
  port: number,
  write: (s: net.Socket) => void | Promise<void>,
  until: (text: string) => boolean = () => false,
): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true });
    let out = '';
    s.on('data', (c: Buffer) => {
      out += c.toString('latin1');
      if (until(out)) {
        s.destroy();
        resolve(out);
      }
    });
    s.on('error', () => resolve(out));
    s.on('close', () => resolve(out));
    s.on('connect', () => void write(s));
  });
}

const GET = Buffer.from('GET /plain HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n');
const headDone = (x: string) => x.includes('\r\n\r\n') && x.includes('"app"');

async function plainCount(proxy: Proxy): Promise<number> {
  const text = await proxy.metrics.registry.metrics();
  const m = /remora_proxy_inbound_plain_connections_total (\d+)/.exec(text);
  return m ? Number(m[1]) : 0;
}

/** An mTLS handshake as web with `api`'s sidecar port; resolves with the server's SPIFFE ID. */
function handshake(port: number, o: { socket?: net.Socket } = {}): Promise<string> {
  const leaf = mesh.cachedLeaf('web');
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      ...(o.socket ? { socket: o.socket } : { host: '127.0.0.1', port }),
      ca: [mesh.ca.certPem],
      cert: leaf.certPem,
      key: leaf.keyPem,
      checkServerIdentity: () => undefined,
    });
    s.on('secureConnect', () => {
      const uri = s.getPeerCertificate().subjectaltname ?? '';
      s.destroy();
      resolve(uri);
    });
    s.on('error', reject);
  });
}

t.test('a plain HTTP request and an mTLS handshake share the sidecar port', async (t) => {
  const app = await startEchoApp();
  t.teardown(() => app.close());
  const { proxy, port } = await startApi(t, app.port);

  const plain = await exchange(port, (s) => void s.write(GET), headDone);
  t.match(plain, /^HTTP\/1\.1 200 /, 'the plain request reached the app');
  t.match(plain, /"url":"\/plain"/);
  t.match(plain, /"xfcc":null/, 'a plain caller carries no identity to the app');

  t.match(await handshake(port), 'spiffe://', 'a mesh caller still completes mTLS with api');
  t.equal(await plainCount(proxy), 1, 'only the plain connection was counted as plain');
});

t.test('a caller that sends one byte at a time is told apart all the same', async (t) => {
  const app = await startEchoApp();
  t.teardown(() => app.close());
  const { proxy, port } = await startApi(t, app.port);

  const plain = await exchange(port, (s) => trickle(s, GET), headDone);
  t.match(plain, /^HTTP\/1\.1 200 /, 'every trickled byte of the plain request reached the app');
  t.match(plain, /"url":"\/plain"/);

  // a TLS client whose ClientHello reaches the proxy one byte at a time, through a relay
  const relay = net.createServer({ noDelay: true }, (down) => {
    const up = net.connect({ port, host: '127.0.0.1', noDelay: true });
    let chain = Promise.resolve();
    down.on('data', (c: Buffer) => {
      down.pause();
      chain = chain.then(() => trickle(up, c)).then(() => void down.resume());
    });
    up.on('data', (c: Buffer) => down.write(c));
    const end = () => {
      down.destroy();
      up.destroy();
    };
    down.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  t.teardown(() => relay.close());
  const relayPort = (relay.address() as net.AddressInfo).port;
  t.match(await handshake(relayPort), 'spiffe://', 'the trickled ClientHello lost no byte');
  t.equal(await plainCount(proxy), 1);
});

t.test(
  'a caller that sends nothing is taken as plain: an app that speaks first greets it',
  async (t) => {
    const greeter = await startEchoTcp((s) => s.write('220 api ready\r\n'));
    t.teardown(() => greeter.close());
    const { proxy, port } = await startApi(t, greeter.port, 'permissive', 'tcp');
    const got = await exchange(
      port,
      () => {},
      (x) => x.includes('\r\n'),
    );
    t.equal(got, '220 api ready\r\n', "the app's greeting reached the silent caller");
    t.equal(greeter.conns, 1);
    t.equal(await plainCount(proxy), 1);
  },
);

t.test('a caller that connects and closes without a byte never reaches the app', async (t) => {
  const app = await startEchoTcp();
  t.teardown(() => app.close());
  const { proxy, port } = await startApi(t, app.port, 'permissive', 'tcp');
  await exchange(port, (s) => void s.end());
  t.equal(app.conns, 0);
  t.equal(await plainCount(proxy), 0);
});

t.test('strict mode refuses a plain request; a snapshot switches new connections', async (t) => {
  const app = await startEchoApp();
  t.teardown(() => app.close());
  const { proxy, port, snapshot } = await startApi(t, app.port, 'strict');

  const refused = await exchange(port, (s) => void s.write(GET), headDone);
  t.notMatch(refused, /HTTP\/1\.1 200/, 'strict: the plain request gets no answer from the app');
  t.equal(app.hits, 0);

  // an open plain connection that came in while permissive keeps going after the switch back
  await proxy.apply({
    ...snapshot,
    version: 2,
    inbound: { ...snapshot.inbound, mutualTlsMode: 'permissive' },
  });
  t.equal(proxy.addresses().inbound!.port, port, 'the same listener serves the new mode');
  const open = net.connect({ port, host: '127.0.0.1' });
  t.teardown(() => open.destroy());
  await once(open, 'connect');
  open.write('GET /first HTTP/1.1\r\nHost: api\r\n\r\n');
  let openText = '';
  open.on('data', (c: Buffer) => (openText += c.toString()));
  await waitFor('the first answer', () => openText.includes('/first'));

  await proxy.apply({ ...snapshot, version: 3 });
  t.notMatch(
    await exchange(port, (s) => void s.write(GET), headDone),
    /HTTP\/1\.1 200/,
    'strict again: a new plain connection is refused',
  );
  open.write('GET /second HTTP/1.1\r\nHost: api\r\n\r\n');
  await waitFor('the second answer', () => openText.includes('/second'));
  t.pass('the plain connection opened in permissive mode kept working');
  t.match(await handshake(port), 'spiffe://', 'mTLS works throughout');
});

t.test('a plain connection is one access-log line, with no source identity', async (t) => {
  const app = await startEchoApp();
  t.teardown(() => app.close());
  const { proxy, port, snapshot } = await startApi(t, app.port);
  const dir = mkdtempSync(join(tmpdir(), 'remora-permissive-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'access.log');
  await proxy.apply({ ...snapshot, version: 2, accessLogs: { type: 'file', path } });
  const plain = await exchange(port, (s) => void s.write(GET), headDone);
  t.match(plain, /^HTTP\/1\.1 200 /);
  const read = () =>
    existsSync(path)
      ? readFileSync(path, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>)
      : [];
  await waitFor('the line', () => read().length >= 1);
  t.match(read()[0], {
    direction: 'inbound',
    source: '-',
    destination: 'api',
    protocol: 'tcp',
    bytesIn: GET.length,
  });
});
