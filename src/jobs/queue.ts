import { randomUUID } from 'node:crypto';
import type { Queryable } from '../db/database.js';
import type { JobRow } from './jobs.table.js';

/**
 * The durable job queue: one table (`jobs`) in the service's own database, on SQLite and
 * PostgreSQL alike (decision 0062). Enqueueing inside a transaction makes the job part of that
 * transaction (an outbox: the job exists exactly when the change that needs it committed).
 */

export interface EnqueueOptions {
  /** Idempotency key: a job with this key already queued, running or finished makes this a no-op. */
  readonly key?: string;
  readonly runAt?: Date;
  readonly maxAttempts?: number;
  /** W3C traceparent to continue in the job's span (tracing.ts). */
  readonly traceParent?: string;
}

export interface Enqueued {
  readonly id: string;
  /** False when a job with the same key existed (nothing was added). */
  readonly created: boolean;
}

export type TraceParentSource = () => string | undefined;

export interface JobQueue {
  enqueue(db: Queryable, name: string, payload: unknown, options?: EnqueueOptions): Promise<Enqueued>;
  /** Called after every enqueue of this process (an in-process worker polls at once). */
  onEnqueued(listener: () => void): void;
}

export function createJobQueue(defaults: {
  maxAttempts: number;
  /** The active trace's traceparent, when tracing is on. */
  traceParent?: TraceParentSource;
}): JobQueue {
  const listeners: Array<() => void> = [];
  return {
    async enqueue(db, name, payload, options = {}) {
      const id = randomUUID();
      const traceParent = options.traceParent ?? defaults.traceParent?.();
      const inserted = await db
        .insertInto('jobs')
        .values({
          id,
          name,
          key: options.key ?? null,
          payload: JSON.stringify(payload ?? {}),
          state: 'queued',
          max_attempts: options.maxAttempts ?? defaults.maxAttempts,
          run_at: (options.runAt ?? new Date()).toISOString(),
          trace_parent: traceParent ?? null,
        })
        .onConflict((oc) => oc.column('key').doNothing())
        .returning('id')
        .executeTakeFirst();
      if (inserted !== undefined) {
        for (const listener of listeners) listener();
        return { id, created: true };
      }
      const existing = await db
        .selectFrom('jobs')
        .select('id')
        .where('key', '=', options.key ?? '')
        .executeTakeFirst();
      return { id: existing?.id ?? id, created: false };
    },
    onEnqueued(listener) {
      listeners.push(listener);
    },
  };
}

export function jobPayload<T>(job: JobRow): T {
  return JSON.parse(job.payload) as T;
}
