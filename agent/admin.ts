// The agent's loopback admin endpoint: `GET /status` for `remora status`, and
// `POST /proxies/restart` for `remora restart-proxies`. It takes JSON only, which a web page
// cannot send to it without a CORS preflight this server never answers.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import type { AgentStatus } from './agent.ts';
import type { HandoverResult } from './supervisor.ts';
import { toRemoraError } from '../lib/errors/index.ts';

/** Upper bound of a request body (a list of instance IDs). */
const MAX_BODY_BYTES = 64 * 1024;

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY_BYTES) throw new Error(`the body is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text.trim() === '' ? {} : JSON.parse(text);
}

/** The instance IDs of a restart request, or why the body is not one. */
function restartIds(body: unknown): string[] | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return 'the body must be a JSON object, e.g. {"instances": ["web-1"]} or {} for all';
  const ids = (body as { instances?: unknown }).instances;
  if (ids === undefined) return [];
  if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string' && x !== ''))
    return '`instances` must be a list of instance IDs';
  return ids as string[];
}

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

export async function startAdminServer(o: {
  port: number;
  status(): AgentStatus;
  restartProxies?: (ids: readonly string[]) => Promise<HandoverResult[]>;
  /** Something the operator should know about restarts on this host, or null. */
  restartNote?: () => string | null;
}): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const url = req.url?.split('?')[0];
    if (url === '/proxies/restart' && o.restartProxies) {
      void restart(req, o.restartProxies, o.restartNote).then(({ status, body }) =>
        res
          .writeHead(status, { 'content-type': 'application/json' })
          .end(`${JSON.stringify(body, null, 2)}\n`),
      );
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    if (url === '/status') {
      const body = JSON.stringify(o.status(), null, 2);
      res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    } else if (url === '/live') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /status\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function restart(
  req: IncomingMessage,
  restartProxies: (ids: readonly string[]) => Promise<HandoverResult[]>,
  note: (() => string | null) | undefined,
): Promise<{ status: number; body: unknown }> {
  const refuse = (status: number, message: string) => ({
    status,
    body: { error: { code: 'REMORA_E_USAGE', message } },
  });
  if (req.method !== 'POST') return refuse(405, 'use POST /proxies/restart');
  if (!/^application\/json\b/.test(req.headers['content-type'] ?? ''))
    return refuse(415, 'send the request as content-type: application/json');
  let body: unknown;
  try {
    body = await readJson(req);
  } catch (err) {
    return refuse(400, `cannot read the request: ${(err as Error).message}`);
  }
  const ids = restartIds(body);
  if (typeof ids === 'string') return refuse(400, ids);
  let results: HandoverResult[];
  try {
    results = await restartProxies(ids);
  } catch (err) {
    // the agent answers with what went wrong instead of leaving the CLI to time out
    const e = toRemoraError(err);
    return { status: 500, body: { error: { code: e.code, message: e.message } } };
  }
  const said = note?.() ?? null;
  return { status: 200, body: said === null ? { results } : { results, note: said } };
}

/**
 * The restart note of a Linux host: whether connections queued on an old proxy's listeners move
 * to its successor when it closes them (`net.ipv4.tcp_migrate_req`), read from `path`.
 */
export function migrateNote(path = '/proc/sys/net/ipv4/tcp_migrate_req'): string | null {
  let value: string;
  try {
    value = readFileSync(path, 'utf8').trim();
  } catch {
    return null; // not Linux, or a kernel before 5.14: nothing to say that would help
  }
  return value === '0'
    ? "net.ipv4.tcp_migrate_req is 0 on this host: connections still queued on an old proxy's listeners when it closed them were reset, not moved to the new proxy; set it to 1 (systemd/remora-sysctl.conf, docs/operations.md)"
    : null;
}
