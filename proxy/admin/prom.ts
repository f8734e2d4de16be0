// A small Prometheus registry for the proxy: counters and gauges with bounded label sets,
// rendered as text exposition format 0.0.4 at scrape time. prom-client is not used here: it
// loads its push gateway (node:http, node:https, node:zlib) and @opentelemetry/api at import,
// about 20 MB of resident memory in every proxy, for features the proxy does not use.
import { readdirSync } from 'node:fs';

export interface Collectable {
  /** Prometheus text for this metric (HELP, TYPE and samples). */
  render(): string;
}

export class Registry {
  readonly contentType = 'text/plain; version=0.0.4; charset=utf-8';
  #metrics: Collectable[] = [];

  register(m: Collectable): void {
    this.#metrics.push(m);
  }

  /** The exposition text of every registered metric. */
  metrics(): Promise<string> {
    return Promise.resolve(this.#metrics.map((m) => m.render()).join(''));
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** `{a="x",b="y"}` for label names and values (empty string when there are none). */
export function formatLabels(names: readonly string[], values: readonly string[]): string {
  if (names.length === 0) return '';
  let s = '{';
  for (let i = 0; i < names.length; i++)
    s += `${i > 0 ? ',' : ''}${names[i]}="${escapeLabel(values[i] ?? '')}"`;
  return `${s}}`;
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export function header(name: string, help: string, type: string): string {
  return `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
}

export interface MetricChild {
  inc(n?: number): void;
  dec(n?: number): void;
  set(v: number): void;
}

interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  registers?: Registry[];
}

class LabelledMetric<L extends string> implements Collectable {
  readonly name: string;
  readonly help: string;
  readonly #type: 'counter' | 'gauge';
  readonly #labelNames: readonly string[];
  #children = new Map<string, { values: string[]; value: number }>();

  constructor(type: 'counter' | 'gauge', o: MetricOptions<L>) {
    this.#type = type;
    this.name = o.name;
    this.help = o.help;
    this.#labelNames = o.labelNames ?? [];
    for (const r of o.registers ?? []) r.register(this);
  }

  #child(values: string[]): { values: string[]; value: number } {
    const key = values.join('\0');
    let c = this.#children.get(key);
    if (c === undefined) {
      c = { values, value: 0 };
      this.#children.set(key, c);
    }
    return c;
  }

  /** The series for these label values (in `labelNames` order). */
  labels(...values: string[]): MetricChild {
    const c = this.#child(values);
    return {
      inc: (n = 1) => {
        c.value += n;
      },
      dec: (n = 1) => {
        c.value -= n;
      },
      set: (v) => {
        c.value = v;
      },
    };
  }

  inc(n = 1): void {
    this.#child([]).value += n;
  }

  set(v: number): void {
    this.#child([]).value = v;
  }

  reset(): void {
    this.#children.clear();
  }

  render(): string {
    let s = header(this.name, this.help, this.#type);
    if (this.#labelNames.length === 0 && this.#children.size === 0) return `${s}${this.name} 0\n`;
    for (const c of this.#children.values())
      s += `${this.name}${formatLabels(this.#labelNames, c.values)} ${formatValue(c.value)}\n`;
    return s;
  }
}

export class Counter<L extends string = string> extends LabelledMetric<L> {
  constructor(o: MetricOptions<L>) {
    super('counter', o);
  }
}

export class Gauge<L extends string = string> extends LabelledMetric<L> {
  constructor(o: MetricOptions<L>) {
    super('gauge', o);
  }
}

/** A metric whose text is computed at scrape time. */
export function registerCustom(registry: Registry, render: () => string): void {
  registry.register({ render });
}

/** Process metrics (CPU, memory, heap, open file descriptors, start time) under `prefix`. */
export function registerProcessMetrics(registry: Registry, prefix: string): void {
  const startSeconds = Math.round(Date.now() / 1000 - process.uptime());
  registerCustom(registry, () => {
    const cpu = process.cpuUsage();
    const mem = process.memoryUsage();
    let fds = -1;
    try {
      fds = readdirSync('/proc/self/fd').length - 1;
    } catch {
      // not Linux: no count
    }
    const g = (name: string, help: string, type: string, v: number): string =>
      `${header(prefix + name, help, type)}${prefix}${name} ${formatValue(v)}\n`;
    return (
      g('cpu_user_seconds_total', 'User CPU time spent, in seconds.', 'counter', cpu.user / 1e6) +
      g(
        'cpu_system_seconds_total',
        'System CPU time spent, in seconds.',
        'counter',
        cpu.system / 1e6,
      ) +
      g('resident_memory_bytes', 'Resident memory size, in bytes.', 'gauge', mem.rss) +
      g('heap_used_bytes', 'V8 heap in use, in bytes.', 'gauge', mem.heapUsed) +
      g('heap_total_bytes', 'V8 heap size, in bytes.', 'gauge', mem.heapTotal) +
      g(
        'external_memory_bytes',
        'Memory held outside the V8 heap (buffers), in bytes.',
        'gauge',
        mem.external,
      ) +
      (fds >= 0 ? g('open_fds', 'Open file descriptors.', 'gauge', fds) : '') +
      g(
        'start_time_seconds',
        'Start time of the process since the Unix epoch, in seconds.',
        'gauge',
        startSeconds,
      )
    );
  });
}
