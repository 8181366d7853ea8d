import { type Kysely, type Migration, type MigrationResultSet, Migrator } from 'kysely';
import type { Database, Engine } from './database.js';
import * as m001 from './migrations/001_initial.js';
import * as m002 from './migrations/002_feature_flags.js';
import * as m003 from './migrations/003_accounts_and_jobs.js';

/**
 * `expand` (the default) adds what new code needs and leaves what old code uses; `contract` removes
 * what only older releases used, so it runs only when no retained release needs the old schema
 * (src/db/production-migrator.ts). Mark a migration contract with `export const phase = 'contract'`.
 */
export type MigrationPhase = 'expand' | 'contract';

interface EngineMigration {
  readonly phase?: MigrationPhase;
  up(db: Kysely<unknown>, engine: Engine): Promise<void>;
  down?(db: Kysely<unknown>, engine: Engine): Promise<void>;
  /** The tables down() drops, with their rows. */
  readonly dropsOnRevert?: readonly string[];
}

/**
 * Listed explicitly (not read from a directory) so the compiled service, the tests and the CLI all
 * run exactly the same set. Append new migrations; never edit one that has shipped.
 */
const migrations: Record<string, EngineMigration> = {
  '001_initial': m001,
  '002_feature_flags': m002,
  '003_accounts_and_jobs': m003,
};

function migratorFor(db: Kysely<Database>, engine: Engine): Migrator {
  return new Migrator({
    db,
    provider: {
      async getMigrations() {
        const bound: Record<string, Migration> = {};
        for (const [name, migration] of Object.entries(migrations)) {
          const { down } = migration;
          bound[name] = {
            up: (trx) => migration.up(trx, engine),
            ...(down === undefined ? {} : { down: (trx) => down(trx, engine) }),
          };
        }
        return bound;
      },
    },
  });
}

export class MigrationError extends Error {
  constructor(
    message: string,
    readonly results: MigrationResultSet['results'],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

/**
 * Applies every pending migration in one transaction (PostgreSQL also takes an advisory lock, so
 * several workers starting at once apply them exactly once). Returns the names applied now.
 */
export async function migrateToLatest(db: Kysely<Database>, engine: Engine): Promise<string[]> {
  const { error, results } = await migratorFor(db, engine).migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new MigrationError(`migration ${failed} failed: ${String(error)}`, results, { cause: error });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Reverts the most recent migration (for development). */
export async function migrateDown(db: Kysely<Database>, engine: Engine): Promise<string[]> {
  const { error, results } = await migratorFor(db, engine).migrateDown();
  if (error !== undefined)
    throw new MigrationError(`rollback failed: ${String(error)}`, results, { cause: error });
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

export async function pendingMigrations(db: Kysely<Database>, engine: Engine): Promise<string[]> {
  const all = await migratorFor(db, engine).getMigrations();
  return all.filter((m) => m.executedAt === undefined).map((m) => m.name);
}

/** The migration `migrateDown` would revert now, and the tables that takes with it. */
export async function latestApplied(
  db: Kysely<Database>,
  engine: Engine,
): Promise<{ name: string; drops: readonly string[] } | undefined> {
  const applied = (await migratorFor(db, engine).getMigrations()).filter((m) => m.executedAt !== undefined);
  const name = applied.at(-1)?.name;
  return name === undefined ? undefined : { name, drops: migrations[name]?.dropsOnRevert ?? [] };
}

/** Every migration this code has, in order (a release's manifest records them). */
export function migrationNames(): string[] {
  return Object.keys(migrations);
}

export function migrationList(): Array<{ name: string; phase: MigrationPhase; up: EngineMigration['up'] }> {
  return Object.entries(migrations).map(([name, m]) => ({
    name,
    phase: m.phase ?? 'expand',
    up: (db, engine) => m.up(db, engine),
  }));
}

/** Pending migrations that block serving: a deferred contract migration does not (old code runs without it). */
export async function blockingPendingMigrations(db: Kysely<Database>, engine: Engine): Promise<string[]> {
  return (await pendingMigrations(db, engine)).filter(
    (name) => (migrations[name]?.phase ?? 'expand') !== 'contract',
  );
}
