// lib/consul against a hostile Consul: a small fake HTTP server in this test answers with wrong
// types, non-JSON, broken index headers and huge bodies; the client must refuse each with a
// coded error (or a well-typed value) and never crash, hang or buffer without bound. Huge answers
// are streamed by the server and refused by the client once they pass its bound.
import t from 'tap';
import fc from 'fast-check';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import {
  createConsulClient,
  DEFAULT_CONSUL_MAX_RESPONSE_BYTES,
  normalizeEntry,
  normalizeService,
  watchConnect,
} from '../../lib/consul/index.ts';
import { waitFor } from '../../lib/util/index.ts';

const MiB = 1024 * 1024;

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

/** A handler streaming `mib` MiB of JSON whitespace, counting what it managed to send. */
function huge(mib: number, counter: { sent: number }): Handler {
  const chunk = Buffer.alloc(1024 * 1024, 0x20);
  return (_req, res) => {
    counter.sent = 0;
    res.writeHead(200, { 'content-type': 'application/json', 'x-consul-index': '9' });
    res.write('[');
    const pump = (): void => {
      while (counter.sent < mib) {
        counter.sent++;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end(']');
    };
    res.on('close', () => res.off('drain', pump));
    pump();
  };
}

t.test('a 64 MiB answer is refused with a code instead of being buffered', async (t) => {
  const small = createConsulClient({ address, timeoutMs: 5000, maxResponseBytes: 4 * MiB });
  t.teardown(() => small.close());
  const counter = { sent: 0 };
  handler = huge(64, counter);
  for (const [what, call] of [
    ['health/connect (got)', () => small.health.connect('api')],
    ['health/service (npm consul package)', () => small.health.service('api')],
    ['agent/services', () => small.agent.services()],
    ['kv', () => small.kv.get('remora/ca')],
  ] as const) {
    const err = await (call() as Promise<unknown>).then(
      () => undefined,
      (e: unknown) => e as { code?: string; message: string },
    );
    t.equal(err?.code, 'REMORA_E_CONSUL_RESPONSE_TOO_LARGE', `${what}: refused with a code`);
    t.match(err?.message, /answered GET \/v1\/\S+ with more than 4 MiB.*maxResponseBytes/, what);
    t.ok(counter.sent < 16, `${what}: the client stopped reading after ${counter.sent} of 64 MiB`);
  }
});

t.test('the default bound is 64 MiB', async (t) => {
  t.equal(DEFAULT_CONSUL_MAX_RESPONSE_BYTES, 64 * MiB);
  // 64 MiB through loopback can take more than 5 s on a busy box: the bound is what is tested
  const client = createConsulClient({ address, timeoutMs: 60_000 });
  t.teardown(() => client.close());
  // an announced Content-Length over the bound is refused before any of the body is read
  let bodyBytesSent = -1;
  handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(65 * MiB) });
    res.write('[', () => (bodyBytesSent = 1));
  };
  t.equal(await codeOf(client.health.connect('api')), 'REMORA_E_CONSUL_RESPONSE_TOO_LARGE');
  t.equal(await codeOf(client.agent.checks()), 'REMORA_E_CONSUL_RESPONSE_TOO_LARGE');
  t.ok(bodyBytesSent <= 1, 'a declared 65 MiB body is refused from its head');
  // a chunked answer that grows past the bound is cut off there
  const counter = { sent: 0 };
  handler = huge(96, counter);
  t.equal(await codeOf(client.health.connect('api')), 'REMORA_E_CONSUL_RESPONSE_TOO_LARGE');
  t.ok(counter.sent < 96, `the client stopped reading after ${counter.sent} of 96 MiB`);
  // and the same client goes on working
  handler = json([], { 'x-consul-index': '3' });
  t.same(await client.health.connect('api'), { entries: [], index: 3 }, 'a sane answer next');
});

t.test('a watch survives huge answers: keeps its endpoints, retries, follows again', async (t) => {
  const small = createConsulClient({ address, timeoutMs: 5000, maxResponseBytes: 1 * MiB });
  const entry = (id: string): object => ({
    Node: { Node: 'node-a', Address: '127.0.0.1' },
    Service: { ID: id, Service: 'api', Port: 8080 },
    Checks: [],
  });
  let index = 10;
  handler = json([entry('api-1')], { 'x-consul-index': String(index) });
  const changes: string[][] = [];
  const errors: string[] = [];
  const w = watchConnect(small, 'api', {
    onChange: (es) => changes.push(es.map((e) => e.Service.ID)),
    onError: (e) => errors.push(e.code),
    random: () => 0,
    rateRefillMs: 20,
  });
  t.teardown(() => {
    w.stop();
    small.close();
  });
  await w.ready;
  t.same(changes, [['api-1']], 'the first answer is delivered');
  const counter = { sent: 0 };
  handler = huge(32, counter);
  await waitFor('three refused answers', () => errors.length >= 3, 20_000);
  t.same([...new Set(errors)], ['REMORA_E_CONSUL_RESPONSE_TOO_LARGE'], 'each one coded');
  t.same(
    w.current()?.map((e) => e.Service.ID),
    ['api-1'],
    'the last known endpoints are kept',
  );
  t.ok(counter.sent < 32, `none read whole (the last stopped after ${counter.sent} MiB)`);
  index = 11;
  handler = json([entry('api-1'), entry('api-2')], { 'x-consul-index': String(index) });
  await waitFor('the watch to follow the sane answer', () => changes.length === 2, 20_000);
  t.same(changes[1], ['api-1', 'api-2'], 'the watch delivers the next sane answer');
});
