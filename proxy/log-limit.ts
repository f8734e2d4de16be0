// Per-request failures must not flood the log: at most one line per code per interval, with
// the number of similar lines suppressed since the last one.
import { logError, type Logger } from '../lib/log/index.ts';
import type { RemoraError } from '../lib/errors/index.ts';

export const LOG_INTERVAL_MS = 5_000;

export function createLimitedErrorLog(logger: Logger, now: () => number = Date.now) {
  const last = new Map<string, { at: number; suppressed: number }>();
  return (err: RemoraError, msg: string): void => {
    const t = now();
    const e = last.get(err.code);
    if (e !== undefined && t - e.at < LOG_INTERVAL_MS) {
      e.suppressed++;
      return;
    }
    const suppressed = e?.suppressed ?? 0;
    last.set(err.code, { at: t, suppressed: 0 });
    logError(
      logger.child(suppressed > 0 ? { suppressedSinceLast: suppressed } : {}),
      err,
      msg,
      'warn',
    );
  };
}
