// `remora proxy` as the agent runs it: a real process fed over a Unix socket.
import t from 'tap';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../../../lib/util/index.ts';
import {
  attachFrameChannel,
  decodeProxyFrame,
  type AgentFrame,
  type FrameChannel,
  type ProxyFrame,
} from '../../../lib/proxy-api/index.ts';
import { freePort } from '../../helpers/nats.ts';
import { REMORA_BIN } from '../../helpers/cli.ts';
import { createMeshCerts, makeSnapshot } from '../../helpers/mesh-certs.ts';
import { request, startEchoApp } from './mesh.ts';

const mesh = createMeshCerts();
const leaf = mesh.leaf('api');

function startProxy(args: string[]): { child: ChildProcess; stderr: () => string } {
  const child = spawn(process.execPath, [REMORA_BIN, 'proxy', ...args], {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return { child, stderr: () => err };
}

interface FakeAgent {
  frames: ProxyFrame[];
  channel(): FrameChannel<AgentFrame> | null;
  close(): Promise<void>;
}

async function startFakeAgent(path: string): Promise<FakeAgent> {
  const frames: ProxyFrame[] = [];
  let ch: FrameChannel<AgentFrame> | null = null;
  const socks = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    socks.add(sock);
    ch = attachFrameChannel<ProxyFrame, AgentFrame>(sock, {
      decode: decodeProxyFrame,
      onFrame: (f) => frames.push(f),
    });
  });
  server.listen(path);
  await once(server, 'listening');
  return {
    frames,
    channel: () => ch,
    close: () =>
      new Promise((r) => {
        for (const s of socks) s.destroy();
        server.close(() => r());
      }),
  };
}

t.test(
  'the proxy process follows its agent: hello, refused and applied snapshots, readiness, reconnect, drain',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'remora-proxy-'));
    const sock = join(dir, 'agent.sock');
    const app = await startEchoApp();
    const [adminPort, bindPort] = [await freePort(), await freePort()];
    let agent = await startFakeAgent(sock);
    const p = startProxy([
      '--instance',
      'api-1',
      '--agent-socket',
      sock,
      '--admin',
      String(adminPort),
      '--log-level',
      'warn',
    ]);
    t.teardown(async () => {
      if (p.child.exitCode === null) p.child.kill('SIGKILL');
      await agent.close();
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    });
    await waitFor('hello', () => agent.frames.find((f) => f.type === 'hello'), 30_000);
    t.match(
      agent.frames.find((f) => f.type === 'hello'),
      { instance: 'api-1', adminPort, appliedVersion: null },
    );

    const good = makeSnapshot(mesh, leaf, { version: 1, bindPort, appPort: app.port });
    const bad = { ...good, version: 2, inbound: { ...good.inbound, protocol: 'smtp' } };
    agent.channel()!.send({ v: 1, type: 'snapshot', snapshot: bad as never });
    await waitFor('refusal', () => agent.frames.find((f) => f.type === 'ack' && !f.ok), 10_000);
    t.match(
      agent.frames.find((f) => f.type === 'ack'),
      { version: 2, ok: false, error: { code: 'REMORA_E_PROXY_SNAPSHOT_INVALID' } },
    );
    t.equal(
      (await request(`http://127.0.0.1:${adminPort}/ready`)).status,
      503,
      'not ready without a snapshot',
    );

    agent.channel()!.send({ v: 1, type: 'snapshot', snapshot: good });
    await waitFor('ack ok', () => agent.frames.find((f) => f.type === 'ack' && f.ok), 10_000);
    await waitFor(
      'ready status',
      () => agent.frames.find((f) => f.type === 'status' && f.ready && f.appliedVersion === 1),
      10_000,
    );
    t.equal((await request(`http://127.0.0.1:${adminPort}/ready`)).status, 200);
    const config = await request(`http://127.0.0.1:${adminPort}/config`);
    t.notMatch(config.body, /PRIVATE KEY/, '/config never shows the key');
    t.match(config.body, /\[redacted\]/);
    t.match(
      (await request(`http://127.0.0.1:${adminPort}/metrics`)).body,
      /remora_proxy_certificate_expiry_timestamp_seconds\{kind="leaf",index="0"\}/,
    );
    t.match(JSON.parse((await request(`http://127.0.0.1:${adminPort}/certs`)).body), {
      spiffeId: leaf.spiffeId,
    });

    // the agent goes away: the proxy keeps serving and comes back when the agent does
    await agent.close();
    t.equal(
      (await request(`http://127.0.0.1:${adminPort}/ready`)).status,
      200,
      'still ready with the last good snapshot',
    );
    agent = await startFakeAgent(sock);
    await waitFor('hello again', () => agent.frames.find((f) => f.type === 'hello'), 30_000);
    t.match(
      agent.frames.find((f) => f.type === 'hello'),
      { appliedVersion: 1 },
      'reports what it still serves',
    );

    agent.channel()!.send({ v: 1, type: 'drain', deadlineMs: 2000 });
    const [code] = (await once(p.child, 'exit')) as [number];
    t.equal(code, 0, 'drained and exited cleanly');
  },
);

t.test('with a static snapshot the proxy serves it and exits cleanly on SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'remora-proxy-'));
  const app = await startEchoApp();
  const [adminPort, bindPort] = [await freePort(), await freePort()];
  const file = join(dir, 'snapshot.json');
  writeFileSync(file, JSON.stringify(makeSnapshot(mesh, leaf, { bindPort, appPort: app.port })));
  const p = startProxy([
    '--static-config',
    file,
    '--admin',
    String(adminPort),
    '--log-level',
    'warn',
  ]);
  t.teardown(async () => {
    if (p.child.exitCode === null) p.child.kill('SIGKILL');
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await waitFor(
    'ready',
    async () =>
      (await request(`http://127.0.0.1:${adminPort}/ready`).catch(() => ({ status: 0 }))).status ===
      200,
    30_000,
  );
  p.child.kill('SIGTERM');
  const [code] = (await once(p.child, 'exit')) as [number];
  t.equal(code, 0, p.stderr());
});

t.test(
  'a static snapshot that fails validation stops the proxy with the field named',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'remora-proxy-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'snapshot.json');
    writeFileSync(
      file,
      JSON.stringify({
        ...makeSnapshot(mesh, leaf),
        tracing: { endpoint: '', sampleRatio: 3, headers: {} },
      }),
    );
    const p = startProxy(['--static-config', file, '--admin', '0']);
    const [code] = (await once(p.child, 'exit')) as [number];
    t.not(code, 0);
    t.match(p.stderr(), /REMORA_E_PROXY_SNAPSHOT_INVALID: snapshot field `tracing.sampleRatio`/);
  },
);
