// Binding the proxy's listeners so that a successor can take them over without a gap
// (docs/operations.md, "Restarting proxies without a gap"). Every listener is bound with
// SO_REUSEPORT, which lets the agent's next proxy for the same instance bind the same ports while
// this one still serves, and the kernel then spreads new connections over both until this one
// closes its listeners and drains. SO_REUSEPORT alone would also let any other Remora proxy of
// the same user share a port by mistake, so a proxy that is not taking over first checks that
// nothing holds the port (an exclusive bind) and refuses it otherwise, as a plain bind would.
import net, { type Server } from 'node:net';

/** Fails with the bind error (EADDRINUSE…) when the port is held, resolves when it is free. */
function checkFree(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * Binds `server` on host:port with SO_REUSEPORT. With `join` (a successor taking over from the
 * instance's running proxy) the port may be held by that proxy; without it, it must be free.
 * Rejects with the bind error; once bound, the server's later errors are absorbed.
 */
export async function bindShareable(
  server: Server,
  host: string,
  port: number,
  join: boolean,
): Promise<void> {
  if (!join && port !== 0) await checkFree(host, port);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, backlog: 1024, reusePort: port !== 0 }, () => {
      server.off('error', reject);
      // a listening server's later errors (EMFILE on accept) must not end the process; the
      // connections it keeps serving are what matters
      server.on('error', () => {});
      resolve();
    });
  });
}
