import { randomUUID } from 'node:crypto';
import type { Db, Queryable } from '../../db/database.js';
import type { UserRow } from '../users/users.table.js';
import type { AuthDeps } from './auth.deps.js';
import { insertRefreshToken, insertSession, type Revocation, revokeSessions } from './sessions.repository.js';
import type { SessionRow } from './sessions.table.js';
import { newRefreshToken } from './tokens.js';

export interface ClientInfo {
  readonly userAgent: string | undefined;
  readonly ip: string;
}

export const revocationReasons = [
  'logout',
  'logout_all',
  'revoked_by_user',
  'password_changed',
  'password_reset',
  'deactivated',
  'role_changed',
  'refresh_token_reuse',
] as const;
export type RevocationReason = (typeof revocationReasons)[number];

export interface Tokens {
  readonly sessionId: string;
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly expiresIn: number;
  /** When the login ends at the latest (for the cookie's Max-Age). */
  readonly sessionExpiresAt: string;
}

/** Starts a login: a new session (refresh-token family) with its first refresh token. */
export async function startSession(
  trx: Queryable,
  deps: AuthDeps,
  user: UserRow,
  client: ClientInfo,
): Promise<{ session: SessionRow; refreshToken: string }> {
  const now = new Date();
  const session = await insertSession(trx, {
    id: randomUUID(),
    user_id: user.id,
    created_at: now.toISOString(),
    last_used_at: now.toISOString(),
    expires_at: new Date(now.getTime() + deps.config.refreshAbsoluteTtlSeconds * 1000).toISOString(),
    revoked_at: null,
    revoked_reason: null,
    user_agent: client.userAgent?.slice(0, 512) ?? null,
    ip: client.ip.slice(0, 64),
  });
  const refreshToken = await issueRefreshToken(trx, deps, session);
  return { session, refreshToken };
}

/** A new refresh token of a session; it dies when unused for the idle lifetime or with the session. */
export async function issueRefreshToken(
  trx: Queryable,
  deps: AuthDeps,
  session: SessionRow,
): Promise<string> {
  const { token, hash } = newRefreshToken();
  const idleEnd = Date.now() + deps.config.refreshIdleTtlSeconds * 1000;
  await insertRefreshToken(trx, {
    token_hash: hash,
    session_id: session.id,
    created_at: new Date().toISOString(),
    expires_at: new Date(Math.min(idleEnd, Date.parse(session.expires_at))).toISOString(),
    spent_at: null,
  });
  return token;
}

export async function tokensFor(
  deps: AuthDeps,
  user: UserRow,
  session: SessionRow,
  refreshToken: string,
): Promise<Tokens> {
  // This instance just wrote the session: its first request here needs no lookup.
  deps.revocations.markKnown(session.id, session.user_id);
  const { accessToken, expiresIn } = await deps.tokens.issueAccessToken({
    userId: user.id,
    sessionId: session.id,
    role: user.role,
    sessionExpiresAt: session.expires_at,
  });
  return {
    sessionId: session.id,
    accessToken,
    refreshToken,
    expiresIn,
    sessionExpiresAt: session.expires_at,
  };
}

/**
 * Revokes sessions — and with them their access tokens: this instance refuses them at once, every
 * other instance within a second (revocations.ts). Takes the database, not a transaction: the
 * local revocation list must only learn what has been committed. Inside a transaction, call
 * revokeSessions and then, once committed, recordRevoked.
 */
export async function revoke(
  db: Db,
  deps: AuthDeps,
  filter: RevocationFilter,
  reason: RevocationReason,
): Promise<string[]> {
  const revocations = await revokeSessions(db, deps.engine, filter, reason);
  recordRevoked(deps, revocations, reason, filter);
  return revocations.map((r) => r.id);
}

export type RevocationFilter = { sessionId: string } | { userId: string; exceptSessionId?: string };

/** Tells this instance's revocation list, the metrics and the log about committed revocations. */
export function recordRevoked(
  deps: AuthDeps,
  revocations: readonly Revocation[],
  reason: RevocationReason,
  filter: RevocationFilter,
): void {
  deps.revocations.markRevoked(revocations);
  if (revocations.length === 0) return;
  deps.metrics.revocations.inc({ reason }, revocations.length);
  deps.logger.info(
    { event: 'sessions_revoked', reason, sessionIds: revocations.map((r) => r.id), ...filter },
    'sessions revoked',
  );
}
