import { type Kysely, sql } from 'kysely';
import type { Engine } from '../database.js';

/**
 * Run-time overrides of the feature flags defined in code (src/modules/flags, decision 0056). The
 * state is JSON in a text column on both engines: it is read whole, validated by the service, and
 * never queried by its fields.
 */

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not depend on today's Database type
type AnyDb = Kysely<any>;

export async function up(db: AnyDb, engine: Engine): Promise<void> {
  const postgres = engine === 'postgres';
  await db.schema
    .createTable('feature_flags')
    .addColumn('key', 'varchar(64)', (c) => c.primaryKey())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('updated_at', postgres ? sql`timestamptz(3)` : 'text', (c) => c.notNull())
    .addColumn('updated_by', postgres ? 'uuid' : 'text', (c) => c.references('users.id').onDelete('restrict'))
    .execute();
}

export async function down(db: AnyDb): Promise<void> {
  await db.schema.dropTable('feature_flags').execute();
}

/** The tables down() drops, with their rows. */
export const dropsOnRevert = ['feature_flags'] as const;
