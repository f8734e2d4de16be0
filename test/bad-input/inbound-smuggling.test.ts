// Request smuggling aimed at a sidecar's inbound mTLS listener by a peer holding a valid mesh
// certificate (a compromised host), and bodies over the retry buffer bound: the hidden request
// never reaches the app, each refusal is coded, and a large body arrives exactly once.
import t from 'tap';
import tls from 'node:tls';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DEFAULT_RESILIENCE } from '../../lib/proxy-api/index.ts';
import { request, startEchoApp, startTwoSidecars } from '../integration/proxy/mesh.ts';

const seen: { url: string; size: number }[] = [];
const app = await startEchoApp('api', (req: IncomingMessage, res: ServerResponse) => {
  let size = 0;
  req.on('data', (d: Buffer) => (size += d.length));
  req.on('end', () => {
    seen.push({ url: req.url ?? '', size });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ size }));
  });
});
const m = await startTwoSidecars({ app });
t.teardown(() => m.close());
const web = m.mesh.leaf('web');

/** Writes raw bytes on an mTLS connection to api's inbound listener as `web`; collects the answer. */
function rawTls(bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: '127.0.0.1',
      port: m.api.inboundPort,
      ca: [m.mesh.ca.certPem],
      cert: web.certPem,
      key: web.keyPem,
      checkServerIdentity: () => undefined,
    });
    let out = '';
    const timer = setTimeout(() => s.destroy(), 5000);
    s.on('secureConnect', () => s.write(bytes));
    s.on('data', (c: Buffer) => (out += c.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

const hidden = 'GET /smuggled HTTP/1.1\r\nHost: api\r\n\r\n';
const attacks: [string, string][] = [
  [
    'Content-Length with Transfer-Encoding (CL.TE)',
    `POST /a HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${hidden}`,
  ],
  [
    'two different Content-Lengths',
    `POST /a HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}`,
  ],
  [
    'a Transfer-Encoding folded with obs-fold',
    `POST /a HTTP/1.1\r\nHost: api\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n${hidden}`,
  ],
  [
    'a negative chunk size',
    `POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n${hidden}\r\n0\r\n\r\n`,
  ],
  [
    'a chunk size overflowing 64 bits',
    `POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n${hidden}\r\n0\r\n\r\n`,
  ],
  [
    'a tab-obfuscated Transfer-Encoding',
    `POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding:\tchunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${hidden}`,
  ],
];

for (const [what, bytes] of attacks)
  t.test(`a peer sending ${what} is refused with a code and smuggles nothing`, async (t) => {
    const before = seen.length;
    const out = await rawTls(bytes);
    t.match(out, /^HTTP\/1\.1 (4\d\d|5\d\d) /, 'refused with a 4xx/5xx');
    t.match(out, /x-remora-error: REMORA_E_PROXY_/i, 'the refusal carries a code');
    t.notOk(
      seen.slice(before).some((s) => s.url === '/smuggled'),
      'the hidden request never reached the app',
    );
  });

t.test('the proxy keeps serving after every attack', async (t) => {
  t.equal((await request(m.url('/after'))).status, 200);
  t.notOk(
    seen.some((s) => s.url === '/smuggled'),
    'no smuggled request reached the app at all',
  );
});

t.test('a POST body four times the retry buffer bound arrives whole, exactly once', async (t) => {
  const size = DEFAULT_RESILIENCE.maxBufferedBodyBytes * 4;
  const before = seen.length;
  const res = await request(m.url('/big'), {
    method: 'POST',
    body: Buffer.alloc(size, 0x61),
    headers: { 'content-type': 'application/octet-stream' },
  });
  t.equal(res.status, 200);
  const got = seen.slice(before).filter((s) => s.url === '/big');
  t.equal(got.length, 1, 'delivered once');
  t.equal(got[0]?.size, size, `all ${size} bytes arrived`);
});
