// Runs one control replica (control/ `createControl`) as its own process, against a real
// nats-server and the catalog over Consul's HTTP API (KV with CAS, catalog reads), so its CPU and
// memory can be read from /proc. Prints {"ready":true} once it serves and runs until SIGTERM.
//   node bench/control/control-server.ts '{"natsUrl":"nats://…","consulUrl":"http://…","operatorToken":"…"}'
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { connectNats, requestRoots } from '../../lib/nats/index.ts';
import { createLogger } from '../../lib/log/index.ts';
import { createClock, waitFor } from '../../lib/util/index.ts';
import { reportChildError } from '../lib/child.ts';
import { REPO_ROOT } from '../dataplane/paths.ts';
import { createConsulHttp } from './consul-http.ts';

interface ControlModule {
  createControl(options: Record<string, unknown>): {
    start(): Promise<void>;
    stop(): Promise<void>;
  };
}

const input = JSON.parse(process.argv[2] ?? '{}') as {
  natsUrl: string;
  consulUrl: string;
  operatorToken: string;
};
try {
  const mod = (await import(
    pathToFileURL(join(REPO_ROOT, 'control/index.ts')).href
  )) as ControlModule;
  if (typeof mod.createControl !== 'function')
    throw new Error('control/ has no createControl export');
  const logger = createLogger({ component: 'control', level: 'warn' });
  const nats = await connectNats({ servers: input.natsUrl, name: 'remora-control@bench', logger });
  const control = mod.createControl({
    config: {
      datacenter: 'dc1',
      kvPrefix: 'remora/',
      leafTtlHours: 72,
      rootTtlDays: 3650,
      operatorToken: input.operatorToken,
      defaultPolicy: 'deny',
      auditMode: false,
    },
    nats,
    consul: createConsulHttp(input.consulUrl),
    clock: createClock(),
    logger,
  });
  await control.start();
  await waitFor(
    'control answering ca.roots',
    () => requestRoots(nats, 'dc1', { timeoutMs: 1000 }),
    15_000,
  );
  process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);
  const stop = (): void => {
    void control
      .stop()
      .then(() => nats.close())
      .finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (err) {
  reportChildError(err);
  process.exitCode = 1;
}
