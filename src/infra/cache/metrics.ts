import { Counter, type Registry } from 'prom-client';

export type CacheResult = 'hit' | 'miss' | 'error';

/** What the cache counts: lookups by result, loads from the source, and backend failures. */
export interface CacheMetrics {
  request(cache: string, result: CacheResult): void;
  /** A load from the source of truth: with single flight, one per group of concurrent misses. */
  load(cache: string): void;
  errors(operation: 'lookup' | 'store' | 'invalidate'): void;
}

export function createCacheMetrics(registry: Registry, backend: 'memory' | 'redis' | 'none'): CacheMetrics {
  const requests = new Counter({
    name: 'cache_requests_total',
    help: 'Cache lookups by cache and result: hit, miss, or error (backend unavailable; served from the database).',
    labelNames: ['cache', 'backend', 'result'],
    registers: [registry],
  });
  const loads = new Counter({
    name: 'cache_loads_total',
    help: 'Loads from the database after a miss; concurrent misses on one key share one load.',
    labelNames: ['cache', 'backend'],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'cache_errors_total',
    help: 'Cache backend operations that failed (the request carried on without the cache).',
    labelNames: ['backend', 'operation'],
    registers: [registry],
  });
  // Label children are resolved once per label set: the hit path must stay cheap.
  const children = new Map<string, Counter.Internal>();
  const child = (key: string, make: () => Counter.Internal): Counter.Internal => {
    let found = children.get(key);
    if (found === undefined) {
      found = make();
      children.set(key, found);
    }
    return found;
  };
  return {
    request: (cache, result) =>
      child(`r\n${cache}\n${result}`, () => requests.labels({ cache, backend, result })).inc(),
    load: (cache) => child(`l\n${cache}`, () => loads.labels({ cache, backend })).inc(),
    errors: (operation) => child(`e\n${operation}`, () => errors.labels({ backend, operation })).inc(),
  };
}
