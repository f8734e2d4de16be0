import t from 'tap';
import net, { type AddressInfo, type Server } from 'node:net';
import { once } from 'node:events';
import { bindShareable } from '../../proxy/listen.ts';

/** A server that answers each connection with `name` and closes it. */
function named(name: string): Server {
  return net.createServer((s) => s.end(name));
}

function ask(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('end', () => resolve(got));
    s.on('error', reject);
  });
}

t.test('a proxy that is not taking over refuses a port another proxy holds', async (t) => {
  const first = named('first');
  await bindShareable(first, '127.0.0.1', 0, false);
  t.teardown(() => first.close());
  const port = (first.address() as AddressInfo).port;
  const second = named('second');
  await t.rejects(bindShareable(second, '127.0.0.1', port, false), { code: 'EADDRINUSE' });
});

t.test('a successor joins the ports, shares the connections, and keeps them alone', async (t) => {
  const holder = named('old');
  const probe = net.createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  await bindShareable(holder, '127.0.0.1', port, false);
  const successor = named('new');
  await bindShareable(successor, '127.0.0.1', port, true);
  t.teardown(() => successor.close());
  const seen = new Set<string>();
  for (let i = 0; i < 200 && seen.size < 2; i++) seen.add(await ask(port));
  t.same([...seen].sort(), ['new', 'old'], 'the kernel spreads new connections over both');
  await new Promise((r) => holder.close(r));
  for (let i = 0; i < 20; i++) t.equal(await ask(port), 'new');
});

t.test('a port held without sharing cannot be joined (a proxy from before)', async (t) => {
  const plain = net.createServer();
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  t.teardown(() => plain.close());
  const port = (plain.address() as AddressInfo).port;
  await t.rejects(bindShareable(named('new'), '127.0.0.1', port, true), { code: 'EADDRINUSE' });
});

t.test('a bound listener outlives a later server error (EMFILE on accept)', async (t) => {
  const server = named('up');
  await bindShareable(server, '127.0.0.1', 0, false);
  t.teardown(() => server.close());
  t.doesNotThrow(() =>
    server.emit('error', Object.assign(new Error('accept'), { code: 'EMFILE' })),
  );
  t.equal(await ask((server.address() as AddressInfo).port), 'up', 'it still serves');
});
