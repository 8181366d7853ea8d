import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type SqliteDatabase from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Database, Engine } from '../db/database.js';

export interface PoolStats {
  readonly total: number;
  readonly idle: number;
  readonly waiting: number;
}

/** The data layer's handle: one Kysely instance over SQLite or a PostgreSQL pool. */
export interface DatabaseHandle {
  readonly engine: Engine;
  readonly db: Kysely<Database>;
  /** Resolves when a trivial query succeeds within the time limit; rejects otherwise. */
  ping(timeoutMs: number): Promise<void>;
  /** Connection pool occupancy, where the driver has a pool. */
  poolStats(): PoolStats | undefined;
  /**
   * SQLite only: true when another connection (a CLI command, another process) has committed since
   * the previous call — `PRAGMA data_version`, which this connection's own commits never change.
   * Lets the in-process cache see writes made behind its back (decision 0013).
   */
  externalWrites?: () => boolean;
  close(): Promise<void>;
}

const OID = { INT8: 20, TIMESTAMP: 1114, TIMESTAMPTZ: 1184 } as const;

/**
 * Type parsers that make PostgreSQL rows look like SQLite's: timestamps as ISO 8601 UTC strings,
 * 64-bit counts as numbers (counts never approach 2^53). numeric stays a string (exact money).
 */
const pgTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (format === 'binary') return pg.types.getTypeParser(oid, 'binary');
    if (oid === OID.TIMESTAMPTZ || oid === OID.TIMESTAMP) {
      const parseDate = pg.types.getTypeParser(oid, 'text') as (value: string) => Date;
      return (value: string) => parseDate(value).toISOString();
    }
    if (oid === OID.INT8) return (value: string) => Number(value);
    return pg.types.getTypeParser(oid, 'text');
  },
};

export async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A PostgreSQL pool and the Kysely instance over it (the primary's, or a read replica's). */
export function createPostgresPool(
  config: Config['database'],
  url: string,
  logger: Logger,
  applicationName = 'shipshape',
): { readonly pool: pg.Pool; readonly db: Kysely<Database> } {
  const pool = new pg.Pool({
    connectionString: url,
    max: config.poolMax,
    connectionTimeoutMillis: config.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    statement_timeout: config.statementTimeoutMs,
    // A transaction left open by a crashed request must not hold locks forever.
    idle_in_transaction_session_timeout: Math.max(config.statementTimeoutMs, 10_000),
    application_name: applicationName,
    types: pgTypes,
  });
  // A connection that breaks emits 'error' on its client — while idle through the pool, while
  // checked out on the client itself. Unhandled, either would crash the process when the database
  // restarts; the query in flight is rejected separately and becomes a 503.
  pool.on('error', (err) => logger.warn({ err }, 'idle PostgreSQL connection failed'));
  pool.on('connect', (client) => {
    client.on('error', (err) => logger.warn({ err }, 'PostgreSQL connection failed'));
  });
  return { pool, db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }) };
}

function createPostgres(config: Config['database'], url: string, logger: Logger): DatabaseHandle {
  const { pool, db } = createPostgresPool(config, url, logger);
  return {
    engine: 'postgres',
    db,
    ping: async (timeoutMs) => {
      await withTimeout(sql`select 1`.execute(db), timeoutMs, 'database ping');
    },
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    close: () => db.destroy(),
  };
}

function createSqlite(config: Config['database']): DatabaseHandle {
  if (config.sqlitePath !== ':memory:') mkdirSync(dirname(config.sqlitePath), { recursive: true });
  // Loaded only when SQLite is used: a PostgreSQL deployment never needs the native module, so it
  // runs on any Node version even where better-sqlite3 was not built for it.
  const Sqlite = createRequire(import.meta.url)('better-sqlite3') as typeof SqliteDatabase;
  const database = new Sqlite(config.sqlitePath);
  // WAL lets readers proceed during a write; NORMAL sync is durable across process crashes in WAL mode.
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = NORMAL');
  database.pragma('foreign_keys = ON');
  // Several processes (PM2 on SQLite) wait for each other's write lock instead of failing at once.
  database.pragma(`busy_timeout = ${Math.max(config.connectTimeoutMs, 1000)}`);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database }) });
  const dataVersion = database.prepare('PRAGMA data_version').pluck();
  let seenVersion = dataVersion.get();
  return {
    engine: 'sqlite',
    db,
    externalWrites: () => {
      const version = dataVersion.get();
      if (version === seenVersion) return false;
      seenVersion = version;
      return true;
    },
    ping: async (timeoutMs) => {
      await withTimeout(sql`select 1`.execute(db), timeoutMs, 'database ping');
    },
    poolStats: () => undefined,
    close: () => db.destroy(),
  };
}

export function createDatabase(config: Config['database'], logger: Logger): DatabaseHandle {
  return config.url === undefined ? createSqlite(config) : createPostgres(config, config.url, logger);
}
