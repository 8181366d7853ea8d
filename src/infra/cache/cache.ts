import type { Logger } from 'pino';
import type { CacheMetrics } from './metrics.js';

/**
 * Cache-aside in front of the database, over one of two backends with the same behaviour: a bounded
 * in-process LRU (the default; each process has its own) or Redis (shared by every process and
 * server). The rules this module exists for (guide corrections 11–14):
 *
 * - A miss means "no entry", never a falsy value: entries are wrapped, so a cached `null`, `0`, `''`
 *   or `[]` is a hit.
 * - Invalidation never enumerates keys. Every entry is stamped with the generation of its scope
 *   (and a global generation) current when its load began; invalidating a scope replaces the
 *   generation, which turns every entry stamped with the old one into a miss. A load that raced
 *   with a write stores its result under the old stamp, so it can never be served afterwards.
 * - Concurrent misses on one key in one process share a single load (single flight).
 * - Backend trouble is a miss, counted and never thrown: the caller is served from the source.
 *   Invalidations that could not be delivered are not forgotten: until a global invalidation goes
 *   through, nothing in the backend is trusted.
 * - With read replicas, an invalidation carries the primary's WAL position after the write (its
 *   floor). Each generation token starts with the highest floor invalidated so far, and a load is
 *   told the floor of the generations it is stamped with: it must read from a source that has
 *   replayed at least that much. Otherwise a load that began after a write's invalidation but read
 *   a lagging replica would store the old data under the new generation, and serve it to everyone,
 *   the writer included, until the TTL (decision 0030).
 */

/**
 * How fresh a load's source must be: a WAL position (`LsnKey`), `'unknown'` (the backend could not
 * say: read the primary), or undefined (no write recorded a floor: any source).
 */
export type CacheFloor = string | 'unknown' | undefined;

/** Generation tokens are `<floor>~<id>`; a stamp is `<global token>:<scope token>`. */
export function floorOfStamp(stamp: string): CacheFloor {
  let floor: string | undefined;
  for (const token of stamp.split(':')) {
    const tilde = token.indexOf('~');
    if (tilde <= 0) continue;
    const candidate = token.slice(0, tilde);
    if (floor === undefined || candidate > floor) floor = candidate;
  }
  return floor;
}

/** A cache load: `floor` says how fresh its source must be; `uncacheable()` says it was not. */
export type Load<T> = (floor: CacheFloor, uncacheable: () => void) => Promise<T>;

/** Where a value lives: its key, the scope that invalidates it, its lifetime and its metrics label. */
export interface CacheEntry {
  /** Which cache this is, for metrics (a small fixed set: `product`, `product_list`, `user`). */
  readonly cache: string;
  /** Invalidating the scope invalidates every key in it. */
  readonly scope: string;
  readonly key: string;
  readonly ttlMs: number;
}

export type Lookup =
  | { readonly hit: true; readonly value: unknown }
  /** `stamp` identifies the generations seen: a value loaded now is stored under it. */
  | { readonly hit: false; readonly stamp: string };

/** Storage behind the cache. Every method may throw; the cache turns failures into misses. */
export interface CacheBackend {
  readonly kind: 'memory' | 'redis' | 'none';
  lookup(scope: string, key: string): Promise<Lookup>;
  store(key: string, stamp: string, value: unknown, ttlMs: number): Promise<void>;
  /**
   * New generations for the scopes (their entries become misses); the keys are also deleted. The
   * new tokens carry the highest floor seen so far, this one included.
   */
  invalidate(scopes: readonly string[], keys: readonly string[], floor?: string): Promise<void>;
  /** A new global generation: every entry becomes a miss. */
  invalidateAll(floor?: string): Promise<void>;
  /** Resolves when the backend answers; rejects when it cannot be used. */
  ping(): Promise<void>;
  /** Releases what the backend holds of its own (the local tier's tracking connection). */
  close?(): Promise<void>;
}

export interface Cache {
  readonly kind: 'memory' | 'redis' | 'none';
  /**
   * The cached value for the entry, or else `load()`'s result, stored for next time. Concurrent
   * callers for one key share one load. `load` must return JSON-serialisable data (not undefined);
   * it is given the floor its source must have replayed (see `CacheFloor`), and a function to call
   * when it could only read an older source: that result is returned, never stored.
   */
  aside<T>(entry: CacheEntry, load: Load<T>): Promise<T>;
  /**
   * Invalidates scopes (and deletes keys). Resolves once done — or recorded for later, if the
   * backend failed. `floor`: the primary's WAL position read after the write committed.
   */
  invalidate(target: {
    readonly scopes: readonly string[];
    readonly keys?: readonly string[];
    readonly floor?: string;
  }): Promise<void>;
  /** For readiness: 'degraded' while the backend cannot be used (requests then go to the database). */
  status(): Promise<'up' | 'degraded'>;
}

export interface CacheOptions {
  readonly metrics: CacheMetrics;
  readonly logger: Logger;
  /**
   * Asked before every lookup: true when the source was written behind the cache's back (another
   * process on the same SQLite file: a CLI seed, another worker). Everything is then invalidated.
   */
  readonly externalWrites?: () => boolean;
}

export function createCache(backend: CacheBackend, options: CacheOptions): Cache {
  const { metrics, logger, externalWrites } = options;
  // scope → flight id → the shared load. Grouped by scope so invalidating a scope forgets its flights.
  const flights = new Map<string, Map<string, Promise<unknown>>>();
  // True after an invalidation failed: entries the backend still holds may be stale.
  let invalidationsLost = false;
  // The highest floor among the lost invalidations: the global invalidation that replaces them carries it.
  let lostFloor: string | undefined;
  let failing = false;

  function failed(operation: 'lookup' | 'store' | 'invalidate', err: unknown): void {
    metrics.errors(operation);
    // Once per outage, not once per request: the Redis handle logs connection trouble itself.
    if (!failing) logger.warn({ err, operation }, 'cache unavailable; serving from the database');
    failing = true;
  }

  function succeeded(): void {
    if (failing) logger.info('cache available again');
    failing = false;
  }

  /** Whether entries may be trusted: after lost invalidations, only once everything is invalidated. */
  async function trusted(): Promise<boolean> {
    if (!invalidationsLost) return true;
    try {
      await backend.invalidateAll(lostFloor);
      invalidationsLost = false;
      lostFloor = undefined;
      logger.info('cache flushed after lost invalidations');
      return true;
    } catch (err) {
      failed('invalidate', err);
      return false;
    }
  }

  function forget(scope: string, id: string, promise: Promise<unknown>): void {
    const byId = flights.get(scope);
    if (byId?.get(id) !== promise) return;
    byId.delete(id);
    if (byId.size === 0) flights.delete(scope);
  }

  function flight<T>(entry: CacheEntry, stamp: string | undefined, load: Load<T>): Promise<T> {
    // Callers that saw the same generations may share a load: none of them started after a write
    // that changed the generation. Without a stamp (backend down) only loads still running are shared.
    const id = stamp === undefined ? `${entry.key}\n` : `${entry.key}\n${stamp}`;
    let byId = flights.get(entry.scope);
    const running = byId?.get(id);
    if (running !== undefined) return running as Promise<T>;

    // False once the load says its source was older than the floor (primary unreachable): never stored.
    let storable = stamp !== undefined;
    const promise = (async () => {
      metrics.load(entry.cache);
      // Without a stamp the backend could not say which writes happened: only the primary is safe.
      const value = await load(stamp === undefined ? 'unknown' : floorOfStamp(stamp), () => {
        storable = false;
      });
      if (storable && stamp !== undefined && value !== undefined) {
        try {
          await backend.store(entry.key, stamp, value, entry.ttlMs);
          succeeded();
        } catch (err) {
          failed('store', err);
        }
      }
      return value;
    })();
    if (byId === undefined) {
      byId = new Map();
      flights.set(entry.scope, byId);
    }
    byId.set(id, promise);
    // A stamped load is kept until the next turn of the event loop: a lookup answered just before
    // the store (in the same batch of replies) still joins it instead of starting a second load.
    // Without a stamp, or from a source older than the floor, nothing says a later caller may have
    // this result: forget it at once.
    const done = () => forget(entry.scope, id, promise);
    promise.then(() => (storable ? setImmediate(done) : done()), done);
    return promise;
  }

  return {
    kind: backend.kind,

    async aside<T>(entry: CacheEntry, load: Load<T>): Promise<T> {
      if (externalWrites?.()) {
        // Loads running now may have read the old data; entries certainly hold it.
        flights.clear();
        try {
          await backend.invalidateAll();
        } catch (err) {
          failed('invalidate', err);
          invalidationsLost = true;
        }
      }
      let lookup: Lookup | undefined;
      if (!invalidationsLost || (await trusted())) {
        try {
          lookup = await backend.lookup(entry.scope, entry.key);
          if (failing) succeeded();
        } catch (err) {
          failed('lookup', err);
        }
      }
      if (lookup === undefined) {
        metrics.request(entry.cache, 'error');
        return flight(entry, undefined, load);
      }
      if (lookup.hit) {
        metrics.request(entry.cache, 'hit');
        return lookup.value as T;
      }
      metrics.request(entry.cache, 'miss');
      return flight(entry, lookup.stamp, load);
    },

    async invalidate(target) {
      const keys = target.keys ?? [];
      // Loads already running in this process may have read the old data: later callers start anew.
      for (const scope of target.scopes) flights.delete(scope);
      try {
        await backend.invalidate(target.scopes, keys, target.floor);
        succeeded();
      } catch (err) {
        failed('invalidate', err);
        invalidationsLost = true;
        if (target.floor !== undefined && (lostFloor === undefined || target.floor > lostFloor))
          lostFloor = target.floor;
      }
    },

    async status() {
      if (!(await trusted())) return 'degraded';
      try {
        await backend.ping();
        return 'up';
      } catch {
        return 'degraded';
      }
    },
  };
}
