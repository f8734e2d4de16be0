import t from 'tap';
import { Writable } from 'node:stream';
import { createLogger, logError } from '../../../lib/log/index.ts';
import { RemoraError } from '../../../lib/errors/index.ts';

function capture(): { stream: Writable; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return {
    stream,
    lines: () =>
      chunks
        .join('')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
  };
}

t.test('log lines are JSON with level label, time, component and message', async (t) => {
  const c = capture();
  const log = createLogger({
    component: 'agent',
    base: { node: 'n1' },
    destination: c.stream,
    level: 'info',
  });
  log.debug('hidden');
  log.info({ service: 'api' }, 'registered');
  const [line] = c.lines();
  t.match(line, {
    level: 'info',
    component: 'agent',
    node: 'n1',
    service: 'api',
    msg: 'registered',
  });
  t.match(line!.time, /^\d{4}-\d\d-\d\dT/);
  t.equal(c.lines().length, 1, 'debug is below the level');
});

t.test('errors carry their stable code and details', async (t) => {
  const c = capture();
  const log = createLogger({ component: 'control', destination: c.stream });
  logError(log, new RemoraError('REMORA_E_USAGE', 'bad flag', { flag: '--x' }), 'cannot start');
  logError(log, new Error('kaput'), undefined, 'warn');
  const [a, b] = c.lines();
  t.match(a, {
    level: 'error',
    code: 'REMORA_E_USAGE',
    details: { flag: '--x' },
    msg: 'cannot start: bad flag',
  });
  t.match(b, { level: 'warn', code: 'REMORA_E_INTERNAL', msg: 'kaput' });
  t.match(b!.stack, /kaput/);
});

t.test('secrets never reach a log line', async (t) => {
  const c = capture();
  const log = createLogger({ component: 'agent', destination: c.stream });
  log.info(
    {
      token: 'tok-123',
      req: { nodeToken: 'nt-456', keyPem: 'PRIVATE' },
      headers: { authorization: 'Bearer z' },
    },
    'x',
  );
  const text = JSON.stringify(c.lines());
  for (const s of ['tok-123', 'nt-456', 'PRIVATE', 'Bearer z']) t.notMatch(text, s);
});
