import { hostname } from 'node:os';
import { sql, type Updateable } from 'kysely';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { Db, Engine } from '../db/database.js';
import type { JobRow, JobsTable } from './jobs.table.js';

export interface JobContext {
  readonly job: JobRow;
  readonly logger: Logger;
  /**
   * This attempt took the job over from one whose worker stopped without recording an outcome (its
   * lease ran out): whatever that attempt did outside the database — a mail the SMTP server
   * accepted — may have happened already (decision 0098).
   */
  readonly takenOver: boolean;
  /**
   * Aborted when this worker lost the job's lease (a renewal found the job held by another worker,
   * which runs it again): a handler checks it before anything outside the database — a mail — so
   * the job's effect happens once, by its holder. Its reason is a LeaseLostError.
   */
  readonly signal: AbortSignal;
}

/** The reason of a job's signal when its worker lost the lease. */
export class LeaseLostError extends Error {
  constructor(jobId: string) {
    super(`the lease of job ${jobId} was lost: another worker holds it`);
    this.name = 'LeaseLostError';
  }
}

/** last_error of a job claimed after its previous attempt's lease ran out (set by the claim). */
export const takenOverPrefix = 'lease of attempt ';

export type JobHandler = (context: JobContext) => Promise<void>;

/** Runs a job's handler; tracing wraps it in a span continuing the job's trace_parent. */
export type JobRunner = (job: JobRow, run: () => Promise<void>) => Promise<void>;

export interface RecurringJob {
  readonly name: string;
  readonly intervalMs: number;
}

export interface JobWorker {
  readonly id: string;
  start(): void;
  /** Stops claiming and waits for the jobs in hand (their leases make others take them over otherwise). */
  stop(): Promise<void>;
  /** Polls now (an enqueue in this process calls it). */
  wake(): void;
  /** One claim-and-run round; resolves when the jobs it claimed are done (tests). */
  runOnce(): Promise<number>;
}

export interface JobMetrics {
  readonly finished: Counter<'name' | 'result'>;
  readonly latency: Histogram<'name'>;
  readonly duration: Histogram<'name'>;
  readonly running: Gauge<'name'>;
  readonly takenOver: Counter<'name'>;
}

export function createJobMetrics(registry: Registry): JobMetrics {
  return {
    finished: new Counter({
      name: 'jobs_finished_total',
      help: 'Job attempts by result: succeeded, failed (will retry), dead (attempts used up).',
      labelNames: ['name', 'result'],
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'jobs_latency_seconds',
      help: 'From when a job was due to when a worker started it.',
      labelNames: ['name'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'jobs_duration_seconds',
      help: 'How long an attempt ran.',
      labelNames: ['name'],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60],
      registers: [registry],
    }),
    running: new Gauge({
      name: 'jobs_running',
      help: 'Jobs this process is running now.',
      labelNames: ['name'],
      registers: [registry],
    }),
    takenOver: new Counter({
      name: 'jobs_taken_over_total',
      help: 'Attempts that took a job over from a worker that stopped without an outcome (for mail: possible duplicates).',
      labelNames: ['name'],
      registers: [registry],
    }),
  };
}

/**
 * `jobs{state}`: jobs in the queue by state (queued, running, dead), read from the database at each
 * scrape — the same numbers on every process, whichever runs the workers.
 */
export function registerQueueGauge(registry: Registry, db: Db, logger: Logger): void {
  new Gauge({
    name: 'jobs',
    help: 'Jobs in the queue by state (queued, running, dead), from the database.',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      this.reset();
      try {
        const rows = await db
          .selectFrom('jobs')
          .select(['state', (eb) => eb.fn.countAll<number | string>().as('n')])
          .where('state', 'in', ['queued', 'running', 'dead'])
          .groupBy('state')
          .execute();
        for (const state of ['queued', 'running', 'dead']) {
          const row = rows.find((r) => r.state === state);
          this.set({ state }, Number(row?.n ?? 0));
        }
      } catch (err) {
        logger.warn({ err }, 'could not count jobs for /metrics');
      }
    },
  });
}

/** Exponential backoff with jitter: base × 2^(attempt−1) × [0.75, 1.25), at most an hour. */
export function backoffMs(baseMs: number, attempt: number, random: () => number = Math.random): number {
  const exponential = Math.min(baseMs * 2 ** Math.max(0, attempt - 1), 3_600_000);
  return Math.round(exponential * (0.75 + random() * 0.5));
}

const errorText = (err: unknown) =>
  (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).slice(0, 2000);

/**
 * A worker: claims due jobs (and running ones whose lease expired: their worker died), runs their
 * handlers `concurrency` at a time, renews the lease while a handler runs, and records (and counts)
 * the outcome only if it still holds the job (the attempt number fences a worker that lost its
 * lease; a renewal that finds the job taken aborts the handler's signal and stops renewing). A
 * failure is retried after a backoff; after `maxAttempts` the job is `dead` (the dead letters,
 * kept for `JOBS_RETENTION_HOURS`). Recurring jobs are enqueued once per interval by key, so any
 * number of workers make one run per interval.
 */
export function createJobWorker(input: {
  db: Db;
  engine: Engine;
  config: Config['jobs'];
  handlers: Readonly<Record<string, JobHandler>>;
  recurring?: readonly RecurringJob[];
  enqueueRecurring?: (job: RecurringJob, slot: number) => Promise<void>;
  metrics: JobMetrics;
  logger: Logger;
  runner?: JobRunner;
  id?: string;
}): JobWorker {
  const { db, engine, config, handlers, metrics, logger } = input;
  const id = input.id ?? `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  const leaseMs = config.leaseSeconds * 1000;
  const runner: JobRunner = input.runner ?? ((_job, run) => run());
  const inHand = new Set<Promise<void>>();
  const lastSlot = new Map<string, number>();
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let polling: Promise<number> | undefined;
  let again = false;

  const claim = async (limit: number): Promise<JobRow[]> => {
    const now = new Date();
    const nowIso = now.toISOString();
    let due = db
      .selectFrom('jobs')
      .select('id')
      .where((eb) =>
        eb.or([
          eb.and([eb('state', '=', 'queued'), eb('run_at', '<=', nowIso)]),
          eb.and([eb('state', '=', 'running'), eb('locked_until', '<', nowIso)]),
        ]),
      )
      .orderBy('run_at')
      .limit(limit);
    // PostgreSQL: concurrent workers skip each other's rows. SQLite has one writer at a time.
    if (engine === 'postgres') due = due.forUpdate().skipLocked();
    return db
      .updateTable('jobs')
      .set({
        state: 'running',
        attempts: sql`attempts + 1`,
        locked_by: id,
        locked_until: new Date(now.getTime() + leaseMs).toISOString(),
        started_at: nowIso,
        // A job still "running" here lost its worker: say so (its handler and the dead letter see it).
        // SET expressions read the row as it was, before this update.
        last_error: sql<
          string | null
        >`CASE WHEN state = 'running' THEN ${sql.lit(takenOverPrefix)} || CAST(attempts AS varchar(12)) || ' (' || COALESCE(locked_by, '?') || ') expired: its worker stopped without an outcome' ELSE last_error END`,
      })
      .where('id', 'in', due)
      .returningAll()
      .execute();
  };

  /**
   * Updates the job only while this worker still holds this attempt of it; true when it did (no
   * row: another worker took the job over after the lease ran out, and that attempt is the job's).
   */
  const updateHeld = async (job: JobRow, changes: Updateable<JobsTable>): Promise<boolean> => {
    const result = await db
      .updateTable('jobs')
      .set(changes)
      .where('id', '=', job.id)
      .where('locked_by', '=', id)
      .where('attempts', '=', job.attempts)
      .executeTakeFirst();
    return result.numUpdatedRows > 0n;
  };

  const leaseLost = (job: JobRow, when: string) =>
    logger.warn(
      { event: 'job_lease_lost', jobId: job.id, job: job.name, attempt: job.attempts, when },
      'job lease lost to another worker: this attempt records nothing',
    );

  /** Records the outcome, and counts it only when it was recorded (the new holder counts its own). */
  const finish = async (job: JobRow, error: unknown): Promise<void> => {
    const now = new Date();
    if (error === undefined) {
      const recorded = await updateHeld(job, {
        state: 'succeeded',
        finished_at: now.toISOString(),
        locked_until: null,
        last_error: null,
      });
      if (!recorded) return leaseLost(job, 'finish');
      metrics.finished.inc({ name: job.name, result: 'succeeded' });
      return;
    }
    const dead = job.attempts >= job.max_attempts;
    const text = errorText(error);
    const recorded = await updateHeld(
      job,
      dead
        ? { state: 'dead', finished_at: now.toISOString(), locked_until: null, last_error: text }
        : {
            state: 'queued',
            run_at: new Date(now.getTime() + backoffMs(config.backoffBaseMs, job.attempts)).toISOString(),
            locked_until: null,
            last_error: text,
          },
    );
    if (!recorded) return leaseLost(job, 'finish');
    metrics.finished.inc({ name: job.name, result: dead ? 'dead' : 'failed' });
    logger[dead ? 'error' : 'warn'](
      {
        event: dead ? 'job_dead' : 'job_failed',
        jobId: job.id,
        job: job.name,
        attempt: job.attempts,
        err: error,
      },
      dead ? 'job failed for the last time: dead-lettered' : 'job failed; will retry',
    );
  };

  const execute = async (job: JobRow): Promise<void> => {
    const jobLogger = logger.child({ jobId: job.id, job: job.name, attempt: job.attempts });
    const handler = handlers[job.name];
    const takenOver = job.last_error?.startsWith(takenOverPrefix) === true;
    if (takenOver) {
      metrics.takenOver.inc({ name: job.name });
      jobLogger.warn(
        { event: 'job_taken_over', reason: job.last_error },
        'job taken over after its lease ran out',
      );
    }
    metrics.latency.observe({ name: job.name }, Math.max(0, Date.now() - Date.parse(job.run_at)) / 1000);
    if (job.attempts > job.max_attempts) {
      // Its last attempt's worker died holding it.
      await finish(job, new Error('the lease of the last attempt expired (worker died?)'));
      return;
    }
    if (handler === undefined) {
      await finish(job, new Error(`no handler for job "${job.name}"`));
      return;
    }
    const lease = new AbortController();
    const renew = setInterval(
      () => {
        updateHeld(job, { locked_until: new Date(Date.now() + leaseMs).toISOString() })
          .then((renewed) => {
            // No row: another worker claimed the job after the lease ran out (this process was
            // paused or starved past it). Stop renewing and tell the handler to stop before any
            // side effect; the new holder runs the job. A failed renewal (database error) is no
            // such proof: the next one tries again.
            if (renewed || lease.signal.aborted) return;
            clearInterval(renew);
            leaseLost(job, 'renewal');
            lease.abort(new LeaseLostError(job.id));
          })
          .catch((err: unknown) => jobLogger.warn({ err }, 'could not renew the job lease'));
      },
      Math.max(500, leaseMs / 3),
    );
    renew.unref();
    metrics.running.inc({ name: job.name });
    const started = process.hrtime.bigint();
    let failure: unknown;
    try {
      await runner(job, () => handler({ job, logger: jobLogger, takenOver, signal: lease.signal }));
    } catch (err) {
      failure = err ?? new Error('job failed');
    } finally {
      clearInterval(renew);
      metrics.running.dec({ name: job.name });
      metrics.duration.observe({ name: job.name }, Number(process.hrtime.bigint() - started) / 1e9);
    }
    await finish(job, failure);
    if (failure === undefined) jobLogger.debug({ event: 'job_succeeded' }, 'job succeeded');
  };

  const scheduleRecurring = async () => {
    if (input.recurring === undefined || input.enqueueRecurring === undefined) return;
    for (const job of input.recurring) {
      if (job.intervalMs <= 0) continue;
      const slot = Math.floor(Date.now() / job.intervalMs);
      if (lastSlot.get(job.name) === slot) continue;
      await input.enqueueRecurring(job, slot);
      lastSlot.set(job.name, slot);
    }
  };

  const poll = async (): Promise<number> => {
    await scheduleRecurring();
    const free = config.concurrency - inHand.size;
    if (free <= 0) return 0;
    const jobs = await claim(free);
    for (const job of jobs) {
      const work = execute(job)
        .catch((err: unknown) => logger.error({ err, jobId: job.id }, 'could not record a job outcome'))
        .finally(() => {
          inHand.delete(work);
          if (running) wake();
        });
      inHand.add(work);
    }
    if (jobs.length === free) again = true;
    return jobs.length;
  };

  const tick = () => {
    if (!running) return;
    if (polling !== undefined) {
      again = true;
      return;
    }
    again = false;
    polling = poll()
      .catch((err: unknown) => {
        logger.warn({ err }, 'job poll failed');
        return 0;
      })
      .finally(() => {
        polling = undefined;
        if (running && again) setImmediate(tick);
      });
  };

  const wake = () => {
    if (running) setImmediate(tick);
  };

  return {
    id,
    start() {
      if (running) return;
      running = true;
      timer = setInterval(tick, config.pollIntervalMs);
      timer.unref();
      tick();
    },
    async stop() {
      running = false;
      clearInterval(timer);
      await polling;
      await Promise.allSettled([...inHand]);
    },
    wake,
    async runOnce() {
      const before = new Set(inHand);
      const claimed = await poll();
      await Promise.allSettled([...inHand].filter((p) => !before.has(p)));
      return claimed;
    },
  };
}
