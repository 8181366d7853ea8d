import { type RawBuilder, sql } from 'kysely';
import type { Engine, Queryable } from './database.js';

/**
 * The database's own clock, for stamps that several app servers compare (revocations): one clock
 * for everybody, so an app server whose clock is wrong cannot reorder them. PostgreSQL's
 * clock_timestamp() is the moment the statement runs (now() would be the start of the
 * transaction, which may have waited for a lock); SQLite's 'now' is the host's clock, in the
 * ISO 8601 form every stored timestamp has.
 */
export function databaseNow(engine: Engine): RawBuilder<string> {
  return engine === 'postgres'
    ? sql<string>`clock_timestamp()`
    : sql<string>`strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`;
}

/** What time the database thinks it is, as an ISO 8601 UTC string. */
export async function readDatabaseNow(db: Queryable, engine: Engine): Promise<string> {
  const { rows } = await sql<{ now: string }>`select ${databaseNow(engine)} as now`.execute(db);
  const now = rows[0]?.now;
  if (now === undefined) throw new Error('the database returned no time');
  // PostgreSQL's parser already gives ISO 8601; normalise both to milliseconds with a Z.
  return new Date(now).toISOString();
}
