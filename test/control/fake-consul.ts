// In-memory stand-in for Consul KV + catalog, for control's unit tests only.
import type { CatalogServiceEntry, ConfigEntry, ControlConsul } from '../../control/index.ts';

export interface FakeConsul extends ControlConsul {
  data: Map<string, { value: string; modifyIndex: number }>;
  services: CatalogServiceEntry[];
  /** Config entries by kind. */
  configEntries: Map<string, ConfigEntry[]>;
  down: boolean;
  /** Config-entry reads never answer (a Consul that hangs). */
  hang: boolean;
}

export function createFakeConsul(): FakeConsul {
  let index = 0;
  const fake: FakeConsul = {
    data: new Map(),
    services: [],
    configEntries: new Map(),
    down: false,
    hang: false,
    config: {
      async list(kind) {
        if (fake.down) throw new Error('connect ECONNREFUSED 127.0.0.1:8500');
        if (fake.hang) await new Promise(() => undefined);
        return { entries: fake.configEntries.get(kind) ?? [] };
      },
    },
    kv: {
      async get(key) {
        if (fake.down) throw new Error('connect ECONNREFUSED 127.0.0.1:8500');
        const e = fake.data.get(key);
        return e ? { ...e } : undefined;
      },
      async put(key, value, options = {}) {
        if (fake.down) throw new Error('connect ECONNREFUSED 127.0.0.1:8500');
        const cur = fake.data.get(key);
        if (options.cas !== undefined && options.cas !== (cur?.modifyIndex ?? 0)) return false;
        index += 1;
        fake.data.set(key, { value, modifyIndex: index });
        return true;
      },
    },
    catalog: {
      async service(name) {
        if (fake.down) throw new Error('connect ECONNREFUSED 127.0.0.1:8500');
        return fake.services.filter((s) => s.ServiceName === name);
      },
    },
  };
  return fake;
}
