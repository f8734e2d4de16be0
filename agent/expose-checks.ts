// Consul's `proxy.expose.checks = true`: each HTTP and gRPC check of the service is served
// through the sidecar, on a listener port of its own (from the agent's `exposePortMin`–
// `exposePortMax`, as Consul's expose_min_port–expose_max_port), and the check is registered
// against that listener instead of the app. A Consul agent that cannot reach the app's
// 127.0.0.1 (another container, another network namespace) can then still probe it.
import type { ExposePath } from '../lib/proxy-api/index.ts';
import { exposePathProblem } from '../lib/proxy-api/index.ts';
import { RemoraError } from '../lib/errors/index.ts';

/** One check path the sidecar serves for `expose.checks` (its listener port comes later). */
export interface CheckExposure {
  /** Indexes, in the definition's checks, of the checks this path serves. */
  checks: number[];
  path: string;
  localPathPort: number;
  protocol: ExposePath['protocol'];
}

/** The gRPC health-checking method every gRPC check calls (grpc.health.v1). */
export const GRPC_HEALTH_PATH = '/grpc.health.v1.Health/Check';

/** The value of `key` in a check, whatever its case (`HTTP`, `http`; `GRPCUseTLS`, `grpc_use_tls`). */
function field(check: Record<string, unknown>, ...keys: string[]): [string, unknown] | undefined {
  for (const k of Object.keys(check)) {
    const bare = k.toLowerCase().replace(/_/g, '');
    if (keys.includes(bare)) return [k, check[k]];
  }
  return undefined;
}

type Parsed = { path: string; localPathPort: number; protocol: ExposePath['protocol'] } | string;

function parseHttp(value: unknown): Parsed {
  if (typeof value !== 'string') return 'its http is not a string';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `its http ${JSON.stringify(value)} is not a URL`;
  }
  if (url.protocol !== 'http:')
    return `its URL is ${url.protocol.slice(0, -1)}, and an exposed listener speaks plain HTTP`;
  const problem = exposePathProblem(url.pathname);
  if (problem !== null) return `its path ${problem}`;
  return { path: url.pathname, localPathPort: Number(url.port || 80), protocol: 'http' };
}

function parseGrpc(value: unknown, tls: unknown): Parsed {
  if (typeof value !== 'string') return 'its grpc is not a string';
  if (tls === true) return 'it uses TLS, and an exposed listener speaks plain h2c';
  const hostPort = value.split('/')[0]!;
  let url: URL;
  try {
    url = new URL(`http://${hostPort}`);
  } catch {
    return `its grpc ${JSON.stringify(value)} is not host:port[/service]`;
  }
  if (url.port === '') return `its grpc ${JSON.stringify(value)} names no port`;
  return { path: GRPC_HEALTH_PATH, localPathPort: Number(url.port), protocol: 'http2' };
}

/**
 * The check paths to expose for a definition whose `expose.checks` is true: one per distinct
 * (path, app port, protocol) among its HTTP and gRPC checks. A check that cannot be served that
 * way (HTTPS, gRPC over TLS, a URL that does not parse) is left as it is, and said in `notes`.
 */
export function checkExposures(
  checks: readonly Record<string, unknown>[],
  where: string,
  notes?: RemoraError[],
): CheckExposure[] {
  const out: CheckExposure[] = [];
  checks.forEach((check, index) => {
    const http = field(check, 'http');
    const grpc = field(check, 'grpc');
    if (http === undefined && grpc === undefined) return;
    const parsed = http ? parseHttp(http[1]) : parseGrpc(grpc![1], field(check, 'grpcusetls')?.[1]);
    if (typeof parsed === 'string') {
      notes?.push(
        new RemoraError(
          'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
          `${where} is not applied to check ${index} (${checkName(check, index)}): ${parsed}; the check keeps probing the app directly`,
          { field: where, check: index },
        ),
      );
      return;
    }
    const same = out.find(
      (e) =>
        e.path === parsed.path &&
        e.localPathPort === parsed.localPathPort &&
        e.protocol === parsed.protocol,
    );
    if (same) same.checks.push(index);
    else out.push({ checks: [index], ...parsed });
  });
  return out;
}

function checkName(check: Record<string, unknown>, index: number): string {
  const name = field(check, 'name')?.[1] ?? field(check, 'checkid', 'id')?.[1];
  return typeof name === 'string' ? JSON.stringify(name) : `#${index}`;
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The check pointed at the sidecar's listener for it (`address:port`), the rest unchanged. */
export function rerouteCheck(
  check: Record<string, unknown>,
  address: string,
  port: number,
): Record<string, unknown> {
  const out = { ...check };
  const http = field(check, 'http');
  if (http) {
    const url = new URL(http[1] as string);
    out[http[0]] = `http://${hostPort(address, port)}${url.pathname}${url.search}`;
    return out;
  }
  const grpc = field(check, 'grpc')!;
  const value = grpc[1] as string;
  const slash = value.indexOf('/');
  out[grpc[0]] = hostPort(address, port) + (slash < 0 ? '' : value.slice(slash));
  return out;
}
