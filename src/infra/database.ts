import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type SqliteDatabase from 'better-sqlite3';
import {
  CompiledQuery,
  type DatabaseConnection,
  Kysely,
  PostgresAdapter,
  PostgresDialect,
  type PostgresDialectConfig,
  PostgresDriver,
  SqliteDialect,
  sql,
  type TransactionSettings,
} from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Database, Engine } from '../db/database.js';
import { withRoundTripDeadline } from './database-deadline.js';

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
  /** PostgreSQL only: the primary's pool (tracing wraps its clients). */
  readonly pgPool?: pg.Pool;
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

/**
 * The timeouts the service's transactions run under. They are never sent as startup parameters:
 * PgBouncer 1.18 refuses `statement_timeout` there ("unsupported startup parameter") or, when told
 * to ignore it, drops it silently — and any session `SET` lands on whichever server connection
 * PgBouncer hands out next (decision 0070). So each transaction sets them for itself with
 * `SET LOCAL`, which ends with the transaction; statements outside a transaction run under the
 * role's own settings (`ALTER ROLE … SET`, deploy/postgres/roles.sql), checked at start-up.
 */
export interface SessionTimeouts {
  readonly statementTimeoutMs: number;
  readonly idleInTransactionTimeoutMs: number;
}

export function sessionTimeouts(config: Config['database']): SessionTimeouts {
  return {
    statementTimeoutMs: config.statementTimeoutMs,
    // A transaction left open by a crashed request must not hold locks forever.
    idleInTransactionTimeoutMs: Math.max(config.statementTimeoutMs, 10_000),
  };
}

/** `BEGIN` and the transaction's timeouts in one round trip (the simple protocol runs all three). */
export function beginStatement(settings: TransactionSettings, timeouts: SessionTimeouts): string {
  let begin = 'begin';
  if (settings.isolationLevel !== undefined || settings.accessMode !== undefined) {
    begin = 'start transaction';
    if (settings.isolationLevel !== undefined) begin += ` isolation level ${settings.isolationLevel}`;
    if (settings.accessMode !== undefined) begin += ` ${settings.accessMode}`;
  }
  const ms = (value: number) => String(Math.trunc(value));
  return (
    `${begin}; set local statement_timeout = ${ms(timeouts.statementTimeoutMs)};` +
    ` set local idle_in_transaction_session_timeout = ${ms(timeouts.idleInTransactionTimeoutMs)}`
  );
}

/** Kysely's PostgreSQL driver, with every transaction it opens under the service's timeouts. */
class TimedPostgresDriver extends PostgresDriver {
  constructor(
    config: PostgresDialectConfig,
    private readonly timeouts: SessionTimeouts,
  ) {
    super(config);
  }

  override async beginTransaction(
    connection: DatabaseConnection,
    settings: TransactionSettings,
  ): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(beginStatement(settings, this.timeouts)));
  }
}

/** Kysely's migration lock: an arbitrary constant, the same one Kysely's own adapter uses. */
const MIGRATION_LOCK_ID = '3853314791062309107';

/**
 * Kysely's migration lock is a session advisory lock taken outside the migration's transaction and
 * released after it: through PgBouncer in transaction mode the lock, the migration and the unlock
 * each land on a different server connection, and the lock stays held on one of them. Here the lock
 * opens a transaction and takes a transaction-scoped lock in it; Kysely's own BEGIN that follows
 * only draws a warning from PostgreSQL (a transaction is already in progress), its COMMIT or
 * ROLLBACK ends both, and the lock goes with them. The release rolls back whatever a failure before
 * that left open (a no-op after the commit).
 */
class TransactionScopedLockAdapter extends PostgresAdapter {
  override async acquireMigrationLock(db: Kysely<unknown>): Promise<void> {
    await sql.raw('begin').execute(db);
    // Another process migrating: wait for it (up to an hour, as Kysely does), then find nothing to do.
    await sql`select set_config('lock_timeout', '3600000', true), set_config('statement_timeout', '0', true)`.execute(
      db,
    );
    await sql.raw(`select pg_advisory_xact_lock(${MIGRATION_LOCK_ID})`).execute(db);
  }

  override async releaseMigrationLock(db: Kysely<unknown>): Promise<void> {
    await sql.raw('rollback').execute(db);
  }
}

class ShipshapePostgresDialect extends PostgresDialect {
  constructor(
    private readonly dialectConfig: PostgresDialectConfig,
    private readonly timeouts: SessionTimeouts,
  ) {
    super(dialectConfig);
  }

  override createDriver(): PostgresDriver {
    return new TimedPostgresDriver(this.dialectConfig, this.timeouts);
  }

  override createAdapter(): PostgresAdapter {
    return new TransactionScopedLockAdapter();
  }
}

/**
 * A PostgreSQL pool and the Kysely instance over it (the primary's, or a read replica's). Only
 * `application_name` goes in the startup packet: PgBouncer 1.18 tracks it, and nothing else that
 * `pg` could send there survives PgBouncer (decision 0070).
 */
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
  // The server's statement_timeout first; the client's deadline only when the server cannot answer.
  const deadlined = withRoundTripDeadline(pool, config.statementTimeoutMs + 1000);
  const dialect = new ShipshapePostgresDialect({ pool: deadlined }, sessionTimeouts(config));
  return { pool, db: new Kysely<Database>({ dialect }) };
}

/** PostgreSQL's interval text (`10s`, `500ms`, `1min`, `0`) in milliseconds. */
export function settingMs(value: string, unit: string | null): number | undefined {
  const match = /^(\d+)\s*(us|ms|s|min|h|d)?$/.exec(value.trim());
  if (match === null) return undefined;
  const factors: Record<string, number> = {
    us: 0.001,
    ms: 1,
    s: 1000,
    min: 60_000,
    h: 3_600_000,
    d: 86_400_000,
  };
  return Number(match[1]) * (factors[match[2] ?? unit ?? 'ms'] ?? 1);
}

/**
 * Statements outside a transaction run under the role's settings: say at start-up what they are,
 * and warn when a statement could run unbounded or longer than the service's own limit.
 */
export async function checkRoleTimeouts(
  db: Kysely<Database>,
  config: Config['database'],
  logger: Logger,
): Promise<{ statementTimeoutMs: number | undefined; role: string | undefined }> {
  const { rows } = await sql<{ role: string; value: string }>`
    select current_user as role, current_setting('statement_timeout') as value`.execute(db);
  const row = rows[0];
  const statementTimeoutMs = row === undefined ? undefined : settingMs(row.value, 'ms');
  const wanted = config.statementTimeoutMs;
  const fields = { role: row?.role, roleStatementTimeout: row?.value, statementTimeoutMs: wanted };
  if (statementTimeoutMs === undefined || statementTimeoutMs === 0 || statementTimeoutMs > wanted) {
    logger.warn(
      fields,
      `statements outside a transaction run under role ${row?.role ?? '?'}'s statement_timeout (${row?.value ?? '?'}), not ${wanted} ms: ` +
        `ALTER ROLE ${row?.role ?? '<role>'} SET statement_timeout = '${wanted}ms' (deploy/postgres/roles.sql); transactions use SET LOCAL`,
    );
  } else {
    logger.info(fields, 'statement timeouts: transactions SET LOCAL, other statements the role setting');
  }
  return { statementTimeoutMs, role: row?.role };
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
    pgPool: pool,
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
