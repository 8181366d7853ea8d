import pg from 'pg';
import type { Config } from '../config.js';
import { createRedisCacheBackend } from '../infra/cache/redis-backend.js';
import { createLogger } from '../infra/logger.js';
import { type LsnKey, lsnKeyOf } from '../infra/lsn.js';
import { createRedis } from '../infra/redis.js';

/**
 * The primary's WAL position now, read after the command committed: the floor of its invalidation,
 * so that a service refilling the cache from a replica that has not replayed the command's writes
 * reads the primary instead (decision 0030). Undefined if it cannot be read.
 */
async function primaryPosition(config: Config): Promise<LsnKey | undefined> {
  if (config.database.url === undefined) return undefined;
  const client = new pg.Client({
    connectionString: config.database.url,
    connectionTimeoutMillis: config.database.connectTimeoutMs,
    // Client-side only: PgBouncer refuses a statement_timeout sent at connection start.
    query_timeout: config.database.statementTimeoutMs,
  });
  client.on('error', () => {});
  try {
    await client.connect();
    const { rows } = await client.query<{ lsn: string | null }>(
      'select pg_current_wal_insert_lsn()::text as lsn',
    );
    return lsnKeyOf(rows[0]?.lsn);
  } catch {
    return undefined;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * After a command-line write (seed, create-admin), makes services already running on the same
 * database see it at their next read (decision 0013):
 *
 * - With Redis (REDIS_URL), the shared cache's global generation is replaced, exactly as a write
 *   through the API would: every cached page and product on every instance becomes a miss. On
 *   PostgreSQL the invalidation carries the primary's WAL position as its floor, so a refill never
 *   comes from a read replica that has not replayed the command's writes.
 * - On SQLite, each running service notices the commit itself (`PRAGMA data_version` changes when
 *   another connection commits) and drops its in-process cache before the next lookup.
 * - On PostgreSQL without Redis, in-process caches cannot be told: they catch up within the cache
 *   TTLs. Said plainly, so an operator knows.
 *
 * Returns the line to print.
 */
export async function tellRunningServices(config: Config): Promise<string> {
  const url = config.redis.url;
  if (url === undefined) {
    if (config.database.url === undefined)
      return 'running services on this SQLite file see it at their next read';
    return `running services with an in-process cache see it within ${config.cache.productListTtlSeconds} s (the cache TTL); with REDIS_URL they would see it at once`;
  }
  const redis = createRedis(
    config.redis,
    url,
    createLogger({ env: config.env, log: { ...config.log, level: 'silent' } }),
  );
  try {
    const timeoutMs = Math.max(config.redis.connectTimeoutMs, 5000);
    const ready =
      redis.client.status === 'ready' ||
      (await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        redis.client.once('ready', () => {
          clearTimeout(timer);
          resolve(true);
        });
      }));
    if (!ready) throw new Error(`no connection within ${timeoutMs} ms`);
    const floor = await primaryPosition(config);
    await createRedisCacheBackend(redis).invalidateAll(floor);
    if (floor === undefined && config.database.url !== undefined && config.database.replicas.urls.length > 0)
      return 'the shared cache (Redis) is invalidated, without a WAL floor (the position could not be read): services reading replicas see it once the replicas have replayed it';
    return 'the shared cache (Redis) is invalidated: running services see it at their next read';
  } catch (err) {
    return `warning: could not invalidate the shared cache in Redis (${err instanceof Error ? err.message : String(err)}); running services see the change within ${config.cache.productListTtlSeconds} s`;
  } finally {
    await redis.close();
  }
}
