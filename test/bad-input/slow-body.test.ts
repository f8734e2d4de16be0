// A client that sends a request head and part of its body, then stalls (a slow-body attack):
// the proxy must answer it or close the connection once its timeouts pass, on the outbound
// listener and on the inbound mTLS listener, rather than hold both connections forever.
import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { DEFAULT_RESILIENCE } from '../../lib/proxy-api/index.ts';
import { startTwoSidecars } from '../integration/proxy/mesh.ts';

// every timeout of the proxy set to 1 s or less; the test waits ten times as long
const m = await startTwoSidecars({
  upstream: {
    resilience: { ...DEFAULT_RESILIENCE, requestTimeoutMs: 1000, idleTimeoutMs: 1000 },
  },
  limits: { headerTimeoutMs: 500, clientIdleTimeoutMs: 1000 },
});
t.teardown(() => m.close());
const BOUND_MS = 10_000;

function stallMidBody(connect: () => net.Socket, ready: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect();
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(`still open after ${BOUND_MS} ms`);
    }, BOUND_MS);
    s.on(ready, () =>
      s.write('POST /slow HTTP/1.1\r\nHost: api\r\nContent-Length: 100\r\n\r\n0123456789'),
    );
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out.split('\r\n')[0] || 'closed without an answer');
    });
  });
}

t.test('a body stalled on the outbound listener is timed out', async (t) => {
  const r = await stallMidBody(() => net.connect(m.port, '127.0.0.1'), 'connect');
  t.not(r, `still open after ${BOUND_MS} ms`, `outcome: ${r}`);
});

t.test('a body stalled on the inbound mTLS listener is timed out', async (t) => {
  const web = m.mesh.leaf('web');
  const r = await stallMidBody(
    () =>
      tls.connect({
        host: '127.0.0.1',
        port: m.api.inboundPort,
        ca: [m.mesh.ca.certPem],
        cert: web.certPem,
        key: web.keyPem,
        checkServerIdentity: () => undefined,
      }),
    'secureConnect',
  );
  t.not(r, `still open after ${BOUND_MS} ms`, `outcome: ${r}`);
});
