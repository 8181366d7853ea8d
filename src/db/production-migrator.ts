import { setTimeout as sleep } from 'node:timers/promises';
import { Kysely, type Migration, Migrator, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Engine } from './database.js';
import { type MigrationPhase, migrationList } from './migrator.js';

/**
 * `npm run db:migrate:production` (docs/decisions/0068-production-migrations.md): migrations that
 * cannot stall production.
 *
 * - One migrator at a time: a session advisory lock; a second migrator waits (and says so), up to
 *   `lockWaitMs`.
 * - `lock_timeout` on every statement: an ALTER that must wait for a lock (a long transaction holds
 *   the table) gives up after `lockTimeoutMs` instead of queueing every writer behind it; it is
 *   retried `retries` times with a growing pause, then the run fails. `statement_timeout` bounds
 *   each statement (not retried: a slow statement is slow again).
 * - One migration per transaction, in order, so a retry repeats only the one that waited.
 * - Expand/contract: a migration marked `contract` (it removes what older code still reads) runs
 *   only when every release still retained for rollback knows it (`contractAllowed`); until then it
 *   stays deferred, and /ready does not count it as pending.
 * - The applied head is what `kysely_migration` records; `migrationStatus` reports it with each
 *   applied migration's phase (rollback reads it to refuse a release that cannot run on this schema).
 */

export const migratorLockKey = 727_019_001;
const lockNotAvailable = '55P03';

export interface ProductionMigrationOptions {
  readonly lockTimeoutMs: number;
  readonly statementTimeoutMs: number;
  readonly retries: number;
  /** How long to wait for another migrator's advisory lock. */
  readonly lockWaitMs: number;
  /** Contract migrations allowed now (known by every retained release). */
  readonly contractAllowed: ReadonlySet<string>;
  readonly log: (line: string) => void;
  /** Tests give their own migrations; the CLI runs the service's. */
  readonly migrations?: ReadonlyArray<{
    name: string;
    phase: MigrationPhase;
    up(db: Kysely<unknown>): Promise<void>;
  }>;
}

export interface ProductionMigrationResult {
  readonly applied: readonly string[];
  readonly deferred: readonly string[];
  readonly head: string | null;
}

export class ProductionMigrationError extends Error {}

function pool(
  url: string,
  options: Pick<ProductionMigrationOptions, 'lockTimeoutMs' | 'statementTimeoutMs'>,
) {
  return new pg.Pool({
    connectionString: url,
    max: 1,
    application_name: 'shipshape-migrate',
    // Session settings for every statement of the migration connection.
    options: `-c lock_timeout=${Math.round(options.lockTimeoutMs)} -c statement_timeout=${Math.round(options.statementTimeoutMs)}`,
  });
}

function defaultMigrations(engine: Engine) {
  return migrationList().map((m) => ({
    name: m.name,
    phase: m.phase,
    up: (db: Kysely<unknown>) => m.up(db, engine),
  }));
}

async function takeAdvisoryLock(
  client: pg.PoolClient,
  waitMs: number,
  log: (l: string) => void,
): Promise<void> {
  const deadline = Date.now() + waitMs;
  let said = false;
  for (;;) {
    const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [
      migratorLockKey,
    ]);
    if (rows[0]?.ok === true) return;
    if (!said) {
      const holder = await client.query<{ pid: number; application_name: string }>(
        `SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.objid = $1 AND l.granted LIMIT 1`,
        [migratorLockKey],
      );
      const h = holder.rows[0];
      log(
        `waiting for another migrator${h === undefined ? '' : ` (backend ${h.pid}, ${h.application_name || 'unnamed'})`}`,
      );
      said = true;
    }
    if (Date.now() > deadline)
      throw new ProductionMigrationError(
        `another migrator held the lock for over ${Math.round(waitMs / 1000)} s; nothing was applied`,
      );
    await sleep(250);
  }
}

export async function migrateProduction(
  url: string,
  options: ProductionMigrationOptions,
): Promise<ProductionMigrationResult> {
  const list = options.migrations ?? defaultMigrations('postgres');
  const lockPool = new pg.Pool({ connectionString: url, max: 1, application_name: 'shipshape-migrate-lock' });
  const migrationPool = pool(url, options);
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: migrationPool }) });
  const lockClient = await lockPool.connect();
  try {
    await takeAdvisoryLock(lockClient, options.lockWaitMs, options.log);
    const applied: string[] = [];
    const deferred: string[] = [];
    const done = new Set((await appliedMigrations(db)).map((m) => m.name));
    for (const [index, migration] of list.entries()) {
      if (done.has(migration.name)) continue;
      if (migration.phase === 'contract' && !options.contractAllowed.has(migration.name)) {
        deferred.push(migration.name);
        // Later migrations may depend on it: stop here (they stay pending too).
        deferred.push(
          ...list
            .slice(index + 1)
            .map((m) => m.name)
            .filter((n) => !done.has(n)),
        );
        options.log(`deferred ${migration.name} (contract: a retained release still needs the old schema)`);
        break;
      }
      await applyOne(db, list, migration.name, options);
      applied.push(migration.name);
    }
    const head = (await appliedMigrations(db)).at(-1)?.name ?? null;
    return { applied, deferred, head };
  } finally {
    await lockClient.query('SELECT pg_advisory_unlock($1)', [migratorLockKey]).catch(() => {});
    lockClient.release();
    await lockPool.end();
    await db.destroy();
  }
}

async function applyOne(
  db: Kysely<unknown>,
  list: NonNullable<ProductionMigrationOptions['migrations']>,
  name: string,
  options: ProductionMigrationOptions,
): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: {
      async getMigrations() {
        const bound: Record<string, Migration> = {};
        for (const m of list) bound[m.name] = { up: (trx) => m.up(trx) };
        return bound;
      },
    },
  });
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    const { error, results } = await migrator.migrateTo(name);
    if (error === undefined) {
      options.log(`applied ${name} (${Date.now() - started} ms${attempt > 1 ? `, attempt ${attempt}` : ''})`);
      return;
    }
    const code = (error as { code?: string }).code;
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? name;
    if (code === lockNotAvailable && attempt <= options.retries) {
      const pause = Math.min(10_000, 500 * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      options.log(
        `${failed}: could not get its lock within ${options.lockTimeoutMs} ms (attempt ${attempt}); retrying in ${Math.round(pause)} ms`,
      );
      await sleep(pause);
      continue;
    }
    const why =
      code === lockNotAvailable
        ? `could not get its lock within ${options.lockTimeoutMs} ms, ${attempt} times (a long transaction holds the table; writers were not kept waiting)`
        : code === '57014'
          ? `a statement ran longer than statement_timeout (${options.statementTimeoutMs} ms)`
          : String((error as Error).message ?? error);
    throw new ProductionMigrationError(
      `migration ${failed} failed: ${why}; it was rolled back, earlier ones stay applied`,
    );
  }
}

export async function appliedMigrations(db: Kysely<unknown>): Promise<Array<{ name: string }>> {
  const exists = await sql<{ t: string | null }>`select to_regclass('kysely_migration')::text as t`.execute(
    db,
  );
  if (exists.rows[0]?.t == null) return [];
  const { rows } = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db);
  return rows;
}

/** The applied head and any applied contract migration (rollback refuses releases that lack one). */
export async function migrationStatus(
  url: string,
): Promise<{ head: string | null; applied: string[]; contract: string[] }> {
  const p = new pg.Pool({ connectionString: url, max: 1, application_name: 'shipshape-migrate-status' });
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: p }) });
  try {
    const applied = (await appliedMigrations(db)).map((m) => m.name);
    const phases = new Map(migrationList().map((m) => [m.name, m.phase]));
    return {
      head: applied.at(-1) ?? null,
      applied,
      contract: applied.filter((n) => phases.get(n) === 'contract'),
    };
  } finally {
    await db.destroy();
  }
}
