import { LRUCache } from 'lru-cache';
import type { CacheBackend, Lookup } from './cache.js';
import { createTokenSource } from './generations.js';

interface Stored {
  readonly stamp: string;
  readonly value: unknown;
}

/**
 * The in-process backend: per process, so with several workers each has its own copy and a write
 * on one worker invalidates only that worker's (use Redis to share). Bounded: least recently used
 * entries go first. Values are kept by reference and must not be mutated by callers.
 */
export function createMemoryCacheBackend(maxEntries: number): CacheBackend {
  const entries = new LRUCache<string, Stored>({ max: maxEntries });
  // Evicting a scope's generation is safe: a new one is made, and its old entries become misses.
  const generations = new LRUCache<string, string>({ max: maxEntries });
  const id = createTokenSource();
  // The highest floor invalidated so far; every new generation carries it (cache.ts, CacheFloor).
  let highWater = '';
  const token = () => `${highWater}~${id()}`;
  const raise = (floor: string | undefined) => {
    if (floor !== undefined && floor > highWater) highWater = floor;
  };
  let global = token();

  return {
    kind: 'memory',
    async lookup(scope, key): Promise<Lookup> {
      let generation = generations.get(scope);
      if (generation === undefined) {
        generation = token();
        generations.set(scope, generation);
      }
      const stamp = `${global}:${generation}`;
      const stored = entries.get(key);
      return stored !== undefined && stored.stamp === stamp
        ? { hit: true, value: stored.value }
        : { hit: false, stamp };
    },
    async store(key, stamp, value, ttlMs) {
      entries.set(key, { stamp, value }, { ttl: ttlMs });
    },
    async invalidate(scopes, keys, floor) {
      raise(floor);
      for (const scope of scopes) generations.set(scope, token());
      for (const key of keys) entries.delete(key);
    },
    async invalidateAll(floor) {
      raise(floor);
      global = token();
    },
    async ping() {},
  };
}
