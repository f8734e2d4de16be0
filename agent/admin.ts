// The agent's loopback status endpoint, read by `remora status`.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AgentStatus } from './agent.ts';

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

export async function startAdminServer(o: {
  port: number;
  status(): AgentStatus;
}): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const url = req.url?.split('?')[0];
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
