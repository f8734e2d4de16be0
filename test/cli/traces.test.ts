import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { createProgram } from '../../cli/program.ts';
import type { CliContext } from '../../cli/context.ts';
import { runRemora } from '../helpers/cli.ts';
import { freePort } from '../helpers/nats.ts';

/** Runs `remora <args>` in this process (fast); the real binary is used where exit codes matter. */
async function runInProcess(args: string[], env: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  const sink = (add: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        add(chunk.toString());
        cb();
      },
    });
  const ctx: CliContext = {
    env,
    stdout: sink((s) => (stdout += s)),
    stderr: sink((s) => (stderr += s)),
    stopSignal: new AbortController().signal,
    onReload: () => () => {},
    cwd: process.cwd(),
  };
  let error: unknown;
  try {
    const argv = ['node', 'remora', ...args];
    await (await createProgram(ctx, argv)).parseAsync(argv);
  } catch (err) {
    error = err;
  }
  return { stdout, stderr, error };
}

function codeAndMessage(err: unknown): string {
  const e = err as { code?: string; message?: string } | undefined;
  return `${e?.code}: ${e?.message}`;
}

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';

/** A search answer shaped like Jaeger's /api/traces: web → (retry) → api, the first attempt failing. */
function jaegerTraces(nowUs: number) {
  const t0 = nowUs - 60_000_000;
  const str = (key: string, value: string) => ({ key, type: 'string', value });
  const int = (key: string, value: number) => ({ key, type: 'int64', value });
  return {
    data: [
      {
        traceID: TRACE_ID,
        spans: [
          {
            traceID: TRACE_ID,
            spanID: 'a000000000000002',
            operationName: 'GET',
            references: [{ refType: 'CHILD_OF', traceID: TRACE_ID, spanID: 'a000000000000001' }],
            startTime: t0 + 1_000,
            duration: 8_000,
            tags: [
              str('span.kind', 'client'),
              int('remora.attempt', 1),
              str('remora.upstream', 'api'),
              int('http.response.status_code', 503),
              str('otel.status_code', 'ERROR'),
              { key: 'error', type: 'bool', value: true },
            ],
            logs: [],
            processID: 'p1',
            warnings: null,
          },
          {
            traceID: TRACE_ID,
            spanID: 'a000000000000001',
            operationName: 'GET /orders',
            references: [],
            startTime: t0,
            duration: 42_000,
            tags: [
              str('span.kind', 'server'),
              int('http.response.status_code', 200),
              str('otel.scope.name', 'remora-proxy'),
              str('internal.span.format', 'otlp'),
            ],
            logs: [],
            processID: 'p1',
            warnings: null,
          },
          {
            traceID: TRACE_ID,
            spanID: 'a000000000000003',
            operationName: 'GET',
            references: [{ refType: 'CHILD_OF', traceID: TRACE_ID, spanID: 'a000000000000001' }],
            startTime: t0 + 10_000,
            duration: 30_000,
            tags: [
              str('span.kind', 'client'),
              str('remora.upstream', 'api'),
              int('remora.attempt', 2),
              int('http.response.status_code', 200),
            ],
            logs: [],
            processID: 'p1',
            warnings: null,
          },
          {
            traceID: TRACE_ID,
            spanID: 'a000000000000004',
            operationName: 'GET /orders',
            references: [{ refType: 'CHILD_OF', traceID: TRACE_ID, spanID: 'a000000000000003' }],
            startTime: t0 + 12_000,
            duration: 26_000,
            tags: [str('span.kind', 'server'), int('http.response.status_code', 200)],
            logs: [],
            processID: 'p2',
            warnings: null,
          },
        ],
        processes: {
          p1: {
            serviceName: 'web',
            tags: [str('host.name', 'vm1'), str('remora.component', 'proxy')],
          },
          p2: {
            serviceName: 'api',
            tags: [str('host.name', 'vm2'), str('remora.component', 'proxy')],
          },
        },
        warnings: null,
      },
    ],
    total: 0,
    limit: 0,
    offset: 0,
    errors: null,
  };
}

type Handler = (
  req: http.IncomingMessage,
  url: URL,
) => { status: number; body: string; type?: string };

async function startFakeJaeger(handler: Handler) {
  const seen: URL[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    seen.push(url);
    const r = handler(req, url);
    res.writeHead(r.status, { 'content-type': r.type ?? 'application/json' }).end(r.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    seen,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const ok = (body: unknown) => ({ status: 200, body: JSON.stringify(body) });

t.test('shows recent traces of a service as a waterfall with a Jaeger link', async (t) => {
  const jaeger = await startFakeJaeger((_req, url) =>
    url.pathname === '/api/traces'
      ? ok(jaegerTraces(Date.now() * 1000))
      : { status: 404, body: '' },
  );
  t.teardown(() => jaeger.close());
  const r = await runRemora(['traces', 'web', '--limit', '3', '--lookback', '15m'], {
    env: { REMORA_CLI_JAEGER_URL: jaeger.url },
    timeoutMs: 45_000,
  });
  t.equal(r.code, 0, r.stderr);
  const q = jaeger.seen[0];
  t.equal(q?.pathname, '/api/traces');
  t.equal(q?.searchParams.get('service'), 'web');
  t.equal(q?.searchParams.get('limit'), '3');
  const start = Number(q?.searchParams.get('start'));
  const end = Number(q?.searchParams.get('end'));
  t.equal(end - start, 15 * 60 * 1_000_000, 'start/end span the lookback, in microseconds');

  const lines = r.stdout.trimEnd().split('\n');
  t.match(lines[0], `trace ${TRACE_ID}  web: GET /orders  42.0 ms  4 spans, 2 services  1 ERROR`);
  t.match(lines[1], /^ {2}web {2}GET \/orders \[server\]\s+42\.0 ms {2}ok 200 +\|█{32}\|$/);
  t.match(lines[2], /^ {4}web {2}GET → api #1 \[client\]\s+8\.00 ms {2}ERROR 503 \|█{6} +\|$/);
  t.match(lines[3], /^ {4}web {2}GET → api #2 \[client\]\s+30\.0 ms {2}ok 200 +\| {7}█{23} +\|$/);
  t.match(lines[4], /^ {6}api {2}GET \/orders \[server\]\s+26\.0 ms {2}ok 200/);
  t.equal(lines[5], `  ${jaeger.url}/trace/${TRACE_ID}`);
});

t.test('--jaeger-url overrides the config and --json prints the traces', async (t) => {
  const jaeger = await startFakeJaeger(() => ok(jaegerTraces(Date.now() * 1000)));
  t.teardown(() => jaeger.close());
  const r = await runInProcess(['traces', 'web', '--json', '--jaeger-url', jaeger.url], {
    REMORA_CLI_JAEGER_URL: 'http://127.0.0.1:1',
  });
  t.equal(r.error, undefined);
  const parsed = JSON.parse(r.stdout) as Array<{ traceID: string; spans: unknown[] }>;
  t.equal(parsed[0]?.traceID, TRACE_ID);
  t.equal(parsed[0]?.spans.length, 4);
});

t.test('Jaeger down: a coded error with the URL and how to start it', async (t) => {
  const port = await freePort();
  const r = await runInProcess(['traces', 'web', '--jaeger-url', `http://127.0.0.1:${port}`]);
  t.match(
    codeAndMessage(r.error),
    `REMORA_E_TELEMETRY_JAEGER_UNREACHABLE: cannot reach Jaeger at http://127.0.0.1:${port} (ECONNREFUSED); start Jaeger, or give its address with --jaeger-url or REMORA_CLI_JAEGER_URL`,
  );
  t.match((r.error as { remedy?: string }).remedy, 'jaegertracing/all-in-one');
  t.equal(r.stdout, '');
});

t.test("Jaeger's own error answer is shown with its message", async (t) => {
  const jaeger = await startFakeJaeger(() => ({
    status: 400,
    body: JSON.stringify({
      data: null,
      total: 0,
      limit: 0,
      offset: 0,
      errors: [{ code: 400, msg: "unable to parse param 'limit': strconv.ParseInt" }],
    }),
  }));
  t.teardown(() => jaeger.close());
  const r = await runInProcess(['traces', 'web', '--jaeger-url', jaeger.url]);
  t.equal(
    codeAndMessage(r.error),
    `REMORA_E_TELEMETRY_JAEGER_QUERY_FAILED: Jaeger at ${jaeger.url} refused the query (HTTP 400: unable to parse param 'limit': strconv.ParseInt)`,
  );
});

t.test('no traces: says so and names the services Jaeger knows', async (t) => {
  const jaeger = await startFakeJaeger((_req, url) =>
    url.pathname === '/api/services'
      ? ok({
          data: ['web', 'api', 'jaeger-all-in-one'],
          total: 3,
          limit: 0,
          offset: 0,
          errors: null,
        })
      : ok({ data: [], total: 0, limit: 0, offset: 0, errors: null }),
  );
  t.teardown(() => jaeger.close());
  const r = await runInProcess(['traces', 'wbe', '--jaeger-url', jaeger.url]);
  t.equal(r.error, undefined);
  t.match(r.stdout, `no traces of wbe in the last 1h at ${jaeger.url}`);
  t.match(
    r.stdout,
    'Jaeger has no spans from a service named "wbe"; it knows: api, jaeger-all-in-one, web',
  );
});

t.test('a URL that is not Jaeger gets a coded error saying so', async (t) => {
  const jaeger = await startFakeJaeger(() => ({
    status: 200,
    body: '<html>hello</html>',
    type: 'text/html',
  }));
  t.teardown(() => jaeger.close());
  const r = await runInProcess(['traces', 'web', '--jaeger-url', jaeger.url]);
  t.match(codeAndMessage(r.error), /^REMORA_E_TELEMETRY_JAEGER_BAD_RESPONSE: .*port 16686/);
  const notFound = await startFakeJaeger(() => ({
    status: 404,
    body: 'not found',
    type: 'text/plain',
  }));
  t.teardown(() => notFound.close());
  const r2 = await runInProcess(['traces', 'web', '--jaeger-url', notFound.url]);
  t.match(codeAndMessage(r2.error), /^REMORA_E_TELEMETRY_JAEGER_BAD_RESPONSE: .*answered 404/);
});

t.test('bad --limit and --lookback are usage errors', async (t) => {
  const a = await runInProcess(['traces', 'web', '--limit', 'many']);
  t.match(codeAndMessage(a.error), 'REMORA_E_USAGE: --limit many');
  const b = await runInProcess(['traces', 'web', '--lookback', 'yesterday']);
  t.match(codeAndMessage(b.error), 'REMORA_E_USAGE: --lookback yesterday is not a duration');
});

t.test('--id shows one trace; an unknown ID gets Jaeger\'s "trace not found"', async (t) => {
  const jaeger = await startFakeJaeger((_req, url) => {
    if (url.pathname === `/api/traces/${TRACE_ID}`) {
      const all = jaegerTraces(Date.now() * 1000);
      return ok({ ...all, data: all.data.slice(0, 1) });
    }
    return {
      status: 404,
      body: JSON.stringify({
        data: null,
        total: 0,
        limit: 0,
        offset: 0,
        errors: [{ code: 404, msg: 'trace not found' }],
      }),
    };
  });
  t.teardown(() => jaeger.close());
  const r = await runInProcess([
    'traces',
    '--id',
    TRACE_ID.toUpperCase(),
    '--jaeger-url',
    jaeger.url,
  ]);
  t.equal(r.error, undefined);
  t.match(r.stdout, `trace ${TRACE_ID}  web: GET /orders`);
  t.match(r.stdout, `${jaeger.url}/trace/${TRACE_ID}`);

  const missing = 'f'.repeat(32);
  const r2 = await runInProcess(['traces', '--id', missing, '--jaeger-url', jaeger.url]);
  t.equal(
    codeAndMessage(r2.error),
    `REMORA_E_TELEMETRY_JAEGER_QUERY_FAILED: Jaeger at ${jaeger.url} refused the query (HTTP 404: trace not found)`,
  );
  const r3 = await runInProcess(['traces', '--id', 'xyz']);
  t.match(codeAndMessage(r3.error), 'REMORA_E_USAGE: --id xyz is not a trace ID');
  const r4 = await runInProcess(['traces']);
  t.match(codeAndMessage(r4.error), 'REMORA_E_USAGE: name a service');
});

t.test('--errors asks Jaeger only for traces with a failed span', async (t) => {
  const jaeger = await startFakeJaeger(() =>
    ok({ data: [], total: 0, limit: 0, offset: 0, errors: null }),
  );
  t.teardown(() => jaeger.close());
  const r = await runInProcess(['traces', 'web', '--errors', '--jaeger-url', jaeger.url]);
  t.equal(r.error, undefined);
  const q = jaeger.seen.find((u) => u.pathname === '/api/traces');
  t.equal(q?.searchParams.get('tags'), '{"error":"true"}');
  t.match(r.stdout, 'no failed traces of web');
});
