import { createHmac, hkdfSync } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Result } from 'ioredis';
import type { Logger } from 'pino';
import type { Queryable } from '../db/database.js';
import { secretsEqual } from '../lib/constant-time.js';
import type { CacheFloor } from './cache/cache.js';
import { afterCommit } from './database-deadline.js';
import { isLsnKey, type LsnKey, laterLsn, primaryOnlyLsn } from './lsn.js';
import type { RedisHandle } from './redis.js';
import type { Freshness, ReplicaRouter } from './replicas.js';

/**
 * Read-your-writes across read replicas (decision 0030). After a request that may have written, the
 * primary's WAL position — read after COMMIT, never inside the transaction, where it points before
 * the commit record — goes back to the client as an HMAC-signed token, in a header and an HttpOnly
 * cookie, and (signed-in users, with Redis) under the user's id, so another device of the same user
 * also waits for it. A later read of that client may use a replica only once the replica has
 * replayed that position (replicas.ts).
 *
 * The token is signed so that nobody can send a made-up position from the future and pin every
 * read of theirs to the waiting path and the primary. An old position is harmless: every replica is
 * past it. Its lifetime is derived from the lag limits: a replica still in use has replayed
 * everything older than its time-lag limit, so after `ttlSeconds` no replica needs the token.
 *
 * When the position cannot be read after a write (the pool exhausted, the primary slow to answer),
 * the token and the user's key carry `primaryOnlyLsn` instead: that client's reads go to the
 * primary until the TTL, rather than to a replica that may not have the write (decision 0119).
 */

export const readAfterHeader = 'shipshape-read-after';
export const readAfterCookie = 'shipshape-read-after';

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);
const tokenPattern = /^([0-9a-f]{16})\.([A-Za-z0-9_-]{22})$/;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    readAfterRaise(key: string, lsn: string, ttlMs: number): Result<number, Context>;
  }
}

// KEYS: the user's key. ARGV: position, TTL. Keeps the later position: two devices may race.
const raiseScript = `
local v = redis.call('GET', KEYS[1])
if (not v) or ARGV[1] > v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1`;

export interface ReadAfterTokens {
  sign(lsn: LsnKey): string;
  verify(token: string | undefined): LsnKey | undefined;
}

/**
 * Signed position tokens, keyed by keys derived from the secrets for this purpose only: the first
 * secret signs, every one verifies (the JWT key ring, so a rotation keeps positions valid).
 */
export function readAfterTokens(secrets: readonly string[]): ReadAfterTokens {
  const keys = secrets.map((secret) =>
    Buffer.from(hkdfSync('sha256', secret, '', 'shipshape read-your-writes token', 32)),
  );
  const [signing] = keys;
  if (signing === undefined) throw new Error('readAfterTokens needs at least one secret');
  const mac = (key: Buffer, lsn: string) =>
    createHmac('sha256', key).update(lsn).digest('base64url').slice(0, 22);
  return {
    sign: (lsn) => `${lsn}.${mac(signing, lsn)}`,
    verify(token) {
      if (token === undefined) return undefined;
      const match = tokenPattern.exec(token.trim());
      if (match === null) return undefined;
      const lsn = match[1] ?? '';
      const given = match[2] ?? '';
      let valid = false;
      for (const key of keys) valid = secretsEqual(given, mac(key, lsn)) || valid;
      return valid && isLsnKey(lsn) ? lsn : undefined;
    },
  };
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export interface ReadRouting {
  /** False without replicas: reads simply run on the primary. */
  readonly routed: boolean;
  /**
   * Runs a read-only unit of work where this request's freshness allows: its own and its user's
   * last write, and (`floor`, for cache loads) the writes that invalidated the cached scope. With
   * `onStale`, an older replica answers while the primary is unreachable (ReplicaRouter.read).
   */
  read<T>(
    request: FastifyRequest,
    work: (db: Queryable) => Promise<T>,
    floor?: CacheFloor,
    onStale?: () => void,
  ): Promise<T>;
  /** The primary's position now (after a commit), for cache invalidation floors; undefined without replicas. */
  floor(): Promise<string | undefined>;
}

export interface ReadRoutingOptions {
  readonly router: ReplicaRouter;
  readonly primary: Queryable;
  readonly redis: RedisHandle | undefined;
  /** The first signs, every one verifies. */
  readonly secrets: readonly string[];
  readonly ttlSeconds: number;
  readonly logger: Logger;
}

export function createReadRouting(options: ReadRoutingOptions): ReadRouting & {
  /** Registers the hooks that read and hand out positions, on the API scope. */
  hooks(api: FastifyInstance): void;
} {
  const { router, redis, logger } = options;
  const tokens = readAfterTokens(options.secrets);
  const ttlMs = options.ttlSeconds * 1000;
  if (redis !== undefined && typeof redis.client.readAfterRaise !== 'function') {
    redis.client.defineCommand('readAfterRaise', { numberOfKeys: 1, lua: raiseScript });
  }
  const userKey = (userId: string) => `rw:${userId}`;
  const requirements = new WeakMap<FastifyRequest, Promise<LsnKey | undefined>>();

  async function ofUser(userId: string): Promise<LsnKey | undefined> {
    if (redis === undefined) return undefined;
    try {
      const stored = await redis.run((c) => c.get(userKey(userId)));
      return stored !== null && isLsnKey(stored) ? stored : undefined;
    } catch {
      // Without Redis, the client's own token still covers this device.
      return undefined;
    }
  }

  function requirement(request: FastifyRequest): Promise<LsnKey | undefined> {
    let pending = requirements.get(request);
    if (pending === undefined) {
      const header = request.headers[readAfterHeader];
      const own = tokens.verify(
        typeof header === 'string' ? header : cookieValue(request.headers.cookie, readAfterCookie),
      );
      pending =
        request.auth === null
          ? Promise.resolve(own)
          : ofUser(request.auth.userId).then((user) => laterLsn(own, user));
      requirements.set(request, pending);
    }
    return pending;
  }

  async function remember(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    let lsn: LsnKey;
    if (reply.statusCode >= 500) {
      // A write that failed may still have committed (a COMMIT whose answer was lost), and the
      // failure is often the database itself (the pool exhausted, the primary gone): asking it
      // for its position would add a second wait to an answer that already waited. Without a
      // position, only the primary is sure to have the write.
      lsn = primaryOnlyLsn;
    } else {
      try {
        lsn = await afterCommit(() => router.primaryLsn());
      } catch (err) {
        // The write may have committed: without a position, only the primary is sure to have it.
        request.log.warn({ err }, 'could not read the WAL position after a write; reads go to the primary');
        lsn = primaryOnlyLsn;
      }
    }
    const token = tokens.sign(lsn);
    reply.header(readAfterHeader, token);
    reply.header(
      'set-cookie',
      `${readAfterCookie}=${token}; Max-Age=${options.ttlSeconds}; Path=/api; HttpOnly; Secure; SameSite=Lax`,
    );
    if (redis !== undefined && request.auth !== null) {
      const { userId } = request.auth;
      await redis
        .run((c) => c.readAfterRaise(userKey(userId), lsn, ttlMs))
        .catch((err: unknown) => {
          logger.debug({ err }, 'could not record the position for the user; other devices may lag');
        });
    }
  }

  return {
    routed: router.configured,

    async read(request, work, floor, onStale) {
      if (!router.configured) return work(options.primary);
      const own = await requirement(request);
      const freshness: Freshness = floor === 'unknown' ? 'primary' : laterLsn(own, floor);
      return router.read(freshness, work, onStale);
    },

    async floor() {
      if (!router.configured) return undefined;
      try {
        return await afterCommit(() => router.primaryLsn());
      } catch (err) {
        // The write committed; the invalidation must still happen. Its generation keeps the highest
        // floor seen so far, so only a replica lagging behind this very write could refill it.
        logger.warn({ err }, 'could not read the WAL position for a cache invalidation');
        return undefined;
      }
    },

    hooks(api) {
      if (!router.configured) return;
      api.addHook('onSend', async (request, reply, payload) => {
        // A 4xx changed nothing the client reads back; anything else may have committed a write.
        const status = reply.statusCode;
        if (!safeMethods.has(request.method) && (status < 400 || status >= 500)) {
          await remember(request, reply);
        }
        return payload;
      });
    },
  };
}
