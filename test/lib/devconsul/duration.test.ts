import t from 'tap';
import { formatGoDuration, parseGoDuration } from '../../../lib/devconsul/index.ts';

t.test('parses Go duration strings into nanoseconds', async (t) => {
  t.equal(parseGoDuration('10s'), 10e9);
  t.equal(parseGoDuration('1m30s'), 90e9);
  t.equal(parseGoDuration('1.5h'), 5400e9);
  t.equal(parseGoDuration('250ms'), 250e6);
  t.equal(parseGoDuration('0'), 0);
  t.equal(parseGoDuration('-2s'), -2e9);
  t.throws(() => parseGoDuration('10'), { message: 'time: missing unit in duration "10"' });
  t.throws(() => parseGoDuration('abc'), { message: 'time: invalid duration "abc"' });
  t.throws(() => parseGoDuration('5y'), { message: 'time: unknown unit "y" in duration "5y"' });
});

t.test("formats nanoseconds the way Go's Duration.String does", async (t) => {
  t.equal(formatGoDuration(0), '0s');
  t.equal(formatGoDuration(10e9), '10s');
  t.equal(formatGoDuration(60e9), '1m0s');
  t.equal(formatGoDuration(5400e9), '1h30m0s');
  t.equal(formatGoDuration(1.5e9), '1.5s');
  t.equal(formatGoDuration(500e6), '500ms');
  t.equal(formatGoDuration(-1e9), '-1s');
});
