import { readDatabaseNow } from '../../db/clock.js';
import type { Queryable } from '../../db/database.js';
import { NotFoundError, UnauthenticatedError } from '../../lib/errors.js';
import * as usersRepository from '../users/users.repository.js';
import { createUser, tooManyAttempts, writingAccount } from '../users/users.service.js';
import type { UserRow } from '../users/users.table.js';
import type { AuthDeps } from './auth.deps.js';
import { lockoutKey } from './lockout.js';
import * as sessionsRepository from './sessions.repository.js';
import {
  type ClientInfo,
  issueRefreshToken,
  revoke,
  startSession,
  type Tokens,
  tokensFor,
} from './sessions.service.js';
import type { SessionRow } from './sessions.table.js';
import { hashRefreshToken } from './tokens.js';

/**
 * Registration, login, refresh-token rotation with reuse detection, logout and session management.
 * Every failure a client can cause is a coded 4xx; secrets never reach a log line.
 */

/** The one answer to every failed login: unknown account, wrong password or deactivated account. */
function invalidCredentials(): UnauthenticatedError {
  return new UnauthenticatedError('The login or password is not correct.');
}

function invalidRefreshToken(): UnauthenticatedError {
  return new UnauthenticatedError('The refresh token is not valid.');
}

export async function register(
  deps: AuthDeps,
  input: { email: string; username: string; password: string },
  client: ClientInfo,
): Promise<{ user: UserRow; tokens: Tokens }> {
  const { user, session, refreshToken } = await deps.db.transaction().execute(async (trx) => {
    const created = await createUser(trx, deps.passwords, input);
    return { user: created, ...(await startSession(trx, deps, created, client)) };
  });
  deps.logger.info({ event: 'user_registered', userId: user.id }, 'user registered');
  await startVerification(deps, user);
  return { user, tokens: await tokensFor(deps, user, session, refreshToken) };
}

/** Mails the verification link; a failure is logged, not answered (the account exists; resend works). */
export async function startVerification(deps: AuthDeps, user: UserRow): Promise<void> {
  try {
    await deps.startEmailVerification?.(user);
  } catch (err) {
    deps.logger.warn({ err, userId: user.id }, 'could not start the email verification');
  }
}

export async function login(
  deps: AuthDeps,
  input: { login: string; password: string },
  client: ClientInfo,
): Promise<{ user: UserRow; tokens: Tokens }> {
  const found = await usersRepository.findUserByLogin(deps.db, input.login);
  // One bucket per account, whichever of its logins is typed (security probe 2026-12-02, finding 7).
  const lockKey = lockoutKey(found, input.login);
  const lockedFor = await deps.lockout.lockedFor(lockKey);
  if (lockedFor > 0) {
    deps.metrics.logins.inc({ result: 'locked' });
    throw tooManyAttempts(lockedFor);
  }

  // Unknown accounts cost one hash verification too, so timing does not tell them apart.
  const passwordOk =
    found === undefined
      ? await deps.passwords.verifyNobody(input.password)
      : await deps.passwords.verify(found.password_hash, input.password);

  if (found === undefined || !passwordOk || found.deactivated_at !== null) {
    deps.metrics.logins.inc({ result: 'failure' });
    const lockout = await deps.lockout.recordFailure(lockKey);
    deps.logger.info(
      {
        event: 'login_failed',
        userId: found?.id,
        reason: found === undefined ? 'unknown_login' : !passwordOk ? 'wrong_password' : 'deactivated',
        ip: client.ip,
      },
      'login failed',
    );
    if (lockout > 0) {
      deps.metrics.lockouts.inc();
      deps.logger.warn(
        { event: 'login_locked', userId: found?.id, seconds: lockout, ip: client.ip },
        'login locked',
      );
    }
    throw invalidCredentials();
  }

  const started = await startVerifiedSession(deps, found, input.password, client);
  if (started === undefined) {
    deps.metrics.logins.inc({ result: 'failure' });
    deps.logger.info(
      { event: 'login_failed', userId: found.id, reason: 'credentials_changed', ip: client.ip },
      'login failed',
    );
    throw invalidCredentials();
  }
  await deps.lockout.recordSuccess(lockKey);
  const { session, refreshToken, user, rehashed } = started;
  deps.metrics.logins.inc({ result: 'success' });
  deps.logger.info(
    { event: 'login_succeeded', userId: user.id, sessionId: session.id, rehashed, ip: client.ip },
    'login succeeded',
  );
  return { user, tokens: await tokensFor(deps, user, session, refreshToken) };
}

/**
 * Creates the session of a login whose password was verified against `verified`, only if that is
 * still the account's password hash and the account is still active — checked by the statement
 * that locks the user row (updateUserIfCurrent). A password change or deactivation racing the login
 * either commits first (then nothing is created) or waits for this commit (then it revokes the new
 * session with the others). Security probe 2026-12-02, findings 2 and 4.
 *
 * One retry: a concurrent login may have upgraded the hash of the same password; the password is
 * verified again against the newer hash before trying once more.
 */
async function startVerifiedSession(
  deps: AuthDeps,
  verified: UserRow,
  password: string,
  client: ClientInfo,
): Promise<{ user: UserRow; session: SessionRow; refreshToken: string; rehashed: boolean } | undefined> {
  let user = verified;
  for (let attempt = 1; ; attempt++) {
    const rehash = deps.passwords.needsRehash(user.password_hash)
      ? await deps.passwords.hash(password)
      : undefined;
    const basis = user;
    const started = await writingAccount(deps, basis.id, () =>
      deps.db.transaction().execute(async (trx) => {
        const current = await usersRepository.updateUserIfCurrent(trx, basis.id, basis.password_hash, {
          last_login_at: new Date().toISOString(),
          ...(rehash === undefined ? {} : { password_hash: rehash }),
        });
        if (current === undefined) return undefined;
        return { user: current, ...(await startSession(trx, deps, current, client)) };
      }),
    );
    if (started !== undefined) return { ...started, rehashed: rehash !== undefined };
    if (attempt >= 2) return undefined;
    const fresh = await usersRepository.findUserById(deps.db, user.id);
    if (fresh === undefined || fresh.deactivated_at !== null) return undefined;
    if (fresh.password_hash === user.password_hash) return undefined;
    if (!(await deps.passwords.verify(fresh.password_hash, password))) return undefined;
    user = fresh;
  }
}

type RotationOutcome =
  | {
      kind: 'rotated';
      user: UserRow;
      session: SessionRow;
      refreshToken: string;
      withinReuseInterval: boolean;
    }
  | { kind: 'invalid' }
  | { kind: 'reuse'; sessionId: string; userId: string };

/**
 * Exchanges a refresh token for a new pair, in one transaction. The presented token is spent by a
 * conditional update, so of two concurrent uses exactly one succeeds. Presenting a spent token is
 * treated as theft (RFC 9700 §4.14): the whole session — every token descended from that login —
 * is revoked. With REFRESH_TOKEN_REUSE_INTERVAL_SECONDS above 0, a spent token presented again
 * within that many seconds of its first use (by the database's clock) gets a new token of the same
 * session instead (decision 0050; security probe 2026-12-02, finding 12).
 */
export async function refresh(deps: AuthDeps, refreshToken: string): Promise<Tokens> {
  const tokenHash = hashRefreshToken(refreshToken);
  const now = new Date().toISOString();
  const outcome = await deps.db.transaction().execute(async (trx): Promise<RotationOutcome> => {
    const found = await sessionsRepository.findRefreshToken(trx, tokenHash);
    if (found === undefined) return { kind: 'invalid' };
    const { session } = found;
    if (session.revoked_at !== null) return { kind: 'invalid' };
    const reuse = { kind: 'reuse', sessionId: session.id, userId: session.user_id } as const;
    let withinReuseInterval = false;
    if (found.spent_at !== null) {
      if (!(await spentWithinReuseInterval(trx, deps, found.spent_at))) return reuse;
      withinReuseInterval = true;
    }
    if (found.token_expires_at <= now || session.expires_at <= now) return { kind: 'invalid' };
    if (!withinReuseInterval && !(await sessionsRepository.spendRefreshToken(trx, deps.engine, tokenHash))) {
      // A concurrent refresh spent it first (it committed while this one waited for the row).
      const spent = (await sessionsRepository.findRefreshToken(trx, tokenHash))?.spent_at ?? null;
      if (spent === null || !(await spentWithinReuseInterval(trx, deps, spent))) return reuse;
      withinReuseInterval = true;
    }
    const user = await usersRepository.findUserById(trx, session.user_id);
    if (user === undefined || user.deactivated_at !== null) return { kind: 'invalid' };
    await sessionsRepository.touchSession(trx, session.id, now);
    const next = await issueRefreshToken(trx, deps, session);
    return { kind: 'rotated', user, session, refreshToken: next, withinReuseInterval };
  });

  if (outcome.kind === 'reuse') {
    deps.metrics.refreshes.inc({ result: 'reuse' });
    deps.metrics.refreshReuse.inc();
    deps.logger.warn(
      { event: 'refresh_token_reuse', security: true, userId: outcome.userId, sessionId: outcome.sessionId },
      'spent refresh token presented again: revoking the session',
    );
    await revoke(deps.db, deps, { sessionId: outcome.sessionId }, 'refresh_token_reuse');
    throw invalidRefreshToken();
  }
  if (outcome.kind === 'invalid') {
    deps.metrics.refreshes.inc({ result: 'invalid' });
    throw invalidRefreshToken();
  }
  if (outcome.withinReuseInterval) {
    deps.metrics.refreshes.inc({ result: 'reuse_within_interval' });
    deps.logger.info(
      {
        event: 'refresh_token_reuse_within_interval',
        userId: outcome.user.id,
        sessionId: outcome.session.id,
      },
      'spent refresh token presented again within the reuse interval: a new token of the same session',
    );
  } else {
    deps.metrics.refreshes.inc({ result: 'success' });
  }
  return tokensFor(deps, outcome.user, outcome.session, outcome.refreshToken);
}

/** Whether a token spent at `spentAt` (database clock) is still inside the configured reuse interval. */
async function spentWithinReuseInterval(trx: Queryable, deps: AuthDeps, spentAt: string): Promise<boolean> {
  const interval = deps.config.refreshReuseIntervalSeconds;
  if (interval <= 0) return false;
  const dbNow = Date.parse(await readDatabaseNow(trx, deps.engine));
  return dbNow - Date.parse(spentAt) <= interval * 1000;
}

/** Ends the session a refresh token belongs to. Unknown tokens are ignored: logout is idempotent. */
export async function logout(deps: AuthDeps, refreshToken: string): Promise<void> {
  const found = await sessionsRepository.findRefreshToken(deps.db, hashRefreshToken(refreshToken));
  if (found !== undefined) await revoke(deps.db, deps, { sessionId: found.session.id }, 'logout');
}

export async function logoutAll(deps: AuthDeps, userId: string): Promise<void> {
  await revoke(deps.db, deps, { userId }, 'logout_all');
}

export async function listSessions(deps: AuthDeps, userId: string, currentSessionId: string) {
  const sessions = await sessionsRepository.listLiveSessions(deps.db, userId, new Date().toISOString());
  return sessions.map((s) => ({
    id: s.id,
    createdAt: s.created_at,
    lastUsedAt: s.last_used_at,
    userAgent: s.user_agent,
    ip: s.ip,
    current: s.id === currentSessionId,
  }));
}

/** Another user's session is indistinguishable from one that does not exist. */
export async function revokeOwnSession(deps: AuthDeps, userId: string, sessionId: string): Promise<void> {
  const session = await sessionsRepository.findSession(deps.db, sessionId);
  if (session === undefined || session.user_id !== userId) throw new NotFoundError('No such session.');
  await revoke(deps.db, deps, { sessionId }, 'revoked_by_user');
}
