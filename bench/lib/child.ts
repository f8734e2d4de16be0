// Helper processes written for the bench (a catalog, a control replica, a signing loop): each
// prints one JSON line when it is ready or done; the orchestrator waits for it, bounded.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Placement, ProcessRegistry, Started } from './procs.ts';

export async function startJsonChild<T>(
  registry: ProcessRegistry,
  name: string,
  script: string,
  input: object,
  where: Placement,
  timeoutMs: number,
): Promise<{ started: Started; info: T }> {
  const started = registry.start(name, process.execPath, [script, JSON.stringify(input)], {
    where,
  });
  const info = await waitJsonLine<T>(started, timeoutMs);
  return { started, info };
}

/** The first JSON line the process printed; throws with its log tail if it exits or times out. */
export async function waitJsonLine<T>(started: Started, timeoutMs: number): Promise<T> {
  let exited = false;
  void started.exited.then(() => (exited = true));
  const end = Date.now() + timeoutMs;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(started.logFile, 'utf8');
    } catch {
      // not created yet
    }
    const line = text.split('\n').find((l) => l.startsWith('{') && l.endsWith('}'));
    if (line) {
      const v = JSON.parse(line) as T & { error?: string };
      if (v.error) throw new Error(`${started.name}: ${v.error}`);
      return v;
    }
    if (exited || Date.now() > end) {
      const tail = text.trim().split('\n').slice(-6).join(' | ');
      throw new Error(
        `${started.name} ${exited ? 'exited' : 'timed out'} without a result: ${tail}`,
      );
    }
    await sleep(exited ? 0 : 50);
  }
}

/** Ends a helper's work: prints the error as the JSON line the orchestrator waits for. */
export function reportChildError(err: unknown): void {
  const msg = err instanceof Error ? err.message : String(err);
  process.stdout.write(`${JSON.stringify({ error: msg.replaceAll('\n', ' ') })}\n`);
}
