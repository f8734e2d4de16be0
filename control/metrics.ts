import { createServer, type Server } from 'node:http';
import { Counter, Histogram, Registry } from 'prom-client';
import type { AddressInfo } from 'node:net';

export interface ControlMetrics {
  registry: Registry;
  requests: Counter<'subject' | 'result'>;
  refusals: Counter<'subject' | 'code'>;
  issued: Counter<'service'>;
  duration: Histogram<'subject'>;
  caRotations: Counter;
}

/** Metrics of one control replica; names start with `remora_control_`. */
export function createControlMetrics(): ControlMetrics {
  const registry = new Registry();
  return {
    registry,
    requests: new Counter({
      name: 'remora_control_requests_total',
      help: 'Requests handled, by subject and result (ok|error).',
      labelNames: ['subject', 'result'],
      registers: [registry],
    }),
    refusals: new Counter({
      name: 'remora_control_refusals_total',
      help: 'Requests refused with an error reply, by subject and error code.',
      labelNames: ['subject', 'code'],
      registers: [registry],
    }),
    issued: new Counter({
      name: 'remora_control_certificates_issued_total',
      help: 'Workload certificates issued, by service.',
      labelNames: ['service'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'remora_control_request_duration_seconds',
      help: 'Time to handle one request, by subject.',
      labelNames: ['subject'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry],
    }),
    caRotations: new Counter({
      name: 'remora_control_ca_rotations_total',
      help: 'CA rotations performed by this replica.',
      registers: [registry],
    }),
  };
}

/** Serves `/metrics` (Prometheus text) on 127.0.0.1 only. Port 0 picks a free port. */
export async function startMetricsServer(
  registry: Registry,
  port: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics\n');
      return;
    }
    registry
      .metrics()
      .then((text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text))
      .catch((err: Error) => res.writeHead(500).end(err.message));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
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
