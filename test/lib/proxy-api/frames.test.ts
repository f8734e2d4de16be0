import t from 'tap';
import net from 'node:net';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FrameDecoder,
  attachFrameChannel,
  decodeAgentFrame,
  decodeProxyFrame,
  encodeFrame,
  type AgentFrame,
  type ProxyFrame,
} from '../../../lib/proxy-api/index.ts';
import { waitFor } from '../../../lib/util/index.ts';
import { createMeshCerts, makeSnapshot } from '../../helpers/mesh-certs.ts';

t.test('a frame is one JSON line and decodes back across arbitrary chunk boundaries', async (t) => {
  const frames: ProxyFrame[] = [
    { v: 1, type: 'hello', instance: 'api-1', pid: 42, adminPort: 19000, appliedVersion: null },
    { v: 1, type: 'ack', version: 3, ok: true },
    { v: 1, type: 'status', ready: true, appliedVersion: 3 },
  ];
  const bytes = Buffer.concat(frames.map(encodeFrame));
  t.equal(bytes.toString().split('\n').length, 4);
  for (const step of [1, 2, 7, 64, bytes.length]) {
    const d = new FrameDecoder();
    const out: unknown[] = [];
    for (let i = 0; i < bytes.length; i += step) out.push(...d.push(bytes.subarray(i, i + step)));
    t.same(out.map(decodeProxyFrame), frames, `chunks of ${step} bytes`);
    t.equal(d.pendingBytes, 0);
  }
});

t.test('an oversized frame is refused with a coded error, complete or still growing', async (t) => {
  const d = new FrameDecoder({ maxFrameBytes: 16 });
  t.throws(() => d.push(Buffer.from('{"v":1,"type":"ping","pad":"xxxxxxxx"}\n')), {
    code: 'REMORA_E_PROXY_FRAME_TOO_LARGE',
  });
  const g = new FrameDecoder({ maxFrameBytes: 16 });
  g.push(Buffer.from('{"v":1,'));
  t.throws(() => g.push(Buffer.from('"type":"ping","x":1')), {
    code: 'REMORA_E_PROXY_FRAME_TOO_LARGE',
  });
});

t.test('a line that is not JSON is a coded error and later frames still decode', async (t) => {
  const d = new FrameDecoder();
  t.throws(() => d.push(Buffer.from('not json\n')), { code: 'REMORA_E_PROXY_FRAME_INVALID' });
  t.same(d.push(Buffer.from('{"v":1,"type":"ping"}\n')), [{ v: 1, type: 'ping' }]);
});

t.test('frames with a wrong version, unknown type or bad fields are refused by code', async (t) => {
  for (const bad of [
    { v: 2, type: 'ping' },
    { v: 1, type: 'reboot' },
    { v: 1, type: 'drain', deadlineMs: -1 },
    { v: 1, type: 'drain' },
    [1, 2],
    null,
  ]) {
    t.throws(
      () => decodeAgentFrame(bad),
      { code: 'REMORA_E_PROXY_FRAME_INVALID' },
      JSON.stringify(bad),
    );
  }
  for (const bad of [
    { v: 1, type: 'hello', instance: '', pid: 1, adminPort: 1, appliedVersion: null },
    { v: 1, type: 'ack', version: 1, ok: false },
    { v: 1, type: 'status', ready: 'yes', appliedVersion: null },
  ]) {
    t.throws(
      () => decodeProxyFrame(bad),
      { code: 'REMORA_E_PROXY_FRAME_INVALID' },
      JSON.stringify(bad),
    );
  }
  t.same(decodeAgentFrame({ v: 1, type: 'drain', deadlineMs: 5000 }), {
    v: 1,
    type: 'drain',
    deadlineMs: 5000,
  });
});

t.test(
  'a channel carries frames both ways over a Unix socket and reports invalid ones',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'remora-frames-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'agent.sock');
    const mesh = createMeshCerts();
    const leaf = mesh.leaf('api');
    const snapshot = makeSnapshot(mesh, leaf, { version: 7 });

    const atAgent: ProxyFrame[] = [];
    const server = net.createServer((sock) => {
      const ch = attachFrameChannel<ProxyFrame, AgentFrame>(sock, {
        decode: decodeProxyFrame,
        onFrame: (f) => {
          atAgent.push(f);
          if (f.type === 'hello') {
            sock.write('{"v":1,"type":"snapshot","snapshot":{"version":8}}\n');
            ch.send({ v: 1, type: 'snapshot', snapshot });
          }
        },
      });
    });
    server.listen(path);
    await once(server, 'listening');
    t.teardown(() => server.close());

    const atProxy: AgentFrame[] = [];
    const invalid: Array<{ code: string; version: unknown }> = [];
    const sock = net.connect(path);
    const ch = attachFrameChannel<AgentFrame, ProxyFrame>(sock, {
      decode: decodeAgentFrame,
      onFrame: (f) => atProxy.push(f),
      onInvalid: (err, raw) =>
        invalid.push({
          code: err.code,
          version: (raw as { snapshot?: { version?: unknown } })?.snapshot?.version,
        }),
    });
    await once(sock, 'connect');
    ch.send({
      v: 1,
      type: 'hello',
      instance: 'api-1',
      pid: process.pid,
      adminPort: 1,
      appliedVersion: null,
    });
    await waitFor('snapshot at the proxy', () => atProxy.length === 1, 5000);
    t.same(invalid, [{ code: 'REMORA_E_PROXY_SNAPSHOT_INVALID', version: 8 }]);
    t.equal(atProxy[0]?.type === 'snapshot' && atProxy[0].snapshot.version, 7);
    t.same(atProxy[0], { v: 1, type: 'snapshot', snapshot });
    t.equal(atAgent[0]?.type, 'hello');
    ch.close();
    await waitFor('channel closed', () => ch.closed, 5000);
    t.notOk(ch.send({ v: 1, type: 'pong' }));
  },
);
