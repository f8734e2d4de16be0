// The per-endpoint pool of shared connections (remora-mux/1, remora-tcp/1), with fake sockets
// and connections: which connection new work gets, when another one is dialed, and what a peer
// without the protocol, the connection budget, expiry and idleness do.
import t from 'tap';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { SharedPool, type SharedConnection } from '../../../proxy/outbound/shared-pool.ts';
import { ConnectionLimiter } from '../../../proxy/stages/limits.ts';

const ALPN = 'test/1';

class FakeSocket extends EventEmitter {
  alpnProtocol: string | false;
  destroyed = false;
  constructor(alpn: string | false) {
    super();
    this.alpnProtocol = alpn;
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.emit('close');
  }
}

class FakeConn implements SharedConnection {
  dead = false;
  retiring = false;
  load = 0;
  idleSince = performance.now();
  expiresAt = Infinity;
  readonly socket: FakeSocket;
  readonly #onGone: (c: FakeConn) => void;
  constructor(socket: FakeSocket, onGone: (c: FakeConn) => void) {
    this.socket = socket;
    this.#onGone = onGone;
  }
  close(): void {
    this.retiring = true;
    if (this.load === 0) this.gone();
  }
  gone(): void {
    this.dead = true;
    this.socket.destroy();
    this.#onGone(this);
  }
}

function pool(
  o: {
    alpn?: string | false;
    maxLoad?: number;
    maxConnections?: number;
    idleTimeoutMs?: number;
    limiter?: ConnectionLimiter;
    dialMs?: number;
  } = {},
) {
  let dials = 0;
  const p = new SharedPool<FakeConn>({
    alpn: ALPN,
    maxLoad: o.maxLoad ?? 2,
    maxConnections: o.maxConnections ?? 3,
    idleTimeoutMs: o.idleTimeoutMs ?? 60_000,
    ...(o.limiter ? { limiter: o.limiter, pendingTimeoutMs: 200 } : {}),
    dial: async () => {
      dials++;
      await new Promise((r) => setTimeout(r, o.dialMs ?? 1));
      return new FakeSocket(o.alpn === undefined ? ALPN : o.alpn) as unknown as Socket;
    },
    wrap: (socket, onGone) => new FakeConn(socket as unknown as FakeSocket, onGone),
  });
  return { p, dials: () => dials };
}

t.test('callers that ask at once share one dial', async (t) => {
  const { p, dials } = pool({ dialMs: 20 });
  t.teardown(() => p.close());
  const [a, b, c] = await Promise.all([p.add(), p.add(), p.add()]);
  t.equal(dials(), 1);
  t.ok(a !== null && a === b && b === c, 'all three got the same connection');
  t.equal(p.connections, 1);
});

t.test(
  'new work goes to the least loaded connection; a new one only when all are full',
  async (t) => {
    const { p } = pool({ maxLoad: 2, maxConnections: 2 });
    t.teardown(() => p.close());
    t.equal(p.pick(), null, 'nothing open yet');
    const first = (await p.add())!;
    t.equal(p.pick(), first);
    first.load = 2;
    t.equal(p.pick(), null, 'the only connection is full: open another');
    const second = (await p.add())!;
    t.not(second, first);
    second.load = 1;
    t.equal(p.pick(), second, 'the less loaded one');
    second.load = 2;
    first.load = 3;
    t.equal(p.pick(), second, 'at maxConnections the least loaded takes more than maxLoad');
  },
);

t.test(
  'a peer without the protocol: no connection, and not asked again for a minute',
  async (t) => {
    const { p, dials } = pool({ alpn: 'http/1.1' });
    t.teardown(() => p.close());
    t.equal(await p.add(), null);
    t.equal(p.unsupported, true);
    t.equal(p.connections, 0);
    t.equal(dials(), 1);
  },
);

t.test("no new work past the peer certificate's expiry", async (t) => {
  const { p } = pool();
  t.teardown(() => p.close());
  const c = (await p.add())!;
  c.load = 1;
  c.expiresAt = Date.now() - 1;
  t.equal(p.pick(), null, 'the expired connection is not picked');
  t.equal(c.retiring, true, 'it is retired: it finishes what it carries');
  t.equal(c.dead, false);
  c.load = 0;
  c.gone();
  t.equal(p.connections, 0, 'and leaves the pool once gone');
});

t.test('idle connections are swept; busy ones stay', async (t) => {
  const { p } = pool({ idleTimeoutMs: 100 });
  t.teardown(() => p.close());
  const idle = (await p.add())!;
  idle.load = 2;
  const busy = (await p.add())!;
  busy.load = 1;
  idle.load = 0;
  idle.idleSince = performance.now() - 1000;
  busy.idleSince = performance.now() - 1000;
  await new Promise((r) => setTimeout(r, 250));
  t.equal(idle.dead, true, 'the idle one is closed');
  t.equal(busy.dead, false, 'the busy one is not');
  t.equal(p.connections, 1);
});

t.test('over the connection budget, an open connection is shared instead', async (t) => {
  const limiter = new ConnectionLimiter(
    'api',
    { maxConnections: 1, maxPendingRequests: 4, maxRequests: 100 },
    () => undefined,
  );
  const { p, dials } = pool({ limiter, maxLoad: 1 });
  t.teardown(() => p.close());
  const first = (await p.add())!;
  t.equal(limiter.open, 1, 'the connection counts against the budget');
  first.load = 1;
  const again = await p.add();
  t.equal(again, first, 'full, but the budget allows no second one');
  t.equal(dials(), 1);
  first.gone();
  t.equal(limiter.open, 0, 'its slot is given back when it closes');
});

t.test('close retires every connection; one dialed after close is closed at once', async (t) => {
  const { p } = pool({ dialMs: 20 });
  const a = (await p.add())!;
  a.load = 1;
  const late = p.add();
  p.close();
  t.equal(a.retiring, true);
  t.equal(a.dead, false, 'it finishes what it carries');
  const l = (await late)!;
  t.equal(l.dead, true, 'the connection that arrived after close is closed');
});
