// One host on loopback for the fault scenarios, built on the agent's integration harness: web's
// proxy is the client side (the load enters its outbound `api` listener), two recorder apps
// stand behind api-1's and api-2's proxies.
import type { Test } from 'tap';
import { freePort } from '../helpers/nats.ts';
import {
  startMesh,
  waitFor,
  webDefinition,
  type Mesh,
  type Proc,
} from '../integration/agent/harness.ts';
import {
  startRecorder,
  summarize,
  type FaultSummary,
  type Outcome,
  type Recorder,
} from './load.ts';

export interface FaultMesh {
  mesh: Mesh;
  agent: Proc;
  recorders: [Recorder, Recorder];
  /** web's outbound listener for `api` (HTTP, round robin over both api instances). */
  url: string;
  startAgent(): Proc;
}

type Tap = Test;

function apiDef(instance: 'api-1' | 'api-2', appPort: number, sidecarPort: number): object {
  return {
    service: {
      name: 'api',
      id: instance,
      port: appPort,
      connect: {
        sidecar_service: { port: sidecarPort, proxy: { config: { protocol: 'http' } } },
      },
    },
  };
}

export async function startFaultMesh(
  t: Tap,
  agentArgs: string[] = [],
  agentEnv: Record<string, string> = {},
  controlEnv: Record<string, string> = {},
): Promise<FaultMesh> {
  const mesh = await startMesh(t, { controlEnv });
  const recorders: [Recorder, Recorder] = [
    await startRecorder('api-1', await freePort()),
    await startRecorder('api-2', await freePort()),
  ];
  t.teardown(async () => {
    for (const r of recorders) await r.kill('SIGTERM');
  });
  await mesh.writeDefinition('web.json', webDefinition(mesh.ports));
  await mesh.writeDefinition(
    'api-1.json',
    apiDef('api-1', recorders[0].port, mesh.ports.api1Sidecar),
  );
  await mesh.writeDefinition(
    'api-2.json',
    apiDef('api-2', recorders[1].port, mesh.ports.api2Sidecar),
  );
  const agents: Proc[] = [];
  t.teardown(async () => {
    for (const a of agents) await a.stop('SIGTERM', 10_000);
  });
  const fm: FaultMesh = {
    mesh,
    agent: null as unknown as Proc,
    recorders,
    url: `http://127.0.0.1:${mesh.ports.apiLocal}/orders`,
    startAgent() {
      const a = mesh.startAgent(agentEnv, agentArgs);
      agents.push(a);
      fm.agent = a;
      return a;
    },
  };
  fm.startAgent();
  await waitFor(
    'both api instances to answer through the proxies',
    async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const r = await fetch(fm.url, { headers: { 'x-request-id': `warmup-${i}` } }).catch(
          () => null,
        );
        if (r?.status === 200) seen.add(((await r.json()) as { instance: string }).instance);
      }
      return seen.size === 2 || null;
    },
    120_000,
    200,
  );
  return fm;
}

/**
 * The expectation of every scenario: no POST delivered twice, every failure carries a Remora
 * error code, and (where `getsSurvive`) every idempotent GET succeeded.
 */
export async function checkScenario(
  t: Tap,
  scenario: string,
  outcomes: Outcome[],
  fm: FaultMesh,
  opts: { getsSurvive?: boolean } = {},
): Promise<FaultSummary> {
  const s = await summarize(scenario, outcomes, fm.recorders, (l) => t.comment(l));
  t.ok(s.sent > 0 && s.ok > 0, `${s.ok} of ${s.sent} requests succeeded`);
  t.equal(s.duplicated, 0, 'no POST reached an app twice');
  t.same(
    Object.keys(s.codes).filter((c) => !c.startsWith('REMORA_E_')),
    [],
    'every failed request carries an x-remora-error code',
  );
  if (opts.getsSurvive !== false) t.equal(s.getFailed, 0, 'every idempotent GET succeeded');
  return s;
}
