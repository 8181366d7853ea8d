import { createHash, createHmac } from 'node:crypto';
import type { Queryable } from '../../db/database.js';
import type { AccountTokenPurpose, AccountTokenRow } from './account-tokens.table.js';

/**
 * The tokens mailed for a password reset or an email verification (decision 0061). A token is
 * HMAC-SHA256(key, purpose + id) — 256 bits nobody can guess without the key — and the database
 * keeps only its SHA-256 hash, plus the id. So neither a copy of the database nor of the job
 * queue (whose mail jobs carry only the id) holds a usable token; the mail job recomputes it from
 * the id with the key, which lives in the configuration only.
 */
export function accountTokenKey(secret: string): Buffer {
  return createHmac('sha256', secret).update('shipshape account tokens v1').digest();
}

export function accountToken(key: Buffer, purpose: AccountTokenPurpose, id: string): string {
  return createHmac('sha256', key).update(`${purpose}:${id}`).digest('base64url');
}

export function hashAccountToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export async function insertAccountToken(
  db: Queryable,
  row: {
    id: string;
    token_hash: string;
    user_id: string;
    purpose: AccountTokenPurpose;
    email: string;
    expires_at: string;
  },
): Promise<boolean> {
  const inserted = await db
    .insertInto('account_tokens')
    .values({ ...row, used_at: null })
    .onConflict((oc) => oc.column('id').doNothing())
    .returning('id')
    .executeTakeFirst();
  return inserted !== undefined;
}

export async function findAccountTokenById(db: Queryable, id: string): Promise<AccountTokenRow | undefined> {
  return db.selectFrom('account_tokens').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function findLiveAccountToken(
  db: Queryable,
  purpose: AccountTokenPurpose,
  token: string,
  now: string,
): Promise<AccountTokenRow | undefined> {
  return db
    .selectFrom('account_tokens')
    .selectAll()
    .where('token_hash', '=', hashAccountToken(token))
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .executeTakeFirst();
}

/** Spends a token: of two concurrent uses exactly one gets the row back. */
export async function consumeAccountToken(
  db: Queryable,
  id: string,
  now: string,
): Promise<AccountTokenRow | undefined> {
  return db
    .updateTable('account_tokens')
    .set({ used_at: now })
    .where('id', '=', id)
    .where('used_at', 'is', null)
    .where('expires_at', '>', now)
    .returningAll()
    .executeTakeFirst();
}

/**
 * Spends every unspent token of the user for that purpose: after a reset, the account's other
 * links; after an email or password change, every pending reset link (users.service.ts).
 */
export async function consumeOtherTokens(
  db: Queryable,
  userId: string,
  purpose: AccountTokenPurpose,
  now: string,
): Promise<void> {
  await db
    .updateTable('account_tokens')
    .set({ used_at: now })
    .where('user_id', '=', userId)
    .where('purpose', '=', purpose)
    .where('used_at', 'is', null)
    .execute();
}

/** Deletes tokens that expired before `before`; returns how many. */
export async function deleteExpiredAccountTokens(db: Queryable, before: string): Promise<number> {
  const result = await db.deleteFrom('account_tokens').where('expires_at', '<', before).executeTakeFirst();
  return Number(result.numDeletedRows);
}
