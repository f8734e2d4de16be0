// A ControlPort usable before NATS is reachable: calls fail fast (so the callers' backoff and
// status say what is missing) until the connection exists; subscriptions attach when it does.
import { RemoraError } from '../lib/errors/index.ts';
import type { ControlPort } from './ports.ts';

export function createLazyControlPort(
  connecting: Promise<ControlPort>,
  describe: string,
): ControlPort & { connected(): boolean } {
  let port: ControlPort | null = null;
  let failed: unknown = null;
  const rootsSubs: ((b: Parameters<Parameters<ControlPort['onRootsChanged']>[0]>[0]) => void)[] =
    [];
  const intentionSubs: ((
    s: Parameters<Parameters<ControlPort['onIntentionsChanged']>[0]>[0],
  ) => void)[] = [];
  const ready = connecting.then(
    (p) => {
      port = p;
      for (const fn of rootsSubs) p.onRootsChanged(fn);
      for (const fn of intentionSubs) p.onIntentionsChanged(fn);
      return p;
    },
    (err: unknown) => {
      failed = err;
      return null;
    },
  );

  function need(): ControlPort {
    if (port) return port;
    throw new RemoraError(
      'REMORA_E_AGENT_CONTROL_UNAVAILABLE',
      failed
        ? `NATS at ${describe} cannot be used: ${(failed as Error).message}`
        : `not connected to NATS at ${describe} yet`,
      { nats: describe },
    );
  }

  return {
    connected: () => port !== null,
    sign: async (req) => need().sign(req),
    roots: async () => need().roots(),
    intentions: async () => need().intentions(),
    onRootsChanged(fn) {
      if (port) return port.onRootsChanged(fn);
      rootsSubs.push(fn);
      return () => undefined;
    },
    onIntentionsChanged(fn) {
      if (port) return port.onIntentionsChanged(fn);
      intentionSubs.push(fn);
      return () => undefined;
    },
    async close() {
      const p = port ?? (await Promise.race([ready, Promise.resolve(null)]));
      await p?.close();
    },
  };
}
