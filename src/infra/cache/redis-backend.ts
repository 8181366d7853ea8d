import type { Result } from 'ioredis';
import type { RedisHandle } from '../redis.js';
import type { CacheBackend, Lookup } from './cache.js';
import { createTokenSource } from './generations.js';

/**
 * The Redis backend: shared by every process and server, so a write anywhere invalidates for
 * everyone. Every command goes through the handle's circuit breaker (short timeout, fail fast while
 * Redis is down). Keys (under the client's key prefix):
 *
 *   cache:gen            the global generation
 *   cache:gen:<scope>    a scope's generation
 *   cache:entry:<key>    "<stamp>\n<JSON value>", with the entry's TTL
 *
 * A lookup is one round trip: a script reads both generations (creating a missing one, so an
 * evicted or expired generation only ever invalidates) and the entry; the entry is a hit when its
 * stamp matches. Invalidation is one MULTI: new generations plus DEL of the named keys — never
 * KEYS or SCAN (KNOWN-DEFECTS 12).
 */

// KEYS: global generation, scope generation, entry. ARGV: a token for a missing generation, its TTL.
const lookupScript = `
local g = redis.call('GET', KEYS[1])
if not g then
  g = ARGV[1]
  redis.call('SET', KEYS[1], g, 'PX', ARGV[2])
end
local s = redis.call('GET', KEYS[2])
if not s then
  s = ARGV[1]
  redis.call('SET', KEYS[2], s, 'PX', ARGV[2])
end
return {g .. ':' .. s, redis.call('GET', KEYS[3])}`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    cacheLookup(
      globalKey: string,
      scopeKey: string,
      entryKey: string,
      token: string,
      generationTtlMs: number,
    ): Result<[string, string | null], Context>;
  }
}

/** Generations outlive any entry TTL (at most a day), so their expiry costs at most one extra miss. */
const generationTtlMs = 2 * 86_400_000;
const globalKey = 'cache:gen';
const scopeKey = (scope: string) => `cache:gen:${scope}`;
const entryKey = (key: string) => `cache:entry:${key}`;

export function createRedisCacheBackend(redis: RedisHandle): CacheBackend {
  const client = redis.client;
  if (typeof client.cacheLookup !== 'function') {
    client.defineCommand('cacheLookup', { numberOfKeys: 3, lua: lookupScript });
  }
  const token = createTokenSource();

  return {
    kind: 'redis',
    async lookup(scope, key): Promise<Lookup> {
      const [stamp, stored] = await redis.run((c) =>
        c.cacheLookup(globalKey, scopeKey(scope), entryKey(key), token(), generationTtlMs),
      );
      if (stored?.startsWith(stamp) && stored.charCodeAt(stamp.length) === 10) {
        try {
          return { hit: true, value: JSON.parse(stored.slice(stamp.length + 1)) };
        } catch {
          // Not ours or damaged: a miss, and the load overwrites it.
        }
      }
      return { hit: false, stamp };
    },
    async store(key, stamp, value, ttlMs) {
      await redis.run((c) => c.set(entryKey(key), `${stamp}\n${JSON.stringify(value)}`, 'PX', ttlMs));
    },
    async invalidate(scopes, keys) {
      await redis.run(async (c) => {
        const multi = c.multi();
        for (const scope of scopes) multi.set(scopeKey(scope), token(), 'PX', generationTtlMs);
        if (keys.length > 0) multi.del(...keys.map(entryKey));
        const results = await multi.exec();
        if (results === null) throw new Error('Redis aborted the invalidation transaction');
        for (const [err] of results) if (err) throw err;
      });
    },
    async invalidateAll() {
      await redis.run((c) => c.set(globalKey, token(), 'PX', generationTtlMs));
    },
    async ping() {
      if (!redis.available()) throw new Error(`Redis is unavailable (breaker ${redis.breakerState()})`);
      await redis.ping(500);
    },
  };
}
