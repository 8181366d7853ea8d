import { type Kysely, sql } from 'kysely';
import type { Engine } from '../database.js';

/**
 * Issue 16. Password reset and email verification (decision 0061): `users.email_verified_at`, and
 * the single-use tokens mailed for both, stored only as SHA-256 hashes. The durable job queue
 * (decision 0060): one table in the service's own database, so every stage — SQLite included —
 * has it.
 */

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not depend on today's Database type
type AnyDb = Kysely<any>;

export async function up(db: AnyDb, engine: Engine): Promise<void> {
  const uuid = engine === 'postgres' ? 'uuid' : 'text';
  const timestamp = engine === 'postgres' ? sql`timestamptz(3)` : sql`text`;
  const now = engine === 'postgres' ? sql`now()` : sql`(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;

  await db.schema.alterTable('users').addColumn('email_verified_at', timestamp).execute();

  await db.schema
    .createTable('account_tokens')
    .addColumn('id', uuid, (c) => c.primaryKey())
    .addColumn('token_hash', 'char(64)', (c) => c.notNull().unique())
    .addColumn('user_id', uuid, (c) => c.notNull().references('users.id').onDelete('restrict'))
    .addColumn('purpose', 'varchar(16)', (c) =>
      c.notNull().check(sql`purpose IN ('password_reset', 'verify_email')`),
    )
    // The address the mail went to: a verification only counts for the address it was sent to.
    .addColumn('email', 'varchar(254)', (c) => c.notNull())
    .addColumn('created_at', timestamp, (c) => c.notNull().defaultTo(now))
    .addColumn('expires_at', timestamp, (c) => c.notNull())
    .addColumn('used_at', timestamp)
    .execute();
  await db.schema
    .createIndex('account_tokens_user_id_idx')
    .on('account_tokens')
    .columns(['user_id', 'purpose'])
    .execute();
  await db.schema
    .createIndex('account_tokens_expires_at_idx')
    .on('account_tokens')
    .column('expires_at')
    .execute();

  // The clean-up job deletes ended sessions and refresh tokens by expiry (src/jobs/cleanup.ts).
  await db.schema.createIndex('sessions_expires_at_idx').on('sessions').column('expires_at').execute();
  await db.schema
    .createIndex('refresh_tokens_expires_at_idx')
    .on('refresh_tokens')
    .column('expires_at')
    .execute();

  await db.schema
    .createTable('jobs')
    .addColumn('id', uuid, (c) => c.primaryKey())
    .addColumn('name', 'varchar(64)', (c) => c.notNull())
    // The idempotency key: enqueueing a key that exists is a no-op, so a job is done once per key.
    .addColumn('key', 'varchar(200)', (c) => c.unique())
    .addColumn('payload', 'text', (c) => c.notNull())
    .addColumn('state', 'varchar(16)', (c) =>
      c.notNull().check(sql`state IN ('queued', 'running', 'succeeded', 'dead')`),
    )
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('run_at', timestamp, (c) => c.notNull())
    .addColumn('locked_until', timestamp)
    .addColumn('locked_by', 'varchar(128)')
    .addColumn('last_error', 'varchar(2000)')
    // W3C traceparent of the request that enqueued it (the job's span continues that trace).
    .addColumn('trace_parent', 'varchar(64)')
    .addColumn('created_at', timestamp, (c) => c.notNull().defaultTo(now))
    .addColumn('started_at', timestamp)
    .addColumn('finished_at', timestamp)
    .execute();
  // Claiming: due queued jobs, and running ones whose lease ran out.
  await db.schema.createIndex('jobs_state_run_at_idx').on('jobs').columns(['state', 'run_at']).execute();
  await db.schema.createIndex('jobs_finished_at_idx').on('jobs').column('finished_at').execute();
}

/** What down() destroys, for `db:migrate --down` to say before it asks. */
export const dropsOnRevert = ['jobs', 'account_tokens'] as const;

/** Also drops the column users.email_verified_at (the users keep their rows) and two indexes. */
export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('jobs').execute();
  await db.schema.dropTable('account_tokens').execute();
  await db.schema.dropIndex('sessions_expires_at_idx').execute();
  await db.schema.dropIndex('refresh_tokens_expires_at_idx').execute();
  await db.schema.alterTable('users').dropColumn('email_verified_at').execute();
}
