// The directory of service definitions: every `*.json` file, read in name order. A file that
// fails to decode keeps the services it defined before (a typo never tears down a running
// service); a removed file removes its services.
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RemoraError } from '../lib/errors/index.ts';
import {
  decodeDefinitionFile,
  mergeDefinitions,
  type DecodeResult,
  type ServiceDefinition,
} from './definitions.ts';

export interface ConfigDirOptions {
  dir: string;
  /** Called after every load with the merged services and this load's problems. */
  onLoad(result: DecodeResult): void;
  /** Debounce of file-system events, in milliseconds. */
  debounceMs?: number;
}

export interface ConfigDir {
  /** Reads the directory now and calls onLoad. */
  load(): Promise<DecodeResult>;
  /** Starts watching the directory (best effort; SIGHUP → load() works without it). */
  watch(): void;
  close(): void;
}

export function createConfigDir(options: ConfigDirOptions): ConfigDir {
  const lastGood = new Map<string, ServiceDefinition[]>();
  let watcher: FSWatcher | null = null;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<DecodeResult> | null = null;
  let again = false;

  async function readAll(): Promise<DecodeResult> {
    let names: string[];
    try {
      names = (await readdir(options.dir)).filter((n) => n.endsWith('.json')).sort();
    } catch (err) {
      const problem = new RemoraError(
        'REMORA_E_AGENT_DEFINITION_UNREADABLE',
        `service definition directory ${options.dir} cannot be read (${(err as Error).message}); keeping the services loaded before`,
        { file: options.dir, field: '', reason: (err as Error).message },
      );
      return { services: [...lastGood.values()].flat(), problems: [problem] };
    }
    const results: DecodeResult[] = [];
    for (const n of names) {
      const file = join(options.dir, n);
      let r: DecodeResult;
      try {
        r = decodeDefinitionFile(await readFile(file, 'utf8'), file);
      } catch (err) {
        r = {
          services: [],
          problems: [
            new RemoraError(
              'REMORA_E_AGENT_DEFINITION_UNREADABLE',
              `service definition ${file} cannot be read (${(err as Error).message}); its services are skipped`,
              { file, field: '', reason: (err as Error).message },
            ),
          ],
        };
      }
      if (r.problems.length > 0) {
        const kept = (lastGood.get(file) ?? []).filter(
          (old) => !r.services.some((s) => s.id === old.id),
        );
        r = { services: [...r.services, ...kept], problems: r.problems };
      }
      lastGood.set(file, r.services);
      results.push(r);
    }
    for (const file of [...lastGood.keys()]) {
      if (!names.some((n) => join(options.dir, n) === file)) lastGood.delete(file);
    }
    return mergeDefinitions(results);
  }

  async function load(): Promise<DecodeResult> {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      let result: DecodeResult;
      do {
        again = false;
        result = await readAll();
        options.onLoad(result);
      } while (again);
      return result;
    })();
    try {
      return await running;
    } finally {
      running = null;
    }
  }

  return {
    load,
    watch() {
      if (watcher) return;
      try {
        watcher = watch(options.dir, () => {
          if (timer) clearTimeout(timer);
          timer = setTimeout(() => {
            timer = null;
            void load();
          }, options.debounceMs ?? 150);
        });
        watcher.on('error', () => {
          watcher?.close();
          watcher = null;
        });
      } catch {
        watcher = null;
      }
    },
    close() {
      if (timer) clearTimeout(timer);
      watcher?.close();
      watcher = null;
    },
  };
}
