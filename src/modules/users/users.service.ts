import { randomUUID } from 'node:crypto';
import type { Queryable } from '../../db/database.js';
import { classifyDbError, violatedConstraint } from '../../lib/db-errors.js';
import {
  AppError,
  ConflictError,
  ErrorCode,
  ForbiddenError,
  NotFoundError,
  ValidationError,
} from '../../lib/errors.js';
import { decodeCursor, type Page, toPage } from '../../lib/pagination.js';
import { consumeOtherTokens } from '../auth/account-tokens.js';
import type { AuthDeps } from '../auth/auth.deps.js';
import { isCommonPassword } from '../auth/common-passwords.js';
import { lockoutKey } from '../auth/lockout.js';
import type { PasswordHasher } from '../auth/passwords.js';
import { revokeSessions } from '../auth/sessions.repository.js';
import { recordRevoked } from '../auth/sessions.service.js';
import * as usersRepository from './users.repository.js';
import type { User } from './users.schema.js';
import type { UserRole, UserRow, UserUpdate } from './users.table.js';

export function toUser(row: UserRow): User {
  return {
    id: row.id,
    email: row.email,
    username: row.username,
    role: row.role,
    isActive: row.deactivated_at === null,
    emailVerified: row.email_verified_at !== null,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastLoginAt: row.last_login_at,
  };
}

export function tooManyAttempts(retryAfterSeconds: number): AppError {
  return new AppError(
    429,
    ErrorCode.RATE_LIMITED,
    `Too many failed attempts; try again in ${retryAfterSeconds} s.`,
    {
      headers: { 'retry-after': String(retryAfterSeconds) },
    },
  );
}

/** Length is checked by the schema; here, what a schema cannot know. */
export function assertAcceptablePassword(
  password: string,
  path: string,
  context: { email?: string; username?: string },
): void {
  const lower = password.toLowerCase();
  const reason = isCommonPassword(password)
    ? 'is one of the most common passwords'
    : context.email !== undefined && lower === context.email.toLowerCase()
      ? 'must not be your email address'
      : context.username !== undefined && lower === context.username.toLowerCase()
        ? 'must not be your username'
        : undefined;
  if (reason !== undefined)
    throw new ValidationError('Choose a less guessable password.', [{ path, message: reason }]);
}

/** Turns a unique violation on email or username into a 409 naming the field; rethrows the rest. */
function conflictOrRethrow(err: unknown, bodyPath = '/body'): never {
  if (classifyDbError(err) === 'unique_violation') {
    const constraint = violatedConstraint(err) ?? '';
    const field = constraint.includes('email')
      ? 'email'
      : constraint.includes('username')
        ? 'username'
        : undefined;
    if (field !== undefined) {
      throw new ConflictError(`That ${field} is already taken.`, [
        { path: `${bodyPath}/${field}`, message: 'is already taken' },
      ]);
    }
  }
  throw err;
}

export async function createUser(
  trx: Queryable,
  passwords: PasswordHasher,
  input: { email: string; username: string; password: string; role?: UserRole },
): Promise<UserRow> {
  assertAcceptablePassword(input.password, '/body/password', input);
  const passwordHash = await passwords.hash(input.password);
  try {
    return await usersRepository.insertUser(trx, {
      id: randomUUID(),
      email: input.email.trim().toLowerCase(),
      username: input.username,
      password_hash: passwordHash,
      role: input.role ?? 'customer',
    });
  } catch (err) {
    conflictOrRethrow(err);
  }
}

export async function getUser(db: Queryable, id: string): Promise<UserRow> {
  const user = await usersRepository.findUserById(db, id);
  if (user === undefined) throw new NotFoundError('No such user.');
  return user;
}

/** The caller's account as `GET /me` answers it: from the cache when there is one (decision 0112). */
export async function getMe(deps: AuthDeps, id: string): Promise<User> {
  const load = async () => toUser(await getUser(deps.db, id));
  return deps.userCache === undefined ? load() : deps.userCache.user(id, load);
}

/**
 * Runs a write to the account, then invalidates its cached copy however the write ended: after a
 * commit the copy is stale, and after an error the commit may still have happened (a lost
 * connection); a spare invalidation costs one load. Never before the commit: a load in between
 * would store the old row under the new generation.
 */
export async function writingAccount<T>(
  deps: Pick<AuthDeps, 'userCache'>,
  userId: string,
  write: () => Promise<T>,
): Promise<T> {
  try {
    return await write();
  } finally {
    await deps.userCache?.invalidate(userId);
  }
}

/**
 * Cancels the account's pending password-reset links, in the caller's transaction, before it
 * touches the user row: a change of address or of password makes links mailed earlier useless
 * (one that reached a previous address must not take the account over). Token rows first, as in
 * accounts.service.ts confirmPasswordReset, so the two do not take the token and user rows in
 * opposite orders (a deadlock); a link used at the same moment either commits first (the change
 * then finds it spent) or finds it spent. (With several links pending, PostgreSQL may still have
 * to abort one of the two as a deadlock victim: it fails whole, and nothing half-done remains.)
 */
async function cancelPasswordResets(trx: Queryable, userId: string): Promise<void> {
  await consumeOtherTokens(trx, userId, 'password_reset', new Date().toISOString());
}

export async function updateProfile(
  deps: AuthDeps,
  userId: string,
  changes: { email?: string; username?: string },
): Promise<UserRow> {
  const email = changes.email?.trim().toLowerCase();
  // A new address is unverified until its mailed link is used; the same address stays as it was.
  const newAddress = email !== undefined && email !== (await getUser(deps.db, userId)).email.toLowerCase();
  try {
    const updated = await writingAccount(deps, userId, () =>
      deps.db.transaction().execute(async (trx) => {
        if (newAddress) await cancelPasswordResets(trx, userId);
        return usersRepository.updateUser(trx, userId, {
          ...(email === undefined ? {} : { email }),
          ...(newAddress ? { email_verified_at: null } : {}),
          ...(changes.username === undefined ? {} : { username: changes.username }),
        });
      }),
    );
    if (updated === undefined) throw new NotFoundError('No such user.');
    return updated;
  } catch (err) {
    conflictOrRethrow(err);
  }
}

/**
 * Verifies the current password, stores the new one, cancels pending reset links and ends every
 * other session — in one transaction that locks the user row before it revokes, so a login that
 * verified the old password either committed its session before (and it is revoked here) or finds
 * the hash changed (and creates none): auth.service.ts startVerifiedSession.
 */
export async function changePassword(
  deps: AuthDeps,
  auth: { userId: string; sessionId: string },
  currentPassword: string,
  newPassword: string,
): Promise<void> {
  const user = await getUser(deps.db, auth.userId);
  // A stolen access token must not become a way to guess the password: same lockout as login.
  const lockKey = lockoutKey(user, user.email);
  const locked = await deps.lockout.lockedFor(lockKey);
  if (locked > 0) throw tooManyAttempts(locked);
  if (!(await deps.passwords.verify(user.password_hash, currentPassword))) {
    await deps.lockout.recordFailure(lockKey);
    throw new ForbiddenError('The current password is not correct.');
  }
  assertAcceptablePassword(newPassword, '/body/newPassword', user);
  const passwordHash = await deps.passwords.hash(newPassword);
  const filter = { userId: user.id, exceptSessionId: auth.sessionId };
  const revoked = await writingAccount(deps, user.id, () =>
    deps.db.transaction().execute(async (trx) => {
      // Kept even if the password turns out changed meanwhile: that change cancelled them too.
      await cancelPasswordResets(trx, user.id);
      const changed = await usersRepository.updateUserIfCurrent(
        trx,
        user.id,
        user.password_hash,
        { password_hash: passwordHash },
        { allowInactive: true },
      );
      // Changed meanwhile (another password change): what was verified is no longer the password.
      if (changed === undefined) return undefined;
      return revokeSessions(trx, deps.engine, filter, 'password_changed');
    }),
  );
  if (revoked === undefined) throw new ForbiddenError('The current password is not correct.');
  recordRevoked(deps, revoked, 'password_changed', filter);
}

/**
 * Sets the account state and revokes its sessions in one transaction (the user row is locked
 * first), so no login that checked the old state can leave a session behind.
 */
async function changeStatusAndRevoke(
  deps: AuthDeps,
  userId: string,
  changes: UserUpdate,
  reason: 'deactivated' | 'role_changed' | undefined,
): Promise<UserRow | undefined> {
  const result = await writingAccount(deps, userId, () =>
    deps.db.transaction().execute(async (trx) => {
      const updated = await usersRepository.updateUser(trx, userId, changes);
      if (updated === undefined || reason === undefined) return { updated, revoked: [] };
      return { updated, revoked: await revokeSessions(trx, deps.engine, { userId }, reason) };
    }),
  );
  if (reason !== undefined) recordRevoked(deps, result.revoked, reason, { userId });
  return result.updated;
}

/** Deactivates (never deletes) an account: its orders stay, its sessions end. */
export async function deactivate(deps: AuthDeps, userId: string): Promise<void> {
  const user = await getUser(deps.db, userId);
  // The same rule as PATCH /api/users/:id on oneself: the last admin leaving would leave nobody to
  // undo it, and counting admins first would race another admin doing the same (security probe
  // 2026-12-02, finding 10).
  if (user.role === 'admin') {
    throw new ConflictError('Admins cannot change their own role or status; ask another admin.');
  }
  await changeStatusAndRevoke(deps, userId, { deactivated_at: new Date().toISOString() }, 'deactivated');
}

export async function adminUpdate(
  deps: AuthDeps,
  actorId: string,
  userId: string,
  changes: { role?: UserRole; isActive?: boolean },
): Promise<UserRow> {
  if (actorId === userId) {
    // The last admin demoting or deactivating themselves would leave nobody to undo it.
    throw new ConflictError('Admins cannot change their own role or status; ask another admin.');
  }
  const user = await getUser(deps.db, userId);
  const roleChanged = changes.role !== undefined && changes.role !== user.role;
  const deactivating = changes.isActive === false && user.deactivated_at === null;
  const reactivating = changes.isActive === true && user.deactivated_at !== null;
  if (!roleChanged && !deactivating && !reactivating) return user;
  // Access tokens carry the role: end the sessions so no token keeps powers the user has lost.
  const updated = await changeStatusAndRevoke(
    deps,
    userId,
    {
      ...(roleChanged ? { role: changes.role } : {}),
      ...(deactivating ? { deactivated_at: new Date().toISOString() } : {}),
      ...(reactivating ? { deactivated_at: null } : {}),
    },
    deactivating ? 'deactivated' : roleChanged ? 'role_changed' : undefined,
  );
  if (updated === undefined) throw new NotFoundError('No such user.');
  return updated;
}

export async function listUsers(
  db: Queryable,
  query: { limit: number; cursor?: string; q?: string },
): Promise<Page<User>> {
  const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor, ['timestamp', 'uuid']);
  const rows = await usersRepository.listUsers(db, {
    limit: query.limit,
    ...(after === undefined ? {} : { after: [after[0] ?? '', after[1] ?? ''] as const }),
    ...(query.q === undefined ? {} : { q: query.q }),
  });
  return toPage(rows, query.limit, toUser, (row) => [row.created_at, row.id]);
}
