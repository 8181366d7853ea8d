import type { Queryable } from '../../db/database.js';
import type { FeatureFlagRow, NewFeatureFlagRow } from './flags.table.js';

export function listOverrides(db: Queryable): Promise<FeatureFlagRow[]> {
  return db.selectFrom('feature_flags').selectAll().orderBy('key').execute();
}

export function findOverride(db: Queryable, key: string): Promise<FeatureFlagRow | undefined> {
  return db.selectFrom('feature_flags').selectAll().where('key', '=', key).executeTakeFirst();
}

export async function upsertOverride(db: Queryable, row: NewFeatureFlagRow): Promise<void> {
  await db
    .insertInto('feature_flags')
    .values(row)
    .onConflict((oc) =>
      oc
        .column('key')
        .doUpdateSet({ state: row.state, updated_at: row.updated_at, updated_by: row.updated_by }),
    )
    .execute();
}

export async function deleteOverride(db: Queryable, key: string): Promise<boolean> {
  const result = await db.deleteFrom('feature_flags').where('key', '=', key).executeTakeFirst();
  return Number(result.numDeletedRows) > 0;
}
