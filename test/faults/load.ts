// The fault scenarios' shared parts: recorder apps that log every request ID they receive, a
// bounded load generator that sends idempotent GETs and non-idempotent POSTs with unique IDs,
// and the counter that turns both into one `FAULT …` summary line.
import { request } from 'node:http';
import { appendFile } from 'node:fs/promises';
import { waitFor } from '../../lib/util/index.ts';
import { startProc, type Proc } from '../integration/agent/harness.ts';

const RECORDER = new URL('./recorder-app.ts', import.meta.url).pathname;

/** REMORA_FAULTS_LONG=1: the long variants (30 s outages). */
export const LONG = process.env.REMORA_FAULTS_LONG === '1';

/** Outage length of every scenario; REMORA_FAULTS_LONG=1 makes it 30 s as the issue asks. */
export const OUTAGE_MS = LONG ? 30_000 : Number(process.env.REMORA_FAULTS_OUTAGE_MS ?? 3000);

export interface Recorder {
  readonly instance: string;
  readonly port: number;
  /** The running generation (a restart starts a new process on the same port). */
  current(): Proc;
  kill(signal?: NodeJS.Signals): Promise<void>;
  restart(): Promise<void>;
  /** How many requests every generation of this app received so far. */
  received(): number;
  /** Every `RECV` line of every generation. */
  lines(): string[];
}

export async function startRecorder(instance: string, port: number): Promise<Recorder> {
  const gens: Proc[] = [];
  const launch = async (): Promise<void> => {
    const p = startProc([RECORDER], { PORT: String(port), INSTANCE_ID: instance });
    gens.push(p);
    await waitFor(`recorder ${instance} to listen on ${port}`, () =>
      /LISTENING/.test(p.output()) ? true : p.child.exitCode !== null ? fail(p) : null,
    );
  };
  const fail = (p: Proc): never => {
    throw new Error(`recorder ${instance} exited: ${p.output()}`);
  };
  await launch();
  const lines = (): string[] =>
    gens.flatMap((g) => g.output().split('\n')).filter((l) => l.startsWith('RECV '));
  return {
    instance,
    port,
    current: () => gens[gens.length - 1]!,
    async kill(signal = 'SIGKILL') {
      await gens[gens.length - 1]!.stop(signal, 2000);
    },
    restart: launch,
    received: () => lines().length,
    lines,
  };
}

export interface Outcome {
  method: 'GET' | 'POST';
  id: string;
  ok: boolean;
  /** `x-remora-error` of a refused request, else `HTTP_<status>` or `NET_<errno>`. */
  code: string | null;
}

export interface Load {
  readonly outcomes: Outcome[];
  ok(): number;
  /** Resolves once `n` more requests succeeded than when called (bounded by `timeoutMs`). */
  okMore(n: number, what: string, timeoutMs?: number): Promise<void>;
  /** Keeps the load running for `ms` (the length of an outage — the experiment, not a sync). */
  hold(ms: number): Promise<void>;
  stop(): Promise<Outcome[]>;
}

export interface LoadOptions {
  url: string;
  scenario: string;
  concurrency?: number;
  maxRequests?: number;
  maxMs?: number;
  /** Least time between two requests of one worker. */
  paceMs?: number;
  timeoutMs?: number;
}

function send(
  url: string,
  method: 'GET' | 'POST',
  id: string,
  timeoutMs: number,
): Promise<Outcome> {
  return new Promise((resolve) => {
    const body = method === 'POST' ? JSON.stringify({ id, order: 'one more widget' }) : null;
    const req = request(
      url,
      {
        method,
        agent: false,
        timeout: timeoutMs,
        headers: {
          'x-request-id': id,
          ...(body ? { 'content-type': 'application/json', 'content-length': body.length } : {}),
        },
      },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (data += d));
        res.on('error', (err: NodeJS.ErrnoException) =>
          resolve({ method, id, ok: false, code: `NET_${err.code ?? err.message}` }),
        );
        res.on('end', () => {
          let answered: string | null = null;
          try {
            answered = (JSON.parse(data) as { id?: string }).id ?? null;
          } catch {
            // not the app's answer
          }
          const ok = res.statusCode === 200 && answered === id;
          const header = res.headers['x-remora-error'];
          resolve({
            method,
            id,
            ok,
            code: ok ? null : typeof header === 'string' ? header : `HTTP_${res.statusCode}`,
          });
        });
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) =>
      resolve({ method, id, ok: false, code: `NET_${err.code ?? err.message}` }),
    );
    req.end(body ?? undefined);
  });
}

/** Starts bounded load: `concurrency` workers alternating GET and POST, each request with a unique ID. */
export function startLoad(o: LoadOptions): Load {
  const outcomes: Outcome[] = [];
  const maxRequests = o.maxRequests ?? 20_000;
  const deadline = Date.now() + (o.maxMs ?? 150_000);
  const pace = o.paceMs ?? 10;
  let seq = 0;
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped && seq < maxRequests && Date.now() < deadline) {
      const n = seq++;
      const started = Date.now();
      outcomes.push(
        await send(
          o.url,
          n % 2 === 0 ? 'GET' : 'POST',
          `${o.scenario}-${n}`,
          o.timeoutMs ?? 10_000,
        ),
      );
      const rest = pace - (Date.now() - started);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    }
  };
  const workers = Array.from({ length: o.concurrency ?? 2 }, () => worker());
  const okCount = (): number => outcomes.reduce((n, x) => n + (x.ok ? 1 : 0), 0);
  return {
    outcomes,
    ok: okCount,
    async okMore(n, what, timeoutMs = 60_000) {
      const target = okCount() + n;
      await waitFor(what, () => okCount() >= target || null, timeoutMs, 50);
    },
    async hold(ms) {
      await new Promise((r) => setTimeout(r, ms));
    },
    async stop() {
      stopped = true;
      await Promise.all(workers);
      return outcomes;
    },
  };
}

export interface FaultSummary {
  scenario: string;
  sent: number;
  ok: number;
  failed: number;
  getFailed: number;
  postFailed: number;
  /** POST IDs that reached an app more than once. */
  duplicated: number;
  /** Failed requests without an `x-remora-error` code. */
  uncoded: number;
  /** POSTs reported failed that did reach an app (allowed once, if coded). */
  postFailedDelivered: number;
  codes: Record<string, number>;
  line: string;
}

/** Counts outcomes and deliveries, prints the `FAULT` line (and appends it to REMORA_FAULTS_REPORT). */
export async function summarize(
  scenario: string,
  outcomes: Outcome[],
  recorders: Array<Pick<Recorder, 'lines'>>,
  comment: (line: string) => void,
): Promise<FaultSummary> {
  const deliveries = new Map<string, number>();
  for (const r of recorders)
    for (const l of r.lines()) {
      const [, , method, id] = l.split(' ');
      if (method === 'POST' && id) deliveries.set(id, (deliveries.get(id) ?? 0) + 1);
    }
  const mine = outcomes.filter((x) => x.id.startsWith(`${scenario}-`));
  const codes: Record<string, number> = {};
  let uncoded = 0;
  let postFailedDelivered = 0;
  for (const x of mine) {
    if (x.ok) continue;
    const c = x.code ?? 'NONE';
    codes[c] = (codes[c] ?? 0) + 1;
    if (!c.startsWith('REMORA_E_')) uncoded += 1;
    if (x.method === 'POST' && (deliveries.get(x.id) ?? 0) > 0) postFailedDelivered += 1;
  }
  let duplicated = 0;
  for (const [id, n] of deliveries) if (id.startsWith(`${scenario}-`) && n > 1) duplicated += 1;
  const failed = mine.filter((x) => !x.ok);
  const s = {
    scenario,
    sent: mine.length,
    ok: mine.length - failed.length,
    failed: failed.length,
    getFailed: failed.filter((x) => x.method === 'GET').length,
    postFailed: failed.filter((x) => x.method === 'POST').length,
    duplicated,
    uncoded,
    postFailedDelivered,
    codes,
  };
  const codeText =
    Object.entries(codes)
      .map(([k, v]) => `${k}:${v}`)
      .join(',') || '-';
  const line =
    `FAULT ${scenario} sent=${s.sent} ok=${s.ok} failed=${s.failed} duplicated=${duplicated} ` +
    `get_failed=${s.getFailed} post_failed=${s.postFailed} uncoded=${uncoded} ` +
    `post_failed_delivered=${postFailedDelivered} outage_ms=${OUTAGE_MS} codes=${codeText}`;
  comment(line);
  const report = process.env.REMORA_FAULTS_REPORT;
  if (report) await appendFile(report, `${line}\n`);
  return { ...s, line };
}
