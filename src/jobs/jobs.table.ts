import type { Generated, Insertable, Selectable } from 'kysely';
import type { CreatedAt, NullableTimestamp, Timestamp } from '../db/column-types.js';

export const jobStates = ['queued', 'running', 'succeeded', 'dead'] as const;
export type JobState = (typeof jobStates)[number];

/** The durable job queue (decision 0060). A failed attempt goes back to `queued` with a later run_at. */
export interface JobsTable {
  id: string;
  name: string;
  key: string | null;
  /** JSON. */
  payload: string;
  state: JobState;
  attempts: Generated<number>;
  max_attempts: number;
  run_at: Timestamp;
  /** The lease of the worker running it; past it, another worker takes the job over. */
  locked_until: NullableTimestamp;
  locked_by: string | null;
  last_error: string | null;
  trace_parent: string | null;
  created_at: CreatedAt;
  started_at: NullableTimestamp;
  finished_at: NullableTimestamp;
}

export type JobRow = Selectable<JobsTable>;
export type NewJobRow = Insertable<JobsTable>;
