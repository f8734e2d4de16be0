// Runs the embedded catalog (lib/devconsul `startDevConsul`) as its own process so that its CPU
// and memory can be read from /proc. Prints {"url","port","pid"} once it accepts connections and
// runs until SIGTERM.
//   node bench/consul/devconsul-server.ts '{}'
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { reportChildError } from '../lib/child.ts';
import { REPO_ROOT } from '../dataplane/paths.ts';

interface DevConsulModule {
  startDevConsul(opts: {
    host?: string;
    port?: number;
    nodeName?: string;
    datacenter?: string;
  }): Promise<{
    url: string;
    port: number;
    close(): Promise<void>;
  }>;
}

try {
  const mod = (await import(
    pathToFileURL(join(REPO_ROOT, 'lib/devconsul/index.ts')).href
  )) as DevConsulModule;
  if (typeof mod.startDevConsul !== 'function')
    throw new Error('lib/devconsul has no startDevConsul export');
  const dc = await mod.startDevConsul({
    host: '127.0.0.1',
    port: 0,
    nodeName: 'bench-node',
    datacenter: 'dc1',
  });
  process.stdout.write(`${JSON.stringify({ url: dc.url, port: dc.port, pid: process.pid })}\n`);
  const stop = (): void => {
    void dc.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} catch (err) {
  reportChildError(err);
}
