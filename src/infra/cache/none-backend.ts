import type { CacheBackend } from './cache.js';

/**
 * No cache at all (`CACHE_ENABLED=false`): every lookup misses with a stamp of its own, so no two
 * requests share a load and every read goes to the database. For measuring what the cache is worth
 * (the benchmark's "cache off" runs) and for ruling the cache out while debugging.
 */
export function createNoCacheBackend(): CacheBackend {
  let lookups = 0;
  return {
    kind: 'none',
    lookup: async () => ({ hit: false, stamp: String(++lookups) }),
    store: async () => {},
    invalidate: async () => {},
    invalidateAll: async () => {},
    ping: async () => {},
  };
}
