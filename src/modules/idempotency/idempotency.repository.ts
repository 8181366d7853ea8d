import type { QueryCreator } from 'kysely';
import type { Database, Queryable } from '../../db/database.js';
import type { IdempotencyKeyRow, NewIdempotencyKeyRow } from './idempotency.table.js';

/**
 * Queries on idempotency keys. Every change after the insert is conditional on `locked_until`,
 * which each holder sets to a value of its own (a later holder always sets a later one): it is the
 * fencing token that stops a request whose lock was taken over from completing or releasing the key.
 */

/** Inserts the key unless the user already has it; true when this call created it. */
export async function insertKey(db: Queryable, row: NewIdempotencyKeyRow): Promise<boolean> {
  const result = await db
    .insertInto('idempotency_keys')
    .values(row)
    .onConflict((oc) => oc.columns(['user_id', 'key']).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}

export async function findKey(
  db: Queryable,
  userId: string,
  key: string,
): Promise<IdempotencyKeyRow | undefined> {
  return db
    .selectFrom('idempotency_keys')
    .selectAll()
    .where('user_id', '=', userId)
    .where('key', '=', key)
    .executeTakeFirst();
}

/** Starts over on an expired key (its cleanup has not run yet), unless someone else just did. */
export async function restartExpiredKey(
  db: Queryable,
  row: NewIdempotencyKeyRow,
  expiredAt: string,
): Promise<boolean> {
  const result = await db
    .updateTable('idempotency_keys')
    .set({
      scope: row.scope,
      request_hash: row.request_hash,
      response_status: null,
      response_body: null,
      locked_until: row.locked_until,
      expires_at: row.expires_at,
    })
    .where('user_id', '=', row.user_id)
    .where('key', '=', row.key)
    .where('expires_at', '=', expiredAt)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Takes over a key whose first request never finished (its lock expired), unless another did. */
export async function takeOverKey(
  db: Queryable,
  userId: string,
  key: string,
  expiredLock: string,
  lockedUntil: string,
): Promise<boolean> {
  const result = await db
    .updateTable('idempotency_keys')
    .set({ locked_until: lockedUntil })
    .where('user_id', '=', userId)
    .where('key', '=', key)
    .where('response_status', 'is', null)
    .where('locked_until', '=', expiredLock)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** A response to store for a key, by the holder of `lockedUntil`. */
export interface StoredResponse {
  readonly holder: { readonly userId: string; readonly key: string; readonly lockedUntil: string };
  readonly response: { readonly status: number; readonly body: string; readonly expiresAt: string };
}

/**
 * The conditional update that stores a response: a query to run on its own (storeResponse) or as
 * part of a larger statement (the order's, on PostgreSQL).
 */
export function storeResponseQuery(db: QueryCreator<Database>, { holder, response }: StoredResponse) {
  return db
    .updateTable('idempotency_keys')
    .set({ response_status: response.status, response_body: response.body, expires_at: response.expiresAt })
    .where('user_id', '=', holder.userId)
    .where('key', '=', holder.key)
    .where('locked_until', '=', holder.lockedUntil)
    .where('response_status', 'is', null);
}

/** Stores the response, if this holder still has the key; false when it lost it. */
export async function storeResponse(
  db: Queryable,
  holder: { userId: string; key: string; lockedUntil: string },
  response: { status: number; body: string; expiresAt: string },
): Promise<boolean> {
  const result = await storeResponseQuery(db, { holder, response }).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Deletes the key, if this holder still has it and no response was stored. */
export async function deleteHeldKey(
  db: Queryable,
  holder: { userId: string; key: string; lockedUntil: string },
): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where('user_id', '=', holder.userId)
    .where('key', '=', holder.key)
    .where('locked_until', '=', holder.lockedUntil)
    .where('response_status', 'is', null)
    .execute();
}

/** Deletes up to `limit` keys that expired before `now`; returns how many. */
export async function deleteExpiredKeys(db: Queryable, now: string, limit: number): Promise<number> {
  const result = await db
    .deleteFrom('idempotency_keys')
    .where((eb) =>
      eb(
        eb.refTuple('user_id', 'key'),
        'in',
        eb
          .selectFrom('idempotency_keys')
          .select(['user_id', 'key'])
          .where('expires_at', '<', now)
          .limit(limit)
          .$asTuple('user_id', 'key'),
      ),
    )
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}
