// A two-sidecar mesh in one process for integration tests: real mTLS, real sockets on port 0.
//   client → web's outbound listener → mTLS → api's inbound listener → api app (node:http)
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createSilentLogger } from '../../../lib/log/index.ts';
import type { ProxySnapshot, UpstreamConfig } from '../../../lib/proxy-api/index.ts';
import { createProxy, type Proxy } from '../../../proxy/proxy.ts';
import type { HttpLimits } from '../../../proxy/env.ts';
import {
  createMeshCerts,
  makeSnapshot,
  makeUpstream,
  type MeshCerts,
  type MeshLeaf,
} from '../../helpers/mesh-certs.ts';

export interface App {
  server: http.Server;
  port: number;
  hits: number;
  close(): Promise<void>;
}

/** An echo app: answers JSON with what it received (method, url, selected headers, body). */
export async function startEchoApp(name = 'api', handler?: http.RequestListener): Promise<App> {
  const app: App = { server: http.createServer(), port: 0, hits: 0, close: async () => {} };
  app.server.on('request', (req, res) => {
    app.hits++;
    if (handler) return handler(req, res);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({
        app: name,
        method: req.method,
        url: req.url,
        xfcc: req.headers['x-forwarded-client-cert'] ?? null,
        body: Buffer.concat(chunks).toString(),
        trailers: req.trailers,
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
  });
  const sockets = new Set<net.Socket>();
  app.server.on('connection', (sock: net.Socket) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  app.server.listen(0, '127.0.0.1');
  await once(app.server, 'listening');
  app.port = (app.server.address() as AddressInfo).port;
  app.close = () =>
    new Promise((r) => {
      app.server.close(() => r());
      for (const sock of sockets) sock.destroy();
    });
  return app;
}

export interface TcpApp {
  port: number;
  /** Connections accepted so far. */
  conns: number;
  close(): void;
}

/**
 * A TCP app that answers each chunk upper-cased. `onConnection` replaces that behaviour (the
 * socket is half-open capable: the app decides when to end its side).
 */
export async function startEchoTcp(onConnection?: (s: net.Socket) => void): Promise<TcpApp> {
  const sockets = new Set<net.Socket>();
  const st: TcpApp = { port: 0, conns: 0, close: () => {} };
  const server = net.createServer({ allowHalfOpen: onConnection !== undefined }, (s) => {
    st.conns++;
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    if (onConnection) return onConnection(s);
    s.on('data', (c: Buffer) => s.write(c.toString().toUpperCase()));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  st.port = (server.address() as AddressInfo).port;
  st.close = () => {
    server.close();
    for (const s of sockets) s.destroy();
  };
  return st;
}

export interface Sidecar {
  proxy: Proxy;
  leaf: MeshLeaf;
  snapshot: ProxySnapshot;
  inboundPort: number;
  apply(s: ProxySnapshot): Promise<void>;
  /** Replaces its certificate and key with `next` in a new snapshot, as a renewal does. */
  rotate(next: MeshLeaf): Promise<void>;
}

export async function startSidecar(
  mesh: MeshCerts,
  service: string,
  o: {
    appPort?: number;
    protocol?: ProxySnapshot['inbound']['protocol'];
    upstreams?: UpstreamConfig[];
    intentions?: Partial<ProxySnapshot['intentions']>;
    leaf?: MeshLeaf;
    limits?: Partial<HttpLimits>;
    /** The balancers' randomness (P2C picks), for deterministic choices. */
    random?: () => number;
  } = {},
): Promise<Sidecar> {
  const leaf = o.leaf ?? mesh.cachedLeaf(service);
  const proxy = createProxy({
    logger: createSilentLogger(),
    ...(o.limits ? { limits: o.limits } : {}),
    ...(o.random ? { random: o.random } : {}),
  });
  const snapshot = makeSnapshot(mesh, leaf, {
    ...(o.appPort !== undefined ? { appPort: o.appPort } : {}),
    ...(o.protocol ? { protocol: o.protocol } : {}),
    ...(o.upstreams ? { upstreams: o.upstreams } : {}),
    ...(o.intentions ? { intentions: o.intentions } : {}),
  });
  await proxy.apply(snapshot);
  const sc: Sidecar = {
    proxy,
    leaf,
    snapshot,
    inboundPort: proxy.addresses().inbound!.port,
    async apply(s) {
      await proxy.apply(s);
      sc.snapshot = s;
    },
    rotate(next) {
      return sc.apply({
        ...sc.snapshot,
        version: sc.snapshot.version + 1,
        tls: { ...sc.snapshot.tls, certPem: next.certPem, keyPem: next.keyPem },
      });
    },
  };
  return sc;
}

/**
 * An h2c app that answers every stream 200 with `answer(path)`, behind its own `http2` sidecar
 * for `service`.
 */
export async function startH2AppSidecar(
  mesh: MeshCerts,
  service: string,
  answer: (path: string) => string,
): Promise<{ app: http2.Http2Server; sc: Sidecar }> {
  const app = http2.createServer();
  app.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(answer(String(headers[':path'])));
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const sc = await startSidecar(mesh, service, {
    appPort: (app.address() as AddressInfo).port,
    protocol: 'http2',
  });
  return { app, sc };
}

/** One CA and one leaf per service for every test in a file (each file is its own process). */
let sharedMesh: MeshCerts | null = null;

export interface TwoSidecars {
  mesh: MeshCerts;
  app: App;
  api: Sidecar;
  web: Sidecar;
  /** web's outbound listener for api */
  port: number;
  url(path: string): string;
  close(): Promise<void>;
}

export async function startTwoSidecars(
  o: {
    mesh?: MeshCerts;
    protocol?: ProxySnapshot['inbound']['protocol'];
    intentions?: Partial<ProxySnapshot['intentions']>;
    app?: App;
    upstream?: Partial<UpstreamConfig>;
    limits?: Partial<HttpLimits>;
  } = {},
): Promise<TwoSidecars> {
  const mesh = o.mesh ?? (sharedMesh ??= createMeshCerts());
  const protocol = o.protocol ?? 'http';
  const app = o.app ?? (await startEchoApp());
  const limits = o.limits ? { limits: o.limits } : {};
  const api = await startSidecar(mesh, 'api', {
    appPort: app.port,
    protocol,
    ...limits,
    ...(o.intentions ? { intentions: o.intentions } : {}),
  });
  const web = await startSidecar(mesh, 'web', {
    ...limits,
    upstreams: [makeUpstream(mesh, 'api', [api.inboundPort], { protocol, ...o.upstream })],
  });
  const port = web.proxy.addresses().upstreams.api!.port;
  return {
    mesh,
    app,
    api,
    web,
    port,
    url: (p) => `http://127.0.0.1:${port}${p}`,
    async close() {
      await web.proxy.close();
      await api.proxy.close();
      await app.close();
    },
  };
}

/**
 * An `http2` pair whose api sidecar forwards to an h2c app that handles each stream with
 * `onStream`; `close` stops the app too.
 */
export async function startH2Pair(
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): Promise<TwoSidecars> {
  const h2app = http2.createServer();
  h2app.on('stream', onStream);
  h2app.listen(0, '127.0.0.1');
  await once(h2app, 'listening');
  const m = await startTwoSidecars({ protocol: 'http2' });
  await m.api.apply({
    ...m.api.snapshot,
    version: m.api.snapshot.version + 1,
    inbound: { ...m.api.snapshot.inbound, localAppPort: (h2app.address() as AddressInfo).port },
  });
  return {
    ...m,
    async close() {
      await m.close();
      h2app.close();
    },
  };
}

/** One HTTP/1.1 request with node:http (a fresh connection unless an agent is given). */
export function request(
  url: string,
  o: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    agent?: http.Agent;
  } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: o.method ?? 'GET', headers: o.headers, agent: o.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(o.body);
  });
}

/** Sends raw bytes on a fresh TCP connection and collects everything until the peer closes. */
export function rawExchange(
  port: number,
  bytes: string | Buffer,
  o: { endAfterWrite?: boolean } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (c: Buffer) => (out += c.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve(out));
    s.write(bytes);
    if (o.endAfterWrite) s.end();
  });
}
