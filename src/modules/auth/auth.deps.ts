import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { Config } from '../../config.js';
import type { Db, Engine } from '../../db/database.js';
import type { CounterStore } from '../../infra/rate-limit/counter-store.js';
import type { UserCache } from '../users/users.cache.js';
import type { UserRow } from '../users/users.table.js';
import { createLoginLockout, type LoginLockout } from './lockout.js';
import { createPasswordHasher, type PasswordHasher } from './passwords.js';
import { createRevocationList, type RevocationList } from './revocations.js';
import { createTokenService, type TokenService } from './tokens.js';

export interface AuthMetrics {
  readonly logins: Counter<'result'>;
  readonly refreshes: Counter<'result'>;
  readonly refreshReuse: Counter;
  readonly revocations: Counter<'reason'>;
  readonly lockouts: Counter;
}

/** Everything the auth and users services need, built once in the composition root. */
export interface AuthDeps {
  readonly db: Db;
  readonly engine: Engine;
  readonly config: Config['auth'];
  readonly passwords: PasswordHasher;
  readonly tokens: TokenService;
  readonly revocations: RevocationList;
  readonly lockout: LoginLockout;
  readonly metrics: AuthMetrics;
  readonly logger: Logger;
  /** The callers' accounts as `GET /me` answers them; absent: every read goes to the database. */
  readonly userCache?: UserCache;
  /** Mails a verification link for the user's current address (accounts.service.ts). */
  readonly startEmailVerification?: (user: UserRow) => Promise<void>;
}

export function createAuthMetrics(registry: Registry): AuthMetrics {
  return {
    logins: new Counter({
      name: 'auth_logins_total',
      help: 'Login attempts by result (success, failure, locked).',
      labelNames: ['result'],
      registers: [registry],
    }),
    refreshes: new Counter({
      name: 'auth_refreshes_total',
      help: 'Refresh-token exchanges by result (success, invalid, reuse, reuse_within_interval).',
      labelNames: ['result'],
      registers: [registry],
    }),
    refreshReuse: new Counter({
      name: 'auth_refresh_reuse_total',
      help: 'Spent refresh tokens presented again (treated as theft: the session is revoked).',
      registers: [registry],
    }),
    revocations: new Counter({
      name: 'auth_session_revocations_total',
      help: 'Sessions revoked, by reason.',
      labelNames: ['reason'],
      registers: [registry],
    }),
    lockouts: new Counter({
      name: 'auth_lockouts_total',
      help: 'Logins locked after repeated failures.',
      registers: [registry],
    }),
  };
}

export function createAuthDeps(input: {
  db: Db;
  engine: Engine;
  config: Config['auth'];
  counters: CounterStore;
  registry: Registry;
  logger: Logger;
  userCache?: UserCache;
}): AuthDeps {
  return {
    db: input.db,
    engine: input.engine,
    config: input.config,
    passwords: createPasswordHasher(input.config),
    tokens: createTokenService(input.config),
    revocations: createRevocationList(input.db, input.logger, {
      engine: input.engine,
      // An access token lives at most this long, plus the clock tolerance of its verification.
      retentionMs: (input.config.accessTokenTtlSeconds + 60) * 1000,
    }),
    lockout: createLoginLockout(input.counters, input.config),
    metrics: createAuthMetrics(input.registry),
    logger: input.logger,
    ...(input.userCache === undefined ? {} : { userCache: input.userCache }),
  };
}
