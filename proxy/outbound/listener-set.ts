// The bookkeeping shared by the slots of listeners that snapshots open and close (transparent
// and ingress listeners): which are bound, the switch to the set a new snapshot wants, draining
// and closing them.
import type { Server } from 'node:net';

export interface SetMember {
  server: Server;
  part: { drain(): void; readonly connections: number };
}

export interface ListenerSet<B extends SetMember> {
  /** The members bound now, by key. */
  readonly current: ReadonlyMap<string, B>;
  all(): B[];
  /**
   * `commit` makes `next` current (after `beforeCommit`) and stops the members it leaves out;
   * `abort` closes `created`, the listeners bound for `next` (another part of the snapshot failed).
   */
  switchTo(
    next: Map<string, B>,
    created: readonly B[],
    beforeCommit?: () => void,
  ): { commit(): void; abort(): void };
  /** Closes listeners bound for a set that will not be switched to. */
  discard(created: readonly B[]): void;
  /** Stops accepting; connections finish what they carry. */
  drain(): void;
  close(): void;
  readonly connections: number;
}

export function createListenerSet<B extends SetMember>(): ListenerSet<B> {
  let current = new Map<string, B>();
  const all = () => [...current.values()];
  const stop = (b: B) => {
    b.server.close();
    b.part.drain();
  };
  const discard = (created: readonly B[]) => {
    for (const b of created) b.server.close();
  };
  return {
    get current() {
      return current;
    },
    all,
    switchTo(next, created, beforeCommit) {
      return {
        commit() {
          beforeCommit?.();
          for (const [key, b] of current) if (!next.has(key)) stop(b);
          current = next;
        },
        abort: () => discard(created),
      };
    },
    discard,
    drain() {
      for (const b of all()) stop(b);
    },
    close() {
      for (const b of all()) stop(b);
      current = new Map();
    },
    get connections() {
      return all().reduce((n, b) => n + b.part.connections, 0);
    },
  };
}
