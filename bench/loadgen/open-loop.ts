// A small, bounded HTTP load generator (run as its own process, pinned to the loadgen core).
//
//   node bench/loadgen/open-loop.ts '<json options>'   → one JSON line on stdout
//
// mode "open": requests are due at fixed intervals (rate per second) regardless of how earlier
//   ones fare; each request's latency is measured from its *intended* send time, so a stalled
//   server shows up as latency instead of silently lowering the offered load (no coordinated
//   omission). A due request waits for an idle connection if all are busy; that wait counts.
// mode "closed": `conns` requests in flight, each connection sends its next request when the
//   previous answer completed (what wrk does) — used for HTTP/2 where wrk cannot go.
// transport "h1": HTTP/1.1 keep-alive over plain TCP, one request in flight per connection.
// transport "h2c": HTTP/2 with prior knowledge, one session per connection, one stream in flight
//   per session (so the two transports offer the same concurrency).
import { connect as netConnect, type Socket } from 'node:net';
import { connect as h2Connect, type ClientHttp2Session } from 'node:http2';
import { performance } from 'node:perf_hooks';

interface Options {
  mode: 'open' | 'closed';
  transport: 'h1' | 'h2c';
  host: string;
  port: number;
  path: string;
  conns: number;
  /** open mode: requests per second. */
  rate: number;
  durationS: number;
  /** After the sending window, wait this long for answers; the rest count as timeouts. */
  drainS: number;
  /** closed mode: keep at most this many latency samples. */
  maxSamples: number;
}

export interface LoadResult {
  mode: 'open' | 'closed';
  transport: 'h1' | 'h2c';
  offeredRate: number;
  sent: number;
  completed: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  durationS: number;
  rps: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  /** open mode: how late the generator itself was in sending (p99, µs) — its own health. */
  sendLagP99Us: number;
}

const opts: Options = {
  mode: 'open',
  transport: 'h1',
  host: '127.0.0.1',
  port: 0,
  path: '/',
  conns: 32,
  rate: 1000,
  durationS: 5,
  drainS: 5,
  maxSamples: 5_000_000,
  ...(JSON.parse(process.argv[2] ?? '{}') as Partial<Options>),
};

interface Conn {
  busy: boolean;
  send(onDone: (status: number) => void): void;
  close(): void;
}

// ---------------------------------------------------------------- HTTP/1.1 over net
function createH1Conn(onBroken: (c: Conn) => void): Conn {
  const request = Buffer.from(
    `GET ${opts.path} HTTP/1.1\r\nHost: ${opts.host}:${opts.port}\r\nUser-Agent: remora-bench\r\n\r\n`,
    'latin1',
  );
  let socket: Socket | null = null;
  let buf = '';
  let pending: ((status: number) => void) | null = null;
  // parse state of the current response
  let status = 0;
  let need = -1; // body bytes still expected (Content-Length), -1 = headers not parsed yet
  let chunked = false;
  let closed = false;

  const conn: Conn = {
    busy: false,
    send(onDone) {
      if (!socket) open();
      conn.busy = true;
      pending = onDone;
      socket!.write(request);
    },
    close() {
      closed = true;
      socket?.destroy();
    },
  };

  function finish(st: number): void {
    const cb = pending;
    pending = null;
    conn.busy = false;
    status = 0;
    need = -1;
    chunked = false;
    cb?.(st);
  }

  function parse(): void {
    for (;;) {
      if (need < 0) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        status = Number(head.slice(9, 12));
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        chunked = /\r\ntransfer-encoding:[^\r]*chunked/i.test(head);
        need = chunked ? 0 : cl ? Number(cl[1]) : 0;
      }
      if (chunked) {
        // consume "<hex>\r\n<data>\r\n" chunks until the zero chunk and its final CRLF
        for (;;) {
          const eol = buf.indexOf('\r\n');
          if (eol < 0) return;
          const size = parseInt(buf.slice(0, eol), 16);
          if (size === 0) {
            const end = buf.indexOf('\r\n\r\n', eol - 2 < 0 ? 0 : eol - 2);
            if (end < 0) return;
            buf = buf.slice(end + 4);
            break;
          }
          if (buf.length < eol + 2 + size + 2) return;
          buf = buf.slice(eol + 2 + size + 2);
        }
        finish(status);
        continue;
      }
      if (buf.length < need) return;
      buf = buf.slice(need);
      finish(status);
      if (buf.length === 0) return;
    }
  }

  function open(): void {
    buf = '';
    need = -1;
    const s = netConnect({ host: opts.host, port: opts.port, noDelay: true });
    socket = s;
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      parse();
    });
    const broken = (): void => {
      if (socket !== s) return;
      socket = null;
      if (pending) finish(-1);
      if (!closed) onBroken(conn);
    };
    s.on('error', broken);
    s.on('close', broken);
  }

  open();
  return conn;
}

// ---------------------------------------------------------------- HTTP/2 with prior knowledge
function createH2Conn(onBroken: (c: Conn) => void): Conn {
  let session: ClientHttp2Session | null = null;
  let closed = false;
  const conn: Conn = {
    busy: false,
    send(onDone) {
      if (!session || session.destroyed) open();
      conn.busy = true;
      let st = 0;
      let done = false;
      const end = (code: number): void => {
        if (done) return;
        done = true;
        conn.busy = false;
        onDone(code);
      };
      try {
        const req = session!.request({ ':method': 'GET', ':path': opts.path });
        req.on('response', (h) => {
          st = Number(h[':status']);
        });
        req.on('data', () => {});
        req.on('end', () => end(st));
        req.on('error', () => end(-1));
        req.on('close', () => end(st || -1));
        req.end();
      } catch {
        end(-1);
      }
    },
    close() {
      closed = true;
      session?.destroy();
    },
  };
  function open(): void {
    const s = h2Connect(`http://${opts.host}:${opts.port}`);
    session = s;
    s.on('error', () => {});
    s.on('close', () => {
      if (session === s) session = null;
      if (!closed) onBroken(conn);
    });
  }
  open();
  return conn;
}

// ---------------------------------------------------------------- driver
async function main(): Promise<void> {
  const make = opts.transport === 'h2c' ? createH2Conn : createH1Conn;
  const conns: Conn[] = [];
  const idle: Conn[] = [];
  const onBroken = (_c: Conn): void => {
    // the connection object reopens on its next send; nothing to do here
  };
  for (let i = 0; i < opts.conns; i++) {
    const c = make(onBroken);
    conns.push(c);
    idle.push(c);
  }
  // let the connections establish before the clock starts
  await new Promise((r) => setTimeout(r, 200));

  const open = opts.mode === 'open';
  const total = open ? Math.max(1, Math.round(opts.rate * opts.durationS)) : Infinity;
  const samples = open
    ? new Float64Array(total)
    : new Float64Array(Math.min(opts.maxSamples, 2_000_000));
  let nSamples = 0;
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  const lag = open ? new Float64Array(total) : new Float64Array(0);
  const queue: number[] = []; // intended send times (ms) waiting for a connection
  const intervalMs = open ? 1000 / opts.rate : 0;
  const t0 = performance.now() + 20;
  const sendEnd = t0 + opts.durationS * 1000;
  const hardEnd = sendEnd + opts.drainS * 1000;

  let finished!: () => void;
  const allDone = new Promise<void>((r) => (finished = r));

  function record(intended: number, st: number): void {
    const now = performance.now();
    completed++;
    if (st < 0) errors++;
    else {
      if (st < 200 || st >= 300) non2xx++;
      if (nSamples < samples.length) samples[nSamples++] = (now - intended) * 1000;
    }
  }

  function dispatch(c: Conn, intended: number): void {
    if (open) lag[sent] = (performance.now() - intended) * 1000;
    sent++;
    c.send((st) => {
      record(intended, st);
      if (open) {
        const next = queue.shift();
        if (next !== undefined) dispatch(c, next);
        else idle.push(c);
        if (sent >= total && completed >= sent) finished();
      } else if (performance.now() < sendEnd) {
        dispatch(c, performance.now());
      } else if (completed >= sent) {
        finished();
      }
    });
  }

  if (open) {
    let next = 0;
    const tick = (): void => {
      const now = performance.now();
      while (next < total && t0 + next * intervalMs <= now) {
        const intended = t0 + next * intervalMs;
        next++;
        const c = idle.pop();
        if (c) dispatch(c, intended);
        else queue.push(intended);
      }
      if (next < total && now < hardEnd) setImmediate(tick);
    };
    setImmediate(tick);
  } else {
    for (const c of idle.splice(0)) dispatch(c, performance.now());
  }

  const timer = setTimeout(finished, hardEnd - performance.now());
  await allDone;
  clearTimeout(timer);
  const elapsedS = (Math.min(performance.now(), hardEnd) - t0) / 1000;
  for (const c of conns) c.close();

  const lat = samples.subarray(0, nSamples).sort();
  const lagSorted = lag.subarray(0, Math.min(sent, lag.length)).sort();
  const pct = (a: Float64Array, p: number): number =>
    a.length ? Math.round(a[Math.min(a.length - 1, Math.ceil((p / 100) * a.length) - 1)]!) : -1;
  const result: LoadResult = {
    mode: opts.mode,
    transport: opts.transport,
    offeredRate: open ? opts.rate : 0,
    sent,
    completed,
    errors,
    timeouts: sent - completed + queue.length,
    non2xx,
    durationS: open ? opts.durationS : Math.min(elapsedS, opts.durationS),
    rps:
      completed / (open ? Math.max(opts.durationS, elapsedS) : Math.min(elapsedS, opts.durationS)),
    p50Us: pct(lat, 50),
    p90Us: pct(lat, 90),
    p99Us: pct(lat, 99),
    p999Us: pct(lat, 99.9),
    maxUs: lat.length ? Math.round(lat[lat.length - 1]!) : -1,
    sendLagP99Us: pct(lagSorted, 99),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`load generator failed: ${String(err)}\n`);
    process.exit(1);
  },
);
