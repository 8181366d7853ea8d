import { sql } from 'kysely';
import type { Queryable } from '../../db/database.js';
import { olderThan } from '../../db/keyset.js';
import type { NewUserRow, UserRow, UserUpdate } from './users.table.js';

export async function insertUser(db: Queryable, row: NewUserRow): Promise<UserRow> {
  return db.insertInto('users').values(row).returningAll().executeTakeFirstOrThrow();
}

export async function findUserById(db: Queryable, id: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
}

/** By email or username, case-insensitively (served by the unique lower() indexes). */
export async function findUserByLogin(db: Queryable, login: string): Promise<UserRow | undefined> {
  const needle = login.trim().toLowerCase();
  return db
    .selectFrom('users')
    .selectAll()
    .where((eb) => eb.or([eb(sql`lower(email)`, '=', needle), eb(sql`lower(username)`, '=', needle)]))
    .executeTakeFirst();
}

export async function updateUser(
  db: Queryable,
  id: string,
  changes: UserUpdate,
): Promise<UserRow | undefined> {
  return db.updateTable('users').set(changes).where('id', '=', id).returningAll().executeTakeFirst();
}

/**
 * Updates an account only if it is still in the state a decision was based on: the password hash
 * that was verified (a password change replaces it: every hash has its own salt) and, unless
 * `allowInactive`, still active. In one statement, so on PostgreSQL it takes the row lock and
 * re-checks the condition on the newest row version: of a login and a concurrent password change or
 * deactivation, one waits for the other's commit and then sees it. Undefined when the state moved on.
 */
export async function updateUserIfCurrent(
  db: Queryable,
  id: string,
  verifiedPasswordHash: string,
  changes: UserUpdate,
  options: { allowInactive?: boolean } = {},
): Promise<UserRow | undefined> {
  let query = db
    .updateTable('users')
    .set(changes)
    .where('id', '=', id)
    .where('password_hash', '=', verifiedPasswordHash);
  if (options.allowInactive !== true) query = query.where('deactivated_at', 'is', null);
  return query.returningAll().executeTakeFirst();
}

/** Newest first, keyset-paginated on (created_at, id). `q` matches part of the email or username. */
export async function listUsers(
  db: Queryable,
  options: { limit: number; after?: readonly [createdAt: string, id: string]; q?: string },
): Promise<UserRow[]> {
  let query = db.selectFrom('users').selectAll();
  if (options.q !== undefined) {
    // Escape LIKE wildcards so a search for "a_b" means that text.
    const pattern = `%${options.q.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    query = query.where((eb) =>
      eb.or([
        eb(sql`lower(email)`, 'like', sql`${pattern} escape '\\'`),
        eb(sql`lower(username)`, 'like', sql`${pattern} escape '\\'`),
      ]),
    );
  }
  if (options.after !== undefined) query = query.where(olderThan(options.after));
  return query
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(options.limit + 1)
    .execute();
}
