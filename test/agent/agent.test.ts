import t from 'tap';
import { connect, type Socket } from 'node:net';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAgent, readinessCheckId, registrationFor } from '../../agent/agent.ts';
import type { ConsulPort, ControlPort } from '../../agent/ports.ts';
import type { ProcessOps } from '../../agent/supervisor.ts';
import { decodeDefinitionFile } from '../../agent/definitions.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createClock, waitFor } from '../../lib/util/index.ts';
import { attachFrameChannel, type AgentFrame, type ProxyFrame } from '../../lib/proxy-api/index.ts';
import { createFakeCa } from './fakes.ts';

t.test('the registration carries the node meta, the sidecar and its readiness check', async (t) => {
  const def = decodeDefinitionFile(
    JSON.stringify({
      service: {
        name: 'web',
        id: 'web-1',
        port: 8080,
        meta: { team: 'a' },
        connect: {
          sidecar_service: {
            proxy: { upstreams: [{ destination_name: 'api', local_bind_port: 9191 }] },
          },
        },
      },
    }),
    'w.json',
  ).services[0]!;
  const body = registrationFor(def, {
    node: 'n1',
    sidecarPort: 21000,
    advertiseAddress: '10.0.0.5',
    checkTtlMs: 30000,
    ready: false,
  }) as {
    meta: Record<string, string>;
    connect: {
      sidecar_service: {
        id: string;
        port: number;
        address: string;
        meta: Record<string, string>;
        checks: unknown[];
        proxy: { destination_service_id: string; upstreams: unknown[] };
      };
    };
  };
  t.same(body.meta, { team: 'a', 'remora-node': 'n1' });
  const sc = body.connect.sidecar_service;
  t.equal(sc.id, 'web-1-sidecar-proxy');
  t.equal(sc.port, 21000);
  t.equal(sc.address, '10.0.0.5');
  t.same(sc.meta, { 'remora-node': 'n1' });
  t.same(sc.checks, [
    {
      CheckID: readinessCheckId('web-1'),
      Name: 'Remora proxy ready',
      TTL: '30s',
      Status: 'critical',
    },
  ]);
  t.equal(sc.proxy.destination_service_id, 'web-1');
  t.same(sc.proxy.upstreams[0], {
    destination_type: 'service',
    destination_name: 'api',
    local_bind_address: '127.0.0.1',
    local_bind_port: 9191,
    config: { protocol: 'tcp' },
  });
});

t.test(
  'a removed definition is stopped in order: fail readiness, deregister, drain, stop',
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'remora-agent-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const configDir = join(dir, 'services.d');
    await mkdir(configDir);
    await writeFile(
      join(configDir, 'api.json'),
      JSON.stringify({
        service: {
          name: 'api',
          id: 'api-1',
          port: 8081,
          connect: { sidecar_service: { port: 21001 } },
        },
      }),
    );
    const events: string[] = [];
    let consulFailures = 2;
    const consul: ConsulPort = {
      async registerService(def) {
        if (consulFailures-- > 0) throw new Error('connection refused');
        events.push(`register ${String(def.id)}`);
      },
      async deregisterService(id) {
        events.push(`deregister ${id}`);
      },
      async updateTtl(id, status) {
        events.push(`ttl ${id} ${status}`);
      },
      watchConnect: () => ({ stop: () => undefined }),
    };
    const clock = createClock();
    const ca = createFakeCa(clock.now());
    const control: ControlPort = {
      sign: async (req) => ca.sign(req.csr, clock.now()),
      roots: async () => ca.bundle,
      intentions: async () => ({
        revision: 1,
        defaultPolicy: 'allow',
        auditMode: false,
        intentions: [],
      }),
      onRootsChanged: () => () => undefined,
      onIntentionsChanged: () => () => undefined,
      close: async () => undefined,
    };
    const alive = new Set<number>();
    const socks: Socket[] = [];
    t.teardown(() => socks.forEach((s) => s.destroy()));
    const processes: ProcessOps = {
      spawn(req) {
        const pid = 60_000;
        alive.add(pid);
        events.push('spawn');
        setImmediate(() => {
          const sock = connect(req.socketPath);
          socks.push(sock);
          const ch = attachFrameChannel<AgentFrame, ProxyFrame>(sock, {
            decode: (v) => v as AgentFrame,
            onFrame(f) {
              if (f.type === 'snapshot') {
                ch.send({ v: 1, type: 'ack', version: f.snapshot.version, ok: true });
                ch.send({ v: 1, type: 'status', ready: true, appliedVersion: f.snapshot.version });
              } else if (f.type === 'drain') {
                events.push('drain');
                alive.delete(pid);
                sock.destroy();
              }
            },
          });
          sock.on('connect', () =>
            ch.send({
              v: 1,
              type: 'hello',
              instance: req.instance,
              pid,
              adminPort: 1,
              appliedVersion: null,
            }),
          );
        });
        return { pid, onExit: () => undefined };
      },
      isAlive: (pid) => alive.has(pid),
      isProxy: (pid) => alive.has(pid),
      signal: (pid, sig) => {
        events.push(`signal ${sig}`);
        alive.delete(pid);
      },
    };
    const agent = createAgent({
      settings: {
        datacenter: 'dc1',
        node: 'n1',
        configDir,
        dataDir: join(dir, 'data'),
        adminPortBase: 0,
        drainTimeoutMs: 500,
        intentionsRefreshMs: 60_000,
        proxyBindAddress: '127.0.0.1',
        advertiseAddress: '',
        sidecarPortMin: 21000,
        sidecarPortMax: 21255,
        checkTtlMs: 30_000,
        adoptTimeoutMs: 2000,
        tracing: { endpoint: '', sampleRatio: 1, headers: {} },
        watchDebounceMs: 0,
      },
      consul,
      control,
      processes,
      clock,
      random: () => 0.5,
      logger: createSilentLogger(),
    });
    t.teardown(() => agent.stop());
    await agent.start();
    await waitFor('api-1 registered despite two Consul failures', () =>
      events.includes('register api-1'),
    );
    await waitFor('the proxy ready and the check passing', () =>
      events.includes(`ttl ${readinessCheckId('api-1')} passing`),
    );
    const st = agent.status().instances[0]!;
    t.equal(st.proxy?.ready, true);
    t.match(st.certificate?.spiffeId, /\/svc\/api$/);

    events.length = 0;
    await rm(join(configDir, 'api.json'));
    await agent.reload();
    t.same(
      events,
      [`ttl ${readinessCheckId('api-1')} critical`, 'deregister api-1', 'drain'],
      'fail readiness → deregister → drain',
    );
    t.same(agent.status().instances, []);
  },
);
