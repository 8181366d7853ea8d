import type { Result } from 'ioredis';
import type { RedisHandle } from '../redis.js';
import type { CacheBackend, Lookup } from './cache.js';
import { createTokenSource } from './generations.js';
import type { LocalTier } from './local-tier.js';

/**
 * The Redis backend: shared by every process and server, so a write anywhere invalidates for
 * everyone. Every command goes through the handle's circuit breaker (short timeout, fail fast while
 * Redis is down). Keys (under the client's key prefix):
 *
 *   cache:gen            the global generation
 *   cache:gen:<scope>    a scope's generation
 *   cache:floor          the highest floor invalidated so far (WAL position; cache.ts, CacheFloor)
 *   cache:entry:<key>    "<stamp>\n<JSON value>", with the entry's TTL
 *
 * A lookup is one round trip: a script reads both generations (creating a missing one, so an
 * evicted or expired generation only ever invalidates) and the entry; the entry is a hit when its
 * stamp matches. Invalidation is one MULTI: new generations plus DEL of the named keys — never
 * KEYS or SCAN (guide correction 12).
 * Generation tokens are `<floor>~<id>`, the floor being `cache:floor` when the token is made: both
 * scripts make tokens inside Redis, so floors only grow in the order invalidations land.
 *
 * With a local tier (local-tier.ts, decision 0104) a hit copied into this process is answered from
 * memory; the lookup script also returns the entry's remaining TTL, which bounds the copy.
 */

// KEYS: global generation, scope generation, entry, floor. ARGV: an id for a missing generation, its TTL.
const lookupScript = `
local g = redis.call('GET', KEYS[1])
if not g then
  g = (redis.call('GET', KEYS[4]) or '') .. '~' .. ARGV[1]
  redis.call('SET', KEYS[1], g, 'PX', ARGV[2])
end
local s = redis.call('GET', KEYS[2])
if not s then
  s = (redis.call('GET', KEYS[4]) or '') .. '~' .. ARGV[1]
  redis.call('SET', KEYS[2], s, 'PX', ARGV[2])
end
return {g .. ':' .. s, redis.call('GET', KEYS[3]), redis.call('PTTL', KEYS[3])}`;

// KEYS: floor, then n generation keys, then entry keys to delete. ARGV: floor, TTL, n, n ids.
const invalidateScript = `
local hw = redis.call('GET', KEYS[1]) or ''
if ARGV[1] > hw then
  hw = ARGV[1]
end
redis.call('SET', KEYS[1], hw, 'PX', ARGV[2])
local n = tonumber(ARGV[3])
for i = 1, n do
  redis.call('SET', KEYS[1 + i], hw .. '~' .. ARGV[3 + i], 'PX', ARGV[2])
end
for i = n + 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
return n`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    cacheLookup(
      globalKey: string,
      scopeKey: string,
      entryKey: string,
      floorKey: string,
      token: string,
      generationTtlMs: number,
    ): Result<[string, string | null, number], Context>;
    cacheInvalidate(numberOfKeys: number, ...args: Array<string | number>): Result<number, Context>;
  }
}

/** Generations outlive any entry TTL (at most a day), so their expiry costs at most one extra miss. */
const generationTtlMs = 2 * 86_400_000;
const globalKey = 'cache:gen';
const floorKey = 'cache:floor';
const scopeKey = (scope: string) => `cache:gen:${scope}`;
const entryKey = (key: string) => `cache:entry:${key}`;

export function createRedisCacheBackend(redis: RedisHandle, tier?: LocalTier): CacheBackend {
  const client = redis.client;
  if (typeof client.cacheLookup !== 'function') {
    client.defineCommand('cacheLookup', { numberOfKeys: 4, lua: lookupScript });
  }
  if (typeof client.cacheInvalidate !== 'function') {
    client.defineCommand('cacheInvalidate', { lua: invalidateScript });
  }
  const token = createTokenSource();

  return {
    kind: 'redis',
    async lookup(scope, key): Promise<Lookup> {
      const local = tier?.get(scope, key);
      if (local !== undefined) return { hit: true, value: local.value };
      const ticket = tier?.ticket(scope, key);
      const [stamp, stored, ttlMs] = await redis.run((c) =>
        c.cacheLookup(globalKey, scopeKey(scope), entryKey(key), floorKey, token(), generationTtlMs),
      );
      if (stored?.startsWith(stamp) && stored.charCodeAt(stamp.length) === 10) {
        try {
          const value: unknown = JSON.parse(stored.slice(stamp.length + 1));
          if (ticket !== undefined) tier?.fill(ticket, scope, key, value, ttlMs);
          return { hit: true, value };
        } catch {
          // Not ours or damaged: a miss, and the load overwrites it.
        }
      }
      return { hit: false, stamp };
    },
    async store(key, stamp, value, ttlMs) {
      await redis.run((c) => c.set(entryKey(key), `${stamp}\n${JSON.stringify(value)}`, 'PX', ttlMs));
    },
    async invalidate(scopes, keys, floor) {
      tier?.invalidate(scopes, keys);
      await redis.run((c) =>
        c.cacheInvalidate(
          1 + scopes.length + keys.length,
          floorKey,
          ...scopes.map(scopeKey),
          ...keys.map(entryKey),
          floor ?? '',
          generationTtlMs,
          scopes.length,
          ...scopes.map(() => token()),
        ),
      );
      await tier?.settle();
    },
    async invalidateAll(floor) {
      tier?.invalidateAll();
      await redis.run((c) =>
        c.cacheInvalidate(2, floorKey, globalKey, floor ?? '', generationTtlMs, 1, token()),
      );
      await tier?.settle();
    },
    async ping() {
      if (!redis.available()) throw new Error(`Redis is unavailable (breaker ${redis.breakerState()})`);
      await redis.ping(500);
    },
    close: async () => tier?.close(),
  };
}
