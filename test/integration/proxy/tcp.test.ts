import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { waitFor } from '../../../lib/util/index.ts';
import { createMeshCerts, makeUpstream } from '../../helpers/mesh-certs.ts';
import { startEchoTcp, startSidecar } from './mesh.ts';

/** A sidecar for `service` whose one upstream is api, over tcp, at `port`. */
function tcpCaller(mesh: ReturnType<typeof createMeshCerts>, service: string, port: number) {
  return startSidecar(mesh, service, {
    upstreams: [
      makeUpstream(mesh, 'api', [port], { protocol: 'tcp', loadBalancer: 'round_robin' }),
    ],
  });
}

t.test(
  'TCP crosses two sidecars over mTLS both ways, and a denied source is cut off',
  async (t) => {
    const mesh = createMeshCerts();
    const app = await startEchoTcp();
    const api = await startSidecar(mesh, 'api', {
      appPort: app.port,
      protocol: 'tcp',
      intentions: {
        defaultPolicy: 'deny',
        intentions: [{ source: 'web', destination: 'api', action: 'allow' }],
      },
    });
    const web = await tcpCaller(mesh, 'web', api.inboundPort);
    const evil = await tcpCaller(mesh, 'evil', api.inboundPort);
    t.teardown(async () => {
      await web.proxy.close();
      await evil.proxy.close();
      await api.proxy.close();
      app.close();
    });

    const c = net.connect(web.proxy.addresses().upstreams.api!.port, '127.0.0.1');
    t.teardown(() => {
      c.destroy();
    });
    let got = '';
    c.on('data', (d: Buffer) => (got += d.toString()));
    c.write('hello ');
    await waitFor('first echo', () => got === 'HELLO ', 5000);
    c.write('mesh');
    await waitFor('second echo', () => got === 'HELLO MESH', 5000);
    t.pass('bytes flow both ways through two sidecars');

    const d = net.connect(evil.proxy.addresses().upstreams.api!.port, '127.0.0.1');
    d.on('error', () => {});
    d.write('let me in');
    let evilGot = '';
    d.on('data', (b: Buffer) => (evilGot += b.toString()));
    await once(d, 'close');
    t.equal(evilGot, '', 'a denied source gets nothing back and is closed');
    t.equal(app.conns, 1, 'the denied connection never reached the app');
    const text = await api.proxy.metrics.registry.metrics();
    t.match(text, /remora_proxy_intention_denials_total\{layer="l4",enforced="true"\} 1/);
  },
);

t.test(
  'an intention with L7 permissions denies TCP connections, since their requests cannot be checked',
  async (t) => {
    const mesh = createMeshCerts();
    const app = await startEchoTcp();
    const api = await startSidecar(mesh, 'api', {
      appPort: app.port,
      protocol: 'tcp',
      intentions: {
        defaultPolicy: 'deny',
        intentions: [
          {
            source: 'web',
            destination: 'api',
            permissions: [
              { action: 'deny', http: { pathPrefix: '/admin' } },
              { action: 'allow', http: { pathPrefix: '/' } },
            ],
          },
        ],
      },
    });
    const web = await tcpCaller(mesh, 'web', api.inboundPort);
    t.teardown(async () => {
      await web.proxy.close();
      await api.proxy.close();
      app.close();
    });
    const c = net.connect(web.proxy.addresses().upstreams.api!.port, '127.0.0.1');
    c.on('error', () => {});
    let got = '';
    c.on('data', (b: Buffer) => (got += b.toString()));
    c.write('GET /admin HTTP/1.1\r\nHost: api\r\n\r\n');
    await once(c, 'close');
    t.equal(got, '', 'closed without an answer');
    t.equal(app.conns, 0, 'the app never saw the connection');
    const text = await api.proxy.metrics.registry.metrics();
    t.match(text, /remora_proxy_intention_denials_total\{layer="l4",enforced="true"\} 1/);
  },
);
