// lib/consul against a hostile Consul: a small fake HTTP server in this test answers with wrong
// types, non-JSON, broken index headers and huge bodies; the client must refuse each with a
// coded error (or a well-typed value) and never crash, hang or buffer without bound.
import t from 'tap';
import fc from 'fast-check';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createConsulClient, normalizeEntry, normalizeService } from '../../lib/consul/index.ts';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let handler: Handler = (_req, res) => res.end('[]');
const server = createServer((req, res) => handler(req, res));
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const address = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const client = createConsulClient({ address, timeoutMs: 5000 });
t.teardown(() => {
  client.close();
  server.closeAllConnections();
  server.close();
});

const json =
  (body: unknown, headers: Record<string, string> = {}): Handler =>
  (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && code.startsWith('REMORA_E_')
      ? code
      : `uncoded: ${(err as Error).message}`;
  }
}

t.test('the Consul response decoders give well-typed values for any JSON', async (t) => {
  fc.assert(
    fc.property(fc.jsonValue(), (raw) => {
      const s = normalizeService(raw);
      const e = normalizeEntry(raw);
      const nested = normalizeEntry({ Node: raw, Service: raw, Checks: raw });
      return (
        Array.isArray(s.Tags) &&
        typeof s.Meta === 'object' &&
        s.Meta !== null &&
        Array.isArray(e.Checks) &&
        typeof e.Node.Meta === 'object' &&
        Array.isArray(nested.Service.Tags)
      );
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 random JSON values decoded without a throw, arrays and objects always present');
});

t.test('non-JSON and error answers are refused with a code', async (t) => {
  handler = (_req, res) =>
    res.writeHead(200, { 'content-type': 'text/html' }).end('<html>proxy login</html>');
  t.equal(
    await codeOf(client.health.connect('api')),
    'REMORA_E_CONSUL_BAD_RESPONSE',
    'HTML for health/connect',
  );
  t.equal(
    await codeOf(client.agent.service('api-1')),
    'REMORA_E_CONSUL_BAD_RESPONSE',
    'HTML for agent/service',
  );
  handler = (_req, res) => res.writeHead(500).end('rpc error: No cluster leader');
  t.equal(await codeOf(client.health.connect('api')), 'REMORA_E_CONSUL_REQUEST_FAILED', '500');
  t.equal(await codeOf(client.kv.get('remora/ca')), 'REMORA_E_CONSUL_REQUEST_FAILED', '500 for kv');
  handler = (req) => req.socket.destroy();
  t.equal(
    await codeOf(client.health.connect('api')),
    'REMORA_E_CONSUL_UNREACHABLE',
    'a reset connection',
  );
});

t.test('entries with wrong field types come back typed or not at all', async (t) => {
  handler = json([
    { Node: 'n', Service: { ID: 7, Port: 'abc', Address: ['x'], Tags: 'a', Meta: 5 }, Checks: {} },
  ]);
  const r = await client.health.connect('api');
  t.equal(r.entries.length, 1);
  t.ok(Array.isArray(r.entries[0]!.Service.Tags), 'Tags is an array');
  t.ok(Array.isArray(r.entries[0]!.Checks), 'Checks is an array');
  t.equal(typeof r.entries[0]!.Service.Meta, 'object', 'Meta is an object');
});

t.test('a health answer that is not an array is refused, not read as "no endpoints"', async (t) => {
  handler = json({ not: 'an array' }, { 'x-consul-index': '5' });
  t.equal(await codeOf(client.health.connect('api')), 'REMORA_E_CONSUL_BAD_RESPONSE');
});

t.test('a non-numeric X-Consul-Index is refused or reset, never NaN', async (t) => {
  handler = json([], { 'x-consul-index': 'abc' });
  const code = await codeOf(
    client.health.connect('api').then((r) => {
      if (!Number.isFinite(r.index)) throw new Error(`index ${r.index}`);
    }),
  );
  t.ok(code === 'resolved' || code.startsWith('REMORA_E_CONSUL_'), `answer: ${code}`);
});

t.test(
  'a 64 MiB answer is refused with a code instead of being buffered',
  {
    todo: 'REMORA bug: lib/consul buffers any response body whole (got, no size bound) (lib/consul); a hostile Consul can make an agent or control hold arbitrary memory',
  },
  async (t) => {
    const chunk = Buffer.alloc(1024 * 1024, 0x20);
    let sent = 0;
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('[');
      const pump = (): void => {
        while (sent < 64) {
          sent++;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end(']');
      };
      pump();
    };
    const code = await codeOf(client.health.connect('api'));
    t.match(code, /^REMORA_E_CONSUL_/, `answer: ${code}`);
    t.ok(sent < 64, `the client stopped reading after ${sent} MiB`);
  },
);
