import type { Config } from '../config.js';

/**
 * Says which database a command is about to use, without credentials: "postgres database shop on
 * db.internal:5432" or "sqlite /srv/shipshape/data/shipshape.db". Printed before anything is written,
 * so nobody creates an admin in SQLite while the server runs on PostgreSQL.
 */
export function describeDatabase(database: Config['database']): string {
  if (database.url === undefined) return `sqlite ${database.sqlitePath}`;
  const url = new URL(database.url);
  const name = decodeURIComponent(url.pathname.replace(/^\//, '')) || '(default database)';
  return `postgres database ${name} on ${url.hostname || 'localhost'}:${url.port || '5432'}`;
}

/** The Redis a process will use, without credentials. */
export function describeRedis(redis: Config['redis']): string {
  if (redis.url === undefined) return 'no Redis (in-process cache and limits)';
  const url = new URL(redis.url);
  return `Redis ${url.hostname}:${url.port || '6379'} (keys under ${redis.keyPrefix})`;
}
