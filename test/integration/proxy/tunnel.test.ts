// remora-tcp/1 through real sidecars: TCP connections to a Remora peer share one mTLS tunnel,
// keep their own bytes, half close, flow control, drain, fallback and app failures.
import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../../../lib/util/index.ts';
import {
  createMeshCerts,
  makeUpstream,
  type MeshCerts,
  type MeshLeaf,
} from '../../helpers/mesh-certs.ts';
import { startEchoTcp, startSidecar, type Sidecar, type TcpApp } from './mesh.ts';

/** A connection through `port` that has seen `text` echoed upper-cased. */
async function echoed(port: number, text: string): Promise<net.Socket> {
  const c = net.connect(port, '127.0.0.1');
  c.on('error', () => {});
  let got = '';
  c.on('data', (d: Buffer) => (got += d.toString()));
  c.write(text);
  await waitFor(`echo of ${text}`, () => got === text.toUpperCase(), 5000);
  return c;
}

async function webTo(mesh: MeshCerts, ports: number[]): Promise<Sidecar> {
  return startSidecar(mesh, 'web', {
    upstreams: [makeUpstream(mesh, 'api', ports, { protocol: 'tcp', loadBalancer: 'round_robin' })],
  });
}

const ALLOW = {
  defaultPolicy: 'deny' as const,
  intentions: [{ source: 'web', destination: 'api', action: 'allow' as const }],
};

/**
 * One api sidecar (tcp inbound, web allowed) in front of each of `apps`, and a web sidecar with
 * a round-robin tcp upstream to them; the sidecars, the apps and the `clients` are closed with
 * the test.
 */
async function tcpMesh(
  t: Test,
  mesh: MeshCerts,
  apps: TcpApp[],
  leaf?: MeshLeaf,
): Promise<{ apis: Sidecar[]; web: Sidecar; port: number; clients: net.Socket[] }> {
  const apis: Sidecar[] = [];
  for (const app of apps) {
    apis.push(
      await startSidecar(mesh, 'api', {
        appPort: app.port,
        protocol: 'tcp',
        intentions: ALLOW,
        ...(leaf ? { leaf } : {}),
      }),
    );
  }
  const web = await webTo(
    mesh,
    apis.map((a) => a.inboundPort),
  );
  const clients: net.Socket[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    await web.proxy.close();
    for (const a of apis) await a.proxy.close();
    for (const a of apps) a.close();
  });
  return { apis, web, clients, port: web.proxy.addresses().upstreams.api!.port };
}

/** tcpMesh with a single api sidecar. */
async function tcpPair(
  t: Test,
  mesh: MeshCerts,
  app: TcpApp,
  leaf?: MeshLeaf,
): Promise<{ api: Sidecar; web: Sidecar; port: number; clients: net.Socket[] }> {
  const { apis, ...rest } = await tcpMesh(t, mesh, [app], leaf);
  return { api: apis[0]!, ...rest };
}

t.test('twenty TCP connections share one tunnel, each keeping its own bytes', async (t) => {
  const mesh = createMeshCerts();
  const app = await startEchoTcp();
  const { api, web, port, clients } = await tcpPair(t, mesh, app);
  clients.push(
    ...(await Promise.all(Array.from({ length: 20 }, (_, i) => echoed(port, `conn-${i} `)))),
  );
  t.equal(app.conns, 20, 'the app saw twenty connections');
  const ep = (web.proxy.clusters() as Array<{ endpoints: Array<{ tunnels: number }> }>)[0]!
    .endpoints[0]!;
  t.equal(ep.tunnels, 1, 'over one mTLS connection between the sidecars');
  // the same connection again, after the others: its bytes are still its own
  let got = '';
  clients[7]!.on('data', (d: Buffer) => (got += d.toString()));
  clients[7]!.write('again');
  await waitFor('second echo', () => got === 'AGAIN', 5000);
  const text = await api.proxy.metrics.registry.metrics();
  t.match(
    text,
    /remora_proxy_active_connections\{direction="inbound",service="api"\} 20/,
    'the server side counts each stream as a connection',
  );
});

t.test('half close: a client that finished sending still gets the answer', async (t) => {
  const mesh = createMeshCerts();
  // answers once the client has finished sending, then ends
  const app = await startEchoTcp((s) => {
    let q = '';
    s.on('data', (c: Buffer) => (q += c.toString()));
    s.on('end', () => s.end(`answer to ${q}`));
  });
  const { port, clients } = await tcpPair(t, mesh, app);
  const c = net.connect({ port, allowHalfOpen: true });
  clients.push(c);
  let got = '';
  c.on('data', (d: Buffer) => (got += d.toString()));
  c.end('the question');
  await once(c, 'end');
  t.equal(got, 'answer to the question');
});

t.test('a reader that stops holds back only its own sender', async (t) => {
  const mesh = createMeshCerts();
  const TOTAL = 64 * 1024 * 1024;
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = i % 251;
  let written = 0;
  // 'bulk' starts a 64 MiB answer written as fast as the connection takes it; anything else
  // is echoed upper-cased
  const app = await startEchoTcp((s) => {
    s.once('data', (first: Buffer) => {
      if (first.toString() !== 'bulk') {
        s.write(first.toString().toUpperCase());
        s.on('data', (c: Buffer) => s.write(c.toString().toUpperCase()));
        return;
      }
      const pump = (): void => {
        while (written < TOTAL) {
          written += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
  });
  const { web, port, clients } = await tcpPair(t, mesh, app);
  const slow = net.connect(port, '127.0.0.1');
  clients.push(slow);
  slow.write('bulk');
  slow.pause(); // reads nothing for now
  await waitFor('the app started sending', () => written > 0, 5000);
  await new Promise((r) => setTimeout(r, 1000));
  const heldAt = written;
  t.ok(heldAt < TOTAL / 2, `the app is held back (${heldAt} of ${TOTAL} bytes written)`);
  clients.push(await echoed(port, 'still here'));
  t.pass('another connection on the same tunnel is answered meanwhile');
  t.equal(
    (web.proxy.clusters() as Array<{ endpoints: Array<{ tunnels: number }> }>)[0]!.endpoints[0]!
      .tunnels,
    1,
    'both connections share the tunnel',
  );
  let received = 0;
  let intact = true;
  slow.on('data', (c: Buffer) => {
    for (let i = 0; i < c.length && intact; i += 4099)
      if (c[i] !== ((received + i) % (64 * 1024)) % 251) intact = false;
    received += c.length;
  });
  slow.resume();
  await once(slow, 'end');
  t.equal(received, TOTAL, 'every byte arrives once the reader reads again');
  t.ok(intact, 'in order');
});

t.test('a draining peer keeps its streams; new connections go to another endpoint', async (t) => {
  const mesh = createMeshCerts();
  const apps = [await startEchoTcp(), await startEchoTcp()];
  const { apis, port, clients } = await tcpMesh(t, mesh, apps);
  for (let i = 0; i < 4; i++) clients.push(await echoed(port, `before-${i}`));
  t.same(
    apps.map((a) => a.conns),
    [2, 2],
    'round robin over both',
  );
  const drained = apis[0]!.proxy.drain(10_000);
  for (let i = 0; i < 6; i++) clients.push(await echoed(port, `during-${i}`));
  t.same(
    apps.map((a) => a.conns),
    [2, 8],
    'connections opened while one endpoint drains all go to the other',
  );
  // the streams on the draining peer still carry bytes
  for (const c of clients.slice(0, 4)) {
    let got = '';
    c.on('data', (d: Buffer) => (got += d.toString()));
    c.write('still');
    await waitFor('echo on a draining peer', () => got === 'STILL', 5000);
  }
  t.pass('streams opened before the drain keep working');
  for (const c of clients) c.destroy();
  await drained;
  t.pass('the drain ends once its streams are done');
});

t.test('a peer without the tunnel gets one mTLS connection per TCP connection', async (t) => {
  const mesh = createMeshCerts();
  const leaf = mesh.cachedLeaf('api');
  let handshakes = 0;
  // a TLS endpoint with the destination's identity that offers no remora-tcp/1
  const old = tls.createServer(
    {
      cert: leaf.certPem,
      key: leaf.keyPem,
      ca: mesh.ca.certPem,
      requestCert: true,
      ALPNProtocols: ['http/1.1'],
    },
    (s) => {
      handshakes++;
      s.on('error', () => {});
      s.on('data', (c: Buffer) => s.write(c.toString().toUpperCase()));
    },
  );
  old.listen(0, '127.0.0.1');
  await once(old, 'listening');
  const web = await webTo(mesh, [(old.address() as AddressInfo).port]);
  const clients: net.Socket[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    await web.proxy.close();
    old.close();
  });
  const port = web.proxy.addresses().upstreams.api!.port;
  for (let i = 0; i < 3; i++) clients.push(await echoed(port, `plain-${i}`));
  t.equal(handshakes, 3, 'one TLS connection each');
  t.equal(
    (web.proxy.clusters() as Array<{ endpoints: Array<{ tunnels: number }> }>)[0]!.endpoints[0]!
      .tunnels,
    0,
    'no tunnel',
  );
});

t.test('an endpoint whose app does not accept is skipped; no connection fails', async (t) => {
  const mesh = createMeshCerts();
  const app = await startEchoTcp();
  const gone = await startEchoTcp();
  gone.close(); // a port nothing listens on
  const { web, port, clients } = await tcpMesh(t, mesh, [gone, app]);
  for (let i = 0; i < 4; i++) clients.push(await echoed(port, `try-${i}`));
  t.equal(app.conns, 4, 'every connection reached the working app');
  const text = await web.proxy.metrics.registry.metrics();
  t.match(text, /remora_proxy_retries_total\{upstream="api",reason="connect"\} [1-9]/);
});

t.test('when the tunnel breaks, its client connections are closed', async (t) => {
  const mesh = createMeshCerts();
  const app = await startEchoTcp();
  const api = await startSidecar(mesh, 'api', {
    appPort: app.port,
    protocol: 'tcp',
    intentions: ALLOW,
  });
  const web = await webTo(mesh, [api.inboundPort]);
  t.teardown(async () => {
    await web.proxy.close();
    app.close();
  });
  const port = web.proxy.addresses().upstreams.api!.port;
  const a = await echoed(port, 'one');
  const b = await echoed(port, 'two');
  const closed = Promise.all([once(a, 'close'), once(b, 'close')]);
  await api.proxy.close();
  await closed;
  t.pass('both client connections closed');
});

t.test('new connections never ride a tunnel past its TLS material', async (t) => {
  const mesh = createMeshCerts();
  const app = await startEchoTcp();
  // api starts with a certificate that expires in 3 s, then rotates to a fresh one
  const shortLived = mesh.leaf('api', { ttlMs: 3000 });
  const { api, web, port, clients } = await tcpPair(t, mesh, app, shortLived);
  const tunnels = () =>
    (web.proxy.clusters() as Array<{ endpoints: Array<{ tunnels: number }> }>)[0]!.endpoints[0]!
      .tunnels;
  clients.push(await echoed(port, 'first'));
  await api.rotate(mesh.leaf('api'));
  await new Promise((r) => setTimeout(r, Math.max(0, shortLived.notAfter.getTime() - Date.now())));
  clients.push(await echoed(port, 'after expiry'));
  t.equal(tunnels(), 2, "past the peer certificate's expiry, a new tunnel is opened");
  let got = '';
  clients[0]!.on('data', (d: Buffer) => (got += d.toString()));
  clients[0]!.write('old');
  await waitFor('echo on the old tunnel', () => got === 'OLD', 5000);
  t.pass('the connection on the old tunnel goes on');
  clients[0]!.destroy();
  await waitFor('old tunnel closed', () => tunnels() === 1, 5000);
  t.pass('the old tunnel closes with its last stream');

  // this side's own certificate is replaced: new connections get a new tunnel too
  await web.rotate(mesh.leaf('web'));
  t.equal(tunnels(), 0, 'after a rotation no tunnel takes new streams');
  clients.push(await echoed(port, 'after rotation'));
  t.equal(tunnels(), 1, 'a new one is opened with the new certificate');
  got = '';
  clients[1]!.on('data', (d: Buffer) => (got += d.toString()));
  clients[1]!.write('still');
  await waitFor('echo on the pre-rotation tunnel', () => got === 'STILL', 5000);
  t.pass('the connection opened before the rotation goes on');
});

t.test('a peer that accepts a tunnel but never answers costs one connect timeout', async (t) => {
  const mesh = createMeshCerts();
  const leaf = mesh.cachedLeaf('api');
  const closed: boolean[] = [];
  // speaks TLS and selects remora-tcp/1, then reads and drops everything (a hung peer)
  const hung = tls.createServer(
    {
      cert: leaf.certPem,
      key: leaf.keyPem,
      ca: mesh.ca.certPem,
      requestCert: true,
      ALPNProtocols: ['remora-tcp/1'],
    },
    (s) => {
      const i = closed.push(false) - 1;
      s.on('error', () => {});
      s.on('close', () => (closed[i] = true));
      s.resume();
    },
  );
  hung.listen(0, '127.0.0.1');
  await once(hung, 'listening');
  const app = await startEchoTcp();
  const api = await startSidecar(mesh, 'api', {
    appPort: app.port,
    protocol: 'tcp',
    intentions: ALLOW,
  });
  const up = makeUpstream(mesh, 'api', [(hung.address() as AddressInfo).port, api.inboundPort], {
    protocol: 'tcp',
    loadBalancer: 'round_robin',
  });
  up.resilience.connectTimeoutMs = 300;
  const web = await startSidecar(mesh, 'web', { upstreams: [up] });
  const clients: net.Socket[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    await web.proxy.close();
    await api.proxy.close();
    app.close();
    hung.close();
  });
  const port = web.proxy.addresses().upstreams.api!.port;
  const started = Date.now();
  clients.push(await echoed(port, 'first'));
  const took = Date.now() - started;
  t.ok(took >= 300 && took < 3000, `answered by the other endpoint after the timeout (${took} ms)`);
  t.equal(app.conns, 1);
  await waitFor('the silent tunnel closed', () => closed.length === 1 && closed[0] === true, 5000);
  t.pass('the silent tunnel was closed');
  const text = await web.proxy.metrics.registry.metrics();
  t.match(text, /remora_proxy_retries_total\{upstream="api",reason="connect"\} 1/);
});

t.test('bytes held back by flow control still arrive after both sides finished', async (t) => {
  const mesh = createMeshCerts();
  const TOTAL = 32 * 1024 * 1024;
  let received = 0;
  let ended = false;
  // the app ends its side at once, and reads the upload only later
  const app = await startEchoTcp((s) => {
    s.pause();
    s.end();
    setTimeout(() => {
      s.on('data', (c: Buffer) => (received += c.length));
      s.on('end', () => (ended = true));
      s.resume();
    }, 500);
  });
  const { port, clients } = await tcpPair(t, mesh, app);
  const c = net.connect({ port, allowHalfOpen: true });
  clients.push(c);
  c.on('error', () => {});
  c.resume();
  c.end(Buffer.alloc(TOTAL, 7));
  await waitFor('the app read the whole upload', () => ended, 20_000);
  t.equal(received, TOTAL, 'every byte arrived');
});
