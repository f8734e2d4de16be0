// What every non-data-plane scenario receives and returns.
import type { BenchPki } from './certs.ts';
import type { Knobs } from './options.ts';
import type { Pinning, ProcessRegistry } from './procs.ts';

export interface ScenarioContext {
  registry: ProcessRegistry;
  pinning: Pinning;
  runDir: string;
  pki: BenchPki;
  knobs: Knobs;
  log: (m: string) => void;
}

export interface ScenarioReport {
  /** One-line results for the headline list. */
  headline: string[];
  /** Markdown lines of the scenario's section. */
  section: string[];
  /** Markdown lines for "Exact commands". */
  commands: string[];
}
