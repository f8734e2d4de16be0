// HTTP/2 between two Remora sidecars (docs/proxy.md, "HTTP/2 between sidecars"): streams ride
// shared remora-h2/1 connections, a reader that stops holds back only its own stream, and a
// peer that does not speak the protocol gets node:http2 over mTLS. Real sidecars, real mTLS,
// an h2c app. (Every other HTTP/2 and gRPC integration test runs over the tunnel too.)
import t from 'tap';
import http2 from 'node:http2';
import { startH2Pair, type TwoSidecars } from './mesh.ts';

const BIG = 8 * 1024 * 1024;

function answerBig(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
  stream.respond({ ':status': 200 });
  if (headers[':path'] === '/big') stream.end(Buffer.alloc(BIG, 'x'));
  else stream.end('small');
}

/** The mTLS connections web's sidecar keeps to api's for the upstream (from /clusters). */
function tunnels(m: TwoSidecars): number {
  const c = m.web.proxy.clusters() as Array<{ endpoints: Array<{ tunnels: number }> }>;
  return c[0]!.endpoints[0]!.tunnels;
}

function get(
  client: http2.ClientHttp2Session,
  path: string,
): { response: Promise<number>; body: Promise<number>; stream: http2.ClientHttp2Stream } {
  const stream = client.request({ ':path': path });
  const response = new Promise<number>((resolve, reject) => {
    stream.on('response', (h) => resolve(Number(h[':status'])));
    stream.on('error', reject);
  });
  const body = new Promise<number>((resolve, reject) => {
    let n = 0;
    stream.on('data', (c: Buffer) => (n += c.length));
    stream.on('end', () => resolve(n));
    stream.on('error', reject);
  });
  return { response, body, stream };
}

t.test(
  'streams share one mTLS connection, and a stalled reader holds back only its own',
  async (t) => {
    const m = await startH2Pair(answerBig);
    t.teardown(() => m.close());
    // two callers, two sessions to web's sidecar: one stops reading, the other goes on
    const slowClient = http2.connect(`http://127.0.0.1:${m.port}`);
    const client = http2.connect(`http://127.0.0.1:${m.port}`);
    t.teardown(() => {
      slowClient.destroy();
      client.close();
    });
    const slow = get(slowClient, '/big');
    t.equal(await slow.response, 200);
    slow.stream.pause();
    for (let i = 0; i < 5; i++) {
      const s = get(client, '/small');
      t.equal(await s.body, 5, `call ${i + 1} answered while the big answer waits for its reader`);
    }
    t.equal(tunnels(m), 1, 'over one remora-h2/1 connection between the sidecars');
    slow.stream.resume();
    t.equal(await slow.body, BIG, 'the held answer arrives whole once read');
  },
);

t.test('a peer that does not speak remora-h2/1 gets node:http2 over mTLS', async (t) => {
  const m = await startH2Pair(answerBig);
  t.teardown(() => m.close());
  // an api sidecar whose inbound says http selects h2, as an older Remora or another proxy does
  await m.api.apply({
    ...m.api.snapshot,
    version: m.api.snapshot.version + 1,
    inbound: { ...m.api.snapshot.inbound, protocol: 'http' },
  });
  const client = http2.connect(`http://127.0.0.1:${m.port}`);
  t.teardown(() => client.close());
  for (let i = 0; i < 3; i++) t.equal(await get(client, '/small').body, 5);
  t.equal(tunnels(m), 0, 'no tunnel: a node:http2 session carried them');
});
