import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createConsulClient } from '../../../lib/consul/index.ts';
import { startTestConsul } from '../../helpers/devconsul.ts';

/** An HTTPS front (self-signed for 127.0.0.1) that forwards to the embedded catalog. */
async function tlsFront(t: Test, backend: string): Promise<{ url: string; caFile: string }> {
  const dir = t.testdir({});
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=consul',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      keyFile,
      '-out',
      certFile,
    ],
    { stdio: 'ignore' },
  );
  const seen: string[] = [];
  const server = createServer(
    { key: readFileSync(keyFile), cert: readFileSync(certFile) },
    (req, res) => {
      seen.push(String(req.headers['x-consul-token'] ?? ''));
      const up = request(
        `${backend}${req.url ?? '/'}`,
        { method: req.method, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      up.on('error', () => res.destroy());
      req.pipe(up);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  (t.context as { tokens?: string[] }).tokens = seen;
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, caFile: certFile };
}

t.test('over HTTPS the CA file and token reach both the npm package and got paths', async (t) => {
  const dc = await startTestConsul(t);
  const front = await tlsFront(t, dc.url);
  const c = createConsulClient({ address: front.url, caFile: front.caFile, token: 'tok-1' });
  t.teardown(() => c.close());
  await c.agent.registerService({ name: 'secure', port: 443 }); // got
  t.ok((await c.agent.services()).secure, 'npm consul package over TLS');
  t.same((await c.health.connect('secure')).entries, [], 'got health/connect over TLS');
  const tokens = (t.context as { tokens?: string[] }).tokens ?? [];
  t.ok(tokens.length >= 3, 'the front saw the requests');
  t.ok(
    tokens.every((tok) => tok === 'tok-1'),
    'every request carried the token',
  );
});

t.test('without the CA the certificate is refused and reported as unreachable', async (t) => {
  const dc = await startTestConsul(t);
  const front = await tlsFront(t, dc.url);
  const c = createConsulClient({ address: front.url, timeoutMs: 2000 });
  t.teardown(() => c.close());
  await t.rejects(c.agent.services(), { code: 'REMORA_E_CONSUL_UNREACHABLE' });
  await t.rejects(c.agent.registerService({ name: 'x' }), { code: 'REMORA_E_CONSUL_UNREACHABLE' });
});
