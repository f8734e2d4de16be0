/** Probes for HTTP and TCP health checks, with Consul's status rules and output texts. */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import type { HealthStatus } from './types.ts';

export interface ProbeResult {
  status: HealthStatus;
  output: string;
}

/** Consul's default check timeout (agent/checks: 10 s) and output cap (4 KiB). */
export const DEFAULT_CHECK_TIMEOUT_MS = 10_000;
export const DEFAULT_OUTPUT_MAX_SIZE = 4096;

/** Cuts output the way Consul's checks do when it is larger than OutputMaxSize. */
export function capOutput(output: string, max: number): string {
  if (output.length <= max) return output;
  return `${output.slice(0, max)} ... (captured ${max} of ${output.length} bytes)`;
}

/**
 * An HTTP check: 2xx is passing, 429 is warning, anything else (or no answer) is critical.
 * Output mirrors Consul's `HTTP GET <url>: <code> <text> Output: <body>`.
 */
export function probeHttp(opts: {
  url: string;
  method?: string;
  header?: Record<string, string[]>;
  body?: string;
  timeoutMs: number;
  tlsSkipVerify?: boolean;
  tlsServerName?: string;
  outputMaxSize: number;
}): Promise<ProbeResult> {
  const method = (opts.method || 'GET').toUpperCase();
  return new Promise((resolve) => {
    let url: URL;
    try {
      url = new URL(opts.url);
    } catch {
      resolve({ status: 'critical', output: `parse "${opts.url}": invalid URI for request` });
      return;
    }
    const headers: Record<string, string | string[]> = {
      'User-Agent': 'Consul Health Check',
      Accept: 'text/plain, text/*, */*',
    };
    for (const [k, v] of Object.entries(opts.header ?? {})) headers[k] = v;
    const requester = url.protocol === 'https:' ? httpsRequest : httpRequest;
    let settled = false;
    const done = (r: ProbeResult): void => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    let req: ReturnType<typeof httpRequest>;
    try {
      req = requester(url, {
        method,
        headers,
        timeout: opts.timeoutMs,
        ...(url.protocol === 'https:'
          ? {
              rejectUnauthorized: !opts.tlsSkipVerify,
              ...(opts.tlsServerName ? { servername: opts.tlsServerName } : {}),
            }
          : {}),
      });
    } catch (err) {
      done({ status: 'critical', output: (err as Error).message });
      return;
    }
    req.on('timeout', () => {
      req.destroy(new Error('Client.Timeout exceeded while awaiting headers'));
    });
    req.on('error', (err) => {
      done({ status: 'critical', output: `${method} ${opts.url}: ${err.message}` });
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (body.length < opts.outputMaxSize + 1) body += d;
      });
      res.on('error', (err) => done({ status: 'critical', output: err.message }));
      res.on('end', () => {
        const code = res.statusCode ?? 0;
        const output = capOutput(
          `HTTP ${method} ${opts.url}: ${code} ${res.statusMessage ?? ''} Output: ${body}`,
          opts.outputMaxSize,
        );
        if (code >= 200 && code <= 299) done({ status: 'passing', output });
        else if (code === 429) done({ status: 'warning', output });
        else done({ status: 'critical', output });
      });
    });
    if (opts.body) req.write(opts.body);
    req.end();
  });
}

/** A TCP check: a completed connect is passing; a refusal or timeout is critical. */
export function probeTcp(address: string, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(address);
    if (!m) {
      resolve({ status: 'critical', output: `dial tcp ${address}: missing port in address` });
      return;
    }
    const host = m[1] || '127.0.0.1';
    const port = Number(m[2]);
    const sock = connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ status: 'critical', output: `dial tcp ${address}: i/o timeout` });
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ status: 'passing', output: `TCP connect ${address}: Success` });
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const reason = err.code === 'ECONNREFUSED' ? 'connect: connection refused' : err.message;
      resolve({ status: 'critical', output: `dial tcp ${address}: ${reason}` });
    });
  });
}
