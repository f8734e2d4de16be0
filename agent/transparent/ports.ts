// Ports of the transparent listeners on 127.0.0.1, allocated by the agent from a dedicated range
// (`transparentPortMin`–`transparentPortMax`): one per upstream without `local_bind_port`, plus
// one Host-routing HTTP listener per transparent instance. Keys are stable (`<instance>/<what>`),
// so an unchanged definition keeps its ports for as long as the agent runs.
export interface PortAllocator {
  /** The port of `key`, allocating the first free one of the range; null when the range is full. */
  get(key: string, reserved?: ReadonlySet<number>): number | null;
  /** Frees every port whose key starts with `prefix`. */
  release(prefix: string): void;
  /** Frees the ports of `prefix` whose key is not in `keep`. */
  retain(prefix: string, keep: ReadonlySet<string>): void;
}

export function createPortAllocator(min: number, max: number): PortAllocator {
  const byKey = new Map<string, number>();
  return {
    get(key, reserved = new Set()) {
      const have = byKey.get(key);
      if (have !== undefined) return have;
      const used = new Set(byKey.values());
      for (let p = min; p <= max; p++) {
        if (!used.has(p) && !reserved.has(p)) {
          byKey.set(key, p);
          return p;
        }
      }
      return null;
    },
    release(prefix) {
      for (const k of [...byKey.keys()]) if (k.startsWith(prefix)) byKey.delete(k);
    },
    retain(prefix, keep) {
      for (const k of [...byKey.keys()]) if (k.startsWith(prefix) && !keep.has(k)) byKey.delete(k);
    },
  };
}
