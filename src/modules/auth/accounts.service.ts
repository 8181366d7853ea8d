import { createHash, randomUUID } from 'node:crypto';
import type { FastifyRequest, preValidationAsyncHookHandler } from 'fastify';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Config, VerifiedAction } from '../../config.js';
import type { Queryable } from '../../db/database.js';
import type { Mailer } from '../../infra/mail/mailer.js';
import { renderMail } from '../../infra/mail/templates.js';
import type { CounterStore } from '../../infra/rate-limit/counter-store.js';
import type { JobQueue } from '../../jobs/queue.js';
import { AppError, ErrorCode, UnauthenticatedError } from '../../lib/errors.js';
import * as usersRepository from '../users/users.repository.js';
import { assertAcceptablePassword, writingAccount } from '../users/users.service.js';
import type { UserRow } from '../users/users.table.js';
import {
  accountToken,
  consumeAccountToken,
  consumeOtherTokens,
  findAccountTokenById,
  findLiveAccountToken,
  hashAccountToken,
  insertAccountToken,
} from './account-tokens.js';
import type { AccountTokenPurpose, AccountTokenRow } from './account-tokens.table.js';
import type { AuthDeps } from './auth.deps.js';
import { lockoutKey } from './lockout.js';
import { revokeSessions } from './sessions.repository.js';
import { recordRevoked } from './sessions.service.js';

/**
 * Password reset and email verification (issue 16, decision 0061). Everything that depends on
 * whether an address has an account runs in a job, never in the request: the request for a reset
 * only enqueues, so its answer and its timing are the same for every address.
 */

export const accountJobs = {
  passwordReset: 'account.password-reset',
  mail: 'mail.account',
} as const;

export type AccountMail =
  | { readonly kind: 'password-reset' | 'verify-email'; readonly tokenId: string }
  | { readonly kind: 'password-changed'; readonly userId: string; readonly eventId: string };

export interface AccountsDeps {
  readonly auth: AuthDeps;
  readonly config: Config['accounts'];
  readonly counters: CounterStore;
  readonly queue: JobQueue;
  /** Makes every new token (from the current JWT secret). */
  readonly tokenKey: Buffer;
  /**
   * The keys from every secret of the JWT key ring, current first: the mail job finds among them
   * the one that made the token whose hash is stored (during a rotation, the process that stored it
   * may have had another current secret than the worker that mails it).
   */
  readonly tokenKeys: readonly Buffer[];
  readonly logger: Logger;
}

const purposeOf = { 'password-reset': 'password_reset', 'verify-email': 'verify_email' } as const;

export class InvalidTokenError extends AppError {
  constructor() {
    super(
      400,
      ErrorCode.INVALID_TOKEN,
      'The link is not valid: it was used already, has expired, or was mistyped.',
    );
  }
}

/** Addresses compare as the lookups do (`lower(email)`). */
const sameAddress = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

const hashed = (value: string) => createHash('sha256').update(value).digest('base64url').slice(0, 22);

/** At most `mailsPerAddress` mails of a kind to one address per window (any address, known or not). */
async function withinMailBudget(deps: AccountsDeps, kind: string, address: string): Promise<boolean> {
  const { count } = await deps.counters.increment(
    `account-mail:${kind}:${hashed(address.toLowerCase())}`,
    deps.config.mailWindowSeconds * 1000,
  );
  return count <= deps.config.mailsPerAddress;
}

async function findUserByEmail(db: Queryable, email: string): Promise<UserRow | undefined> {
  return db
    .selectFrom('users')
    .selectAll()
    .where(sql`lower(email)`, '=', email.trim().toLowerCase())
    .executeTakeFirst();
}

// ---- Password reset -------------------------------------------------------------------------

/** POST /password-reset: one INSERT whatever the address (the job does the rest). */
export async function requestPasswordReset(deps: AccountsDeps, email: string): Promise<void> {
  await deps.queue.enqueue(deps.auth.db, accountJobs.passwordReset, { email: email.trim().toLowerCase() });
}

/**
 * The job behind a reset request. Its token's id is the job's id, and the mail job's key is made
 * from it, so a rerun of this job (its worker died) creates no second token and no second mail.
 */
export async function runPasswordResetJob(deps: AccountsDeps, jobId: string, email: string): Promise<void> {
  if (!(await withinMailBudget(deps, 'password_reset', email))) {
    deps.logger.warn(
      { event: 'password_reset_throttled', emailHash: hashed(email) },
      'reset mail not sent: too many',
    );
    return;
  }
  const user = await findUserByEmail(deps.auth.db, email);
  if (user === undefined || user.deactivated_at !== null) {
    deps.logger.info(
      { event: 'password_reset_requested', known: false },
      'password reset for no active account',
    );
    return;
  }
  const expiresAt = new Date(Date.now() + deps.config.passwordResetTtlSeconds * 1000).toISOString();
  await deps.auth.db.transaction().execute(async (trx) => {
    await insertAccountToken(trx, {
      id: jobId,
      token_hash: hashAccountToken(accountToken(deps.tokenKey, 'password_reset', jobId)),
      user_id: user.id,
      purpose: 'password_reset',
      email: user.email,
      expires_at: expiresAt,
    });
    await enqueueMail(deps, trx, { kind: 'password-reset', tokenId: jobId });
  });
  deps.logger.info(
    { event: 'password_reset_requested', known: true, userId: user.id },
    'password reset mailed',
  );
}

/**
 * Sets the new password, spends the token (and every other reset link of the account) and revokes
 * every session — in one transaction, so a reset link works exactly once even when used twice at
 * the same moment. The password rules are those of registration. A link works only while the
 * account's address is the one it was mailed to: whoever keeps a previous mailbox must not take
 * the account over (an email change also spends the links: users.service.ts updateProfile).
 */
export async function confirmPasswordReset(
  deps: AccountsDeps,
  token: string,
  newPassword: string,
): Promise<void> {
  const now = new Date().toISOString();
  const found = await findLiveAccountToken(deps.auth.db, 'password_reset', token, now);
  if (found === undefined) throw new InvalidTokenError();
  const user = await usersRepository.findUserById(deps.auth.db, found.user_id);
  if (user === undefined || user.deactivated_at !== null || !sameAddress(user.email, found.email))
    throw new InvalidTokenError();
  assertAcceptablePassword(newPassword, '/body/newPassword', user);
  const passwordHash = await deps.auth.passwords.hash(newPassword);
  const filter = { userId: user.id };
  const revoked = await writingAccount(deps.auth, user.id, () =>
    deps.auth.db.transaction().execute(async (trx) => {
      const spent = await consumeAccountToken(trx, found.id, new Date().toISOString());
      if (spent === undefined) return undefined;
      await consumeOtherTokens(trx, user.id, 'password_reset', now);
      // The link reached the account's address (checked again in the UPDATE, which locks the row:
      // an email change that committed after the read above makes it match nothing), so that
      // address is verified too.
      const changed = await trx
        .updateTable('users')
        .set({
          password_hash: passwordHash,
          ...(user.email_verified_at === null ? { email_verified_at: now } : {}),
        })
        .where('id', '=', user.id)
        .where(sql`lower(email)`, '=', spent.email.toLowerCase())
        .where('deactivated_at', 'is', null)
        .returning('id')
        .executeTakeFirst();
      if (changed === undefined) return undefined;
      const sessions = await revokeSessions(trx, deps.auth.engine, filter, 'password_reset');
      await enqueueMail(deps, trx, { kind: 'password-changed', userId: user.id, eventId: spent.id });
      return sessions;
    }),
  );
  if (revoked === undefined) throw new InvalidTokenError();
  recordRevoked(deps.auth, revoked, 'password_reset', filter);
  // The owner proved control of the mailbox: failed guesses by others no longer lock them out.
  await deps.auth.lockout.recordSuccess(lockoutKey(user, user.email));
  deps.logger.info({ event: 'password_reset', userId: user.id }, 'password reset; every session revoked');
}

// ---- Email verification ---------------------------------------------------------------------

/** Mails a verification link for the account's current address (registration, email change, resend). */
export async function startEmailVerification(deps: AccountsDeps, user: UserRow): Promise<void> {
  const id = randomUUID();
  await deps.auth.db.transaction().execute(async (trx) => {
    await insertAccountToken(trx, {
      id,
      token_hash: hashAccountToken(accountToken(deps.tokenKey, 'verify_email', id)),
      user_id: user.id,
      purpose: 'verify_email',
      email: user.email,
      expires_at: new Date(Date.now() + deps.config.emailVerificationTtlSeconds * 1000).toISOString(),
    });
    await enqueueMail(deps, trx, { kind: 'verify-email', tokenId: id });
  });
}

/** Verifies the address the link was sent to, if it is still the account's address. */
export async function confirmEmailVerification(deps: AccountsDeps, token: string): Promise<void> {
  const now = new Date().toISOString();
  const found = await findLiveAccountToken(deps.auth.db, 'verify_email', token, now);
  if (found === undefined) throw new InvalidTokenError();
  const verified = await writingAccount(deps.auth, found.user_id, () =>
    deps.auth.db.transaction().execute(async (trx) => {
      const spent = await consumeAccountToken(trx, found.id, now);
      if (spent === undefined) return false;
      const updated = await trx
        .updateTable('users')
        .set({ email_verified_at: now })
        .where('id', '=', spent.user_id)
        .where(sql`lower(email)`, '=', spent.email.toLowerCase())
        .where('deactivated_at', 'is', null)
        .returning('id')
        .executeTakeFirst();
      return updated !== undefined;
    }),
  );
  if (!verified) throw new InvalidTokenError();
  deps.logger.info({ event: 'email_verified', userId: found.user_id }, 'email verified');
}

/** POST /verify-email/resend: 202 whether or not a mail goes out (verified already, or throttled). */
export async function resendVerification(deps: AccountsDeps, userId: string): Promise<void> {
  const user = await usersRepository.findUserById(deps.auth.db, userId);
  if (user === undefined || user.email_verified_at !== null) return;
  if (!(await withinMailBudget(deps, 'verify_email', user.email))) {
    deps.logger.warn({ event: 'verification_throttled', userId }, 'verification mail not sent: too many');
    return;
  }
  await startEmailVerification(deps, user);
}

/** preValidation hook after `authenticate`: 403 EMAIL_NOT_VERIFIED when the action needs a verified email. */
export function requireVerifiedEmail(
  deps: AccountsDeps,
  action: VerifiedAction,
): preValidationAsyncHookHandler {
  return async (request: FastifyRequest) => {
    if (!deps.config.verificationRequiredFor.includes(action)) return;
    if (request.auth === null) throw new UnauthenticatedError();
    const user = await usersRepository.findUserById(deps.auth.db, request.auth.userId);
    if (user?.email_verified_at === null || user === undefined) {
      throw new AppError(
        403,
        ErrorCode.EMAIL_NOT_VERIFIED,
        'Confirm your email address first (POST /api/auth/verify-email/resend sends the link again).',
      );
    }
  };
}

// ---- Mail -----------------------------------------------------------------------------------

async function enqueueMail(deps: AccountsDeps, trx: Queryable, mail: AccountMail): Promise<void> {
  const key =
    mail.kind === 'password-changed' ? `mail:password-changed:${mail.eventId}` : `mail:${mail.tokenId}`;
  await deps.queue.enqueue(trx, accountJobs.mail, mail, { key });
}

/** A mail job whose token no key of the ring reproduces: failed (retried, then dead), never mailed. */
export class TokenKeyMissingError extends Error {
  constructor(tokenId: string) {
    super(
      `no key of the JWT secret ring reproduces account token ${tokenId} (made with a secret this process no longer has?)`,
    );
    this.name = 'TokenKeyMissingError';
  }
}

/**
 * The token mailed for a stored row: recomputed from its id with the key that made it. The key is
 * found by the stored hash, trying each key of the ring, so a worker one step ahead of (or behind)
 * the process that stored the token during a secret rotation still mails a link that works.
 */
function tokenFor(deps: AccountsDeps, purpose: AccountTokenPurpose, row: AccountTokenRow): string {
  for (const key of deps.tokenKeys) {
    const token = accountToken(key, purpose, row.id);
    if (hashAccountToken(token) === row.token_hash) return token;
  }
  throw new TokenKeyMissingError(row.id);
}

/**
 * The mail job: renders and sends one account mail. The Message-ID comes from the token (or event)
 * id, so a rerun after a worker died mid-send sends the same message again, recognisably. A token
 * already used or expired by the time the job runs sends nothing, nor does one mailed to an
 * address that is no longer the account's (its link would be refused: confirmPasswordReset). The
 * signal is the worker's: aborted when this job's lease was lost to another worker, which then
 * sends the mail itself, so this attempt must not send it too.
 */
export async function deliverAccountMail(
  deps: AccountsDeps,
  mailer: Mailer,
  mail: AccountMail,
  signal: AbortSignal,
): Promise<void> {
  if (mail.kind === 'password-changed') {
    const user = await usersRepository.findUserById(deps.auth.db, mail.userId);
    if (user === undefined) return;
    signal.throwIfAborted();
    await mailer.send({
      to: user.email,
      messageId: `<password-changed-${mail.eventId}@shipshape>`,
      ...renderMail({ kind: 'password-changed', username: user.username }),
    });
    return;
  }
  const purpose: AccountTokenPurpose = purposeOf[mail.kind];
  const row = await findAccountTokenById(deps.auth.db, mail.tokenId);
  if (row === undefined || row.used_at !== null || row.expires_at <= new Date().toISOString()) {
    deps.logger.info(
      { event: 'mail_skipped', tokenId: mail.tokenId },
      'token used or expired before its mail',
    );
    return;
  }
  const user = await usersRepository.findUserById(deps.auth.db, row.user_id);
  if (user === undefined) return;
  if (!sameAddress(user.email, row.email)) {
    deps.logger.info(
      { event: 'mail_skipped', tokenId: mail.tokenId, reason: 'address_changed' },
      'the account changed its address before the mail: not sent',
    );
    return;
  }
  const token = tokenFor(deps, purpose, row);
  const page = mail.kind === 'password-reset' ? 'reset-password' : 'verify-email';
  // The storefront's page for it (hash route): the token stays in the fragment, which browsers
  // never send, so it reaches no server or proxy log.
  const link = `${deps.config.publicBaseUrl}/#/${page}?token=${token}`;
  signal.throwIfAborted();
  await mailer.send({
    to: row.email,
    messageId: `<${mail.kind}-${row.id}@shipshape>`,
    ...renderMail(
      mail.kind === 'password-reset'
        ? {
            kind: 'password-reset',
            username: user.username,
            link,
            minutes: Math.round(deps.config.passwordResetTtlSeconds / 60),
          }
        : {
            kind: 'verify-email',
            username: user.username,
            link,
            hours: Math.round(deps.config.emailVerificationTtlSeconds / 3600),
          },
    ),
  });
}
