import { createHash } from 'node:crypto';
import type { Config } from '../../config.js';
import type { CounterStore } from '../../infra/rate-limit/counter-store.js';

/**
 * Per-account brute-force protection. The counters are keyed by the account a login resolves to
 * (so its email and its username share one budget), and by the login as typed (lower-cased) when
 * no account has it, so an unknown account locks exactly like a real one and the lock reveals
 * nothing. Counters live in the shared counter store: in Redis they hold across every worker and
 * server.
 *
 * After `loginMaxFailures` failures within the window the login is locked for `lockoutBaseSeconds`;
 * each further lockout within a day doubles that, up to `lockoutMaxSeconds` — long enough to make
 * guessing hopeless, short enough that an attacker cannot keep a user out for long. A success
 * clears the failures.
 */
export interface LoginLockout {
  /** Seconds until the login may be tried again, or 0 when it is not locked. Keys: lockoutKey(). */
  lockedFor(key: string): Promise<number>;
  /** Counts a failure; returns the lockout it caused in seconds, or 0. */
  recordFailure(key: string): Promise<number>;
  recordSuccess(key: string): Promise<void>;
}

const dayMs = 86_400_000;

/** The counter key of a login attempt: the account when the login names one, else the typed login. */
export function lockoutKey(account: { id: string } | undefined, typedLogin: string): string {
  return account === undefined ? `login:${typedLogin.trim().toLowerCase()}` : `account:${account.id}`;
}

/** Keys are hashed so that no email address ends up in a Redis key. */
function keyOf(key: string): string {
  return createHash('sha256').update(key).digest('base64url').slice(0, 22);
}

export function createLoginLockout(counters: CounterStore, config: Config['auth']): LoginLockout {
  return {
    async lockedFor(key) {
      const lock = await counters.peek(`login-lock:${keyOf(key)}`);
      return lock.count > 0 ? Math.max(1, Math.ceil(lock.resetInMs / 1000)) : 0;
    },

    async recordFailure(login) {
      const key = keyOf(login);
      const failures = await counters.increment(`login-fail:${key}`, config.loginFailureWindowSeconds * 1000);
      if (failures.count < config.loginMaxFailures) return 0;
      await counters.reset(`login-fail:${key}`);
      const { count: level } = await counters.increment(`login-lockouts:${key}`, dayMs);
      const seconds = Math.min(config.lockoutBaseSeconds * 2 ** (level - 1), config.lockoutMaxSeconds);
      await counters.reset(`login-lock:${key}`);
      await counters.increment(`login-lock:${key}`, seconds * 1000);
      return seconds;
    },

    async recordSuccess(login) {
      const key = keyOf(login);
      await counters.reset(`login-fail:${key}`);
      await counters.reset(`login-lockouts:${key}`);
    },
  };
}
