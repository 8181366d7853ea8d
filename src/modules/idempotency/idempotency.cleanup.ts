import type { Logger } from 'pino';
import type { Queryable } from '../../db/database.js';
import { deleteExpired } from './idempotency.service.js';

export interface PeriodicCleanup {
  start(): void;
  /** Stops the timer and waits for a run in progress (before the database closes). */
  stop(): Promise<void>;
  /** One run now (also what the timer does); resolves with the number of keys removed. */
  runOnce(): Promise<number>;
}

/**
 * Removes expired idempotency keys every `intervalMs` in each process (0: never; the
 * `npm run idempotency:cleanup` command does the same once). Runs never overlap, the timer never
 * keeps the process alive, and a failure is logged and retried at the next tick.
 */
export function createIdempotencyCleanup(db: Queryable, intervalMs: number, logger: Logger): PeriodicCleanup {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;

  const runOnce = (): Promise<number> => {
    running ??= deleteExpired(db)
      .then((removed) => {
        if (removed > 0) logger.info({ removed }, 'expired idempotency keys removed');
        return removed;
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };

  return {
    start() {
      if (intervalMs <= 0 || timer !== undefined) return;
      timer = setInterval(() => {
        runOnce().catch((err: unknown) => logger.warn({ err }, 'idempotency key cleanup failed'));
      }, intervalMs);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      timer = undefined;
      await running?.catch(() => {});
    },
    runOnce,
  };
}
