import { databaseNow } from '../../db/clock.js';
import type { Engine, Queryable } from '../../db/database.js';
import type { NewRefreshTokenRow, NewSessionRow, SessionRow } from './sessions.table.js';

export async function insertSession(db: Queryable, row: NewSessionRow): Promise<SessionRow> {
  return db.insertInto('sessions').values(row).returningAll().executeTakeFirstOrThrow();
}

export async function findSession(db: Queryable, id: string): Promise<SessionRow | undefined> {
  return db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Sessions that can still be refreshed: not revoked and not past their absolute end. */
export async function listLiveSessions(db: Queryable, userId: string, now: string): Promise<SessionRow[]> {
  return db
    .selectFrom('sessions')
    .selectAll()
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .where('expires_at', '>', now)
    .orderBy('created_at', 'desc')
    .execute();
}

export async function touchSession(db: Queryable, id: string, now: string): Promise<void> {
  await db.updateTable('sessions').set({ last_used_at: now }).where('id', '=', id).execute();
}

export interface Revocation {
  readonly id: string;
  /** Stamped by the database's clock (db/clock.ts), never an app server's. */
  readonly revoked_at: string;
}

/** Revokes sessions not yet revoked; returns the ones it revoked. */
export async function revokeSessions(
  db: Queryable,
  engine: Engine,
  filter: { sessionId: string } | { userId: string; exceptSessionId?: string },
  reason: string,
): Promise<Revocation[]> {
  let query = db
    .updateTable('sessions')
    .set({ revoked_at: databaseNow(engine), revoked_reason: reason })
    .where('revoked_at', 'is', null);
  if ('sessionId' in filter) {
    query = query.where('id', '=', filter.sessionId);
  } else {
    query = query.where('user_id', '=', filter.userId);
    if (filter.exceptSessionId !== undefined) query = query.where('id', '!=', filter.exceptSessionId);
  }
  const rows = await query.returning(['id', 'revoked_at']).execute();
  return rows.flatMap((r) => (r.revoked_at === null ? [] : [{ id: r.id, revoked_at: r.revoked_at }]));
}

/** Revocations at or after a moment: what the revocation list polls. */
export async function revokedSince(
  db: Queryable,
  since: string,
): Promise<Array<{ id: string; revoked_at: string }>> {
  const rows = await db
    .selectFrom('sessions')
    .select(['id', 'revoked_at'])
    .where('revoked_at', '>=', since)
    .execute();
  return rows.filter((r): r is { id: string; revoked_at: string } => r.revoked_at !== null);
}

export async function insertRefreshToken(db: Queryable, row: NewRefreshTokenRow): Promise<void> {
  await db.insertInto('refresh_tokens').values(row).execute();
}

export interface RefreshTokenWithSession {
  token_hash: string;
  token_expires_at: string;
  spent_at: string | null;
  session: SessionRow;
}

export async function findRefreshToken(
  db: Queryable,
  tokenHash: string,
): Promise<RefreshTokenWithSession | undefined> {
  const row = await db
    .selectFrom('refresh_tokens as t')
    .innerJoin('sessions as s', 's.id', 't.session_id')
    .selectAll('s')
    .select(['t.token_hash', 't.expires_at as token_expires_at', 't.spent_at'])
    .where('t.token_hash', '=', tokenHash)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  const { token_hash, token_expires_at, spent_at, ...session } = row;
  return { token_hash, token_expires_at, spent_at, session };
}

/**
 * Marks a token spent, only if it is not spent yet: of two concurrent refreshes with one token,
 * exactly one gets true (the other is a reuse). Stamped by the database's clock, which the reuse
 * interval is measured against on every instance.
 */
export async function spendRefreshToken(db: Queryable, engine: Engine, tokenHash: string): Promise<boolean> {
  const result = await db
    .updateTable('refresh_tokens')
    .set({ spent_at: databaseNow(engine) })
    .where('token_hash', '=', tokenHash)
    .where('spent_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}
