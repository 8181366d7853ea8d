import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { type Cache, type CacheBackend, type CacheEntry, createCache } from '../../src/infra/cache/cache.js';
import { createLocalTier, type LocalTier } from '../../src/infra/cache/local-tier.js';
import { createMemoryCacheBackend } from '../../src/infra/cache/memory-backend.js';
import { createCacheMetrics } from '../../src/infra/cache/metrics.js';
import { createRedisCacheBackend } from '../../src/infra/cache/redis-backend.js';
import { createRedis, type RedisHandle } from '../../src/infra/redis.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../harness/redis.js';
import { redisUrl, skipUnless } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import { captureLogs, deleteKeys, testConfig, testKeyPrefix } from '../helper.js';

/** Every handle of this file writes under one prefix, removed after the file. */
const keyPrefix = testKeyPrefix('cache');
after(() => deleteKeys(redisUrl, keyPrefix));

function redisHandle(url: string): RedisHandle {
  const config = testConfig({ REDIS_URL: url, REDIS_KEY_PREFIX: keyPrefix });
  return createRedis(config.redis, url, captureLogs().logger, { failureThreshold: 1, openMs: 200 });
}

/** A local tier in front of the handle's Redis (decision 0104), serving once tracking is on. */
async function tierFor(redis: RedisHandle, leaseMs?: number): Promise<LocalTier> {
  const tier = createLocalTier({
    client: redis.client,
    logger: captureLogs().logger,
    maxEntries: 1000,
    ...(leaseMs === undefined ? {} : { leaseMs }),
  });
  await waitUntil(() => tier.serving(), { what: 'cache tracking established', intervalMs: 10 });
  return tier;
}

/** The Redis backend with or without its local tier: every Redis test runs on both. */
const tiers = [
  { label: 'redis', local: false },
  { label: 'redis + local tier', local: true },
] as const;

async function untilReady(redis: RedisHandle): Promise<void> {
  for (let i = 0; i < 200 && !redis.available(); i++) await sleep(25);
  assert.ok(redis.available(), 'Redis is reachable');
}

interface Measured {
  readonly cache: Cache;
  readonly registry: Registry;
}

function measured(backend: CacheBackend): Measured {
  const registry = new Registry();
  const cache = createCache(backend, {
    metrics: createCacheMetrics(registry, backend.kind),
    logger: captureLogs().logger,
  });
  return { cache, registry };
}

/** The value of a counter for the labels given (0 when it has no such series). */
async function counterValue(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric !== undefined, `no metric ${name}`);
  const { values } = await metric.get();
  const found = values.find((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want));
  return found?.value ?? 0;
}

let sequence = 0;
function entry(overrides: Partial<CacheEntry> = {}): CacheEntry {
  sequence += 1;
  return { cache: 'test', scope: `scope-${sequence}`, key: `key-${sequence}`, ttlMs: 60_000, ...overrides };
}

/** A load the test finishes when it chooses, counting its calls. */
function gatedLoad<T>(value: T) {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const calls = { count: 0 };
  const load = async () => {
    calls.count += 1;
    await gate;
    return value;
  };
  return { load, release, calls };
}

/** One suite, both backends (DESIGN habit 7). */
function cacheSuite(
  name: string,
  skip: string | false,
  make: () => Promise<{ backend: CacheBackend; close(): Promise<void> }>,
) {
  describe(`cache: ${name}`, { skip }, () => {
    let backend: CacheBackend;
    let close: () => Promise<void>;
    let cache: Cache;
    let registry: Registry;
    before(async () => {
      ({ backend, close } = await make());
      ({ cache, registry } = measured(backend));
    });
    after(() => close?.());

    test('a miss loads and stores; the next read is a hit and does not load', async () => {
      const e = entry();
      let loads = 0;
      const load = async () => {
        loads += 1;
        return { name: 'widget', price: '19.99' };
      };
      assert.deepEqual(await cache.aside(e, load), { name: 'widget', price: '19.99' });
      assert.deepEqual(await cache.aside(e, load), { name: 'widget', price: '19.99' });
      assert.equal(loads, 1);
      assert.equal((await counterValue(registry, 'cache_requests_total', { result: 'miss' })) >= 1, true);
      assert.equal((await counterValue(registry, 'cache_requests_total', { result: 'hit' })) >= 1, true);
    });

    test('a load that calls uncacheable() is answered, never stored: the next read loads again', async () => {
      const e = entry();
      let loads = 0;
      const stale = async (_floor: unknown, uncacheable: () => void) => {
        loads += 1;
        uncacheable();
        return `older ${loads}`;
      };
      assert.equal(await cache.aside(e, stale), 'older 1');
      assert.equal(await cache.aside(e, stale), 'older 2');
      assert.equal(await cache.aside(e, async () => 'fresh'), 'fresh');
      assert.equal(await cache.aside(e, stale), 'fresh', 'a load that did not call it is stored');
      assert.equal(loads, 2);
    });

    test('falsy and empty values are cached hits, not misses (guide correction 11)', async () => {
      for (const value of [0, '', false, null, [], {}]) {
        const e = entry();
        let loads = 0;
        const load = async () => {
          loads += 1;
          return value;
        };
        assert.deepEqual(await cache.aside(e, load), value);
        assert.deepEqual(await cache.aside(e, load), value);
        assert.deepEqual(await cache.aside(e, load), value);
        assert.equal(loads, 1, `${JSON.stringify(value)} was loaded again`);
      }
    });

    test('an entry expires after its TTL', async () => {
      // Long enough that the second read is surely inside it on a loaded machine.
      const e = entry({ ttlMs: 500 });
      let loads = 0;
      const load = async () => ++loads;
      assert.equal(await cache.aside(e, load), 1);
      assert.equal(await cache.aside(e, load), 1);
      await sleep(600);
      assert.equal(await cache.aside(e, load), 2);
    });

    test('invalidating a scope turns its entries into misses; other scopes keep theirs', async () => {
      const shared = `list-${sequence}`;
      const a = entry({ scope: shared });
      const b = entry({ scope: shared });
      const other = entry();
      let version = 1;
      const load = async () => version;
      await cache.aside(a, load);
      await cache.aside(b, load);
      await cache.aside(other, load);
      version = 2;
      await cache.invalidate({ scopes: [shared] });
      assert.equal(await cache.aside(a, load), 2);
      assert.equal(await cache.aside(b, load), 2);
      assert.equal(await cache.aside(other, load), 1, 'another scope is untouched');
    });

    test('invalidating with keys deletes those entries too', async () => {
      const e = entry();
      let version = 1;
      await cache.aside(e, async () => version);
      version = 2;
      await cache.invalidate({ scopes: [e.scope], keys: [e.key] });
      assert.equal(await cache.aside(e, async () => version), 2);
    });

    test('concurrent misses on one key share one load, and the metrics say so (guide correction 13)', async () => {
      const e = entry({ cache: `stampede-${name}` });
      const { load, release, calls } = gatedLoad('hot value');
      const pending = Array.from({ length: 100 }, () => cache.aside(e, load));
      // Release the load only once every caller has seen its miss (and so joined the flight): on a
      // slow machine some lookups are still on their way to Redis after any fixed pause.
      await waitUntil(
        async () =>
          (await counterValue(registry, 'cache_requests_total', { cache: e.cache, result: 'miss' })) === 100,
        { what: '100 misses seen' },
      );
      release();
      const results = await Promise.all(pending);
      assert.ok(results.every((r) => r === 'hot value'));
      assert.equal(calls.count, 1, 'one load for 100 concurrent misses');
      assert.equal(await counterValue(registry, 'cache_loads_total', { cache: e.cache }), 1);
      assert.equal(
        await counterValue(registry, 'cache_requests_total', { cache: e.cache, result: 'miss' }),
        100,
      );
      assert.equal(await cache.aside(e, load), 'hot value');
      assert.equal(calls.count, 1);
    });

    test('distinct keys do not share a load', async () => {
      const scope = `s-${sequence}`;
      const [a, b] = [entry({ scope }), entry({ scope })];
      assert.deepEqual(
        await Promise.all([cache.aside(a, async () => 'a'), cache.aside(b, async () => 'b')]),
        ['a', 'b'],
      );
    });

    test('a failing load is not cached; every caller sharing it gets the error', async () => {
      const e = entry({ cache: `failing-${sequence}` });
      let calls = 0;
      const bothMissed = waitUntil(
        async () =>
          (await counterValue(registry, 'cache_requests_total', { cache: e.cache, result: 'miss' })) >= 2,
        { what: 'both callers missed' },
      );
      const failing = async () => {
        calls += 1;
        await bothMissed; // the second caller has joined this load before it fails
        throw new Error('database down');
      };
      const results = await Promise.allSettled([cache.aside(e, failing), cache.aside(e, failing)]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['rejected', 'rejected'],
      );
      assert.equal(calls, 1);
      assert.equal(await cache.aside(e, async () => 'recovered'), 'recovered');
    });

    test('a load that raced with a write is never served after it', async () => {
      const e = entry();
      // The load reads the old data, the write commits and invalidates, then the load stores.
      const stale = gatedLoad('old');
      const first = cache.aside(e, stale.load);
      await waitUntil(() => stale.calls.count === 1, { what: 'the first load started' });
      await cache.invalidate({ scopes: [e.scope], keys: [e.key] });
      stale.release();
      assert.equal(await first, 'old', 'the caller that started before the write may see the old value');
      assert.equal(await cache.aside(e, async () => 'new'), 'new');
      assert.equal(await cache.aside(e, async () => 'newer'), 'new', 'and the new value is cached');
    });

    test('a caller after a write does not join a load that started before it', async () => {
      const e = entry();
      const stale = gatedLoad('old');
      const first = cache.aside(e, stale.load);
      await waitUntil(() => stale.calls.count === 1, { what: 'the first load started' });
      await cache.invalidate({ scopes: [e.scope] });
      const second = cache.aside(e, async () => 'new');
      assert.equal(await second, 'new');
      stale.release();
      assert.equal(await first, 'old');
    });

    test('status is up', async () => {
      assert.equal(await cache.status(), 'up');
    });
  });
}

cacheSuite('memory', false, async () => ({ backend: createMemoryCacheBackend(1000), close: async () => {} }));
for (const { label, local } of tiers) {
  cacheSuite(label, await skipUnless('redis'), async () => {
    const redis = redisHandle(redisUrl);
    await untilReady(redis);
    const backend = createRedisCacheBackend(redis, local ? await tierFor(redis) : undefined);
    return {
      backend,
      close: async () => {
        await backend.close?.();
        await redis.close();
      },
    };
  });
}

describe('cache: memory bound', () => {
  test('the in-process cache keeps at most its configured entries, least recently used going first', async () => {
    const { cache } = measured(createMemoryCacheBackend(100));
    const scope = 'bounded';
    for (let i = 0; i < 150; i++) await cache.aside(entry({ scope, key: `k${i}` }), async () => i);
    await new Promise(setImmediate); // finished loads are shared until the next turn of the event loop
    let loads = 0;
    assert.equal(
      await cache.aside(entry({ scope, key: 'k0' }), async () => {
        loads += 1;
        return -1;
      }),
      -1,
    );
    assert.equal(loads, 1, 'the oldest entry was evicted');
    assert.equal(
      await cache.aside(entry({ scope, key: 'k149' }), async () => -1),
      149,
      'the newest is still there',
    );
  });
});

for (const { label, local } of tiers)
  describe(`cache: ${label} shared by two processes`, { skip: await skipUnless('redis') }, () => {
    test('an invalidation through one instance is seen by the other at once', async () => {
      const prefix = testKeyPrefix('cache-shared');
      const config = testConfig({ REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix });
      const redisA = createRedis(config.redis, redisUrl, captureLogs().logger);
      const redisB = createRedis(config.redis, redisUrl, captureLogs().logger);
      const closers: CacheBackend[] = [];
      try {
        await untilReady(redisA);
        await untilReady(redisB);
        const backendA = createRedisCacheBackend(redisA, local ? await tierFor(redisA) : undefined);
        const backendB = createRedisCacheBackend(redisB, local ? await tierFor(redisB) : undefined);
        closers.push(backendA, backendB);
        const a = measured(backendA).cache;
        const b = measured(backendB).cache;
        const e = entry();
        assert.equal(await a.aside(e, async () => 'v1'), 'v1');
        assert.equal(await b.aside(e, async () => 'unused'), 'v1', 'B is served what A stored');
        // Twice more: with a local tier the second read copies the entry into B, the third is local.
        assert.equal(await b.aside(e, async () => 'unused'), 'v1');
        assert.equal(await b.aside(e, async () => 'unused'), 'v1');
        await a.invalidate({ scopes: [e.scope], keys: [e.key] });
        assert.equal(await b.aside(e, async () => 'v2'), 'v2');
        assert.equal(await a.aside(e, async () => 'unused'), 'v2');
        // A list scope: many keys, one invalidation.
        const scope = `list-${sequence}`;
        const pages = [entry({ scope }), entry({ scope })];
        for (const page of pages) {
          await a.aside(page, async () => 'page v1');
          for (let i = 0; i < 3; i++) assert.equal(await b.aside(page, async () => 'unused'), 'page v1');
        }
        await b.invalidate({ scopes: [scope] });
        for (const page of pages) assert.equal(await a.aside(page, async () => 'page v2'), 'page v2');
      } finally {
        for (const backend of closers) await backend.close?.();
        await redisA.close();
        await redisB.close();
        await deleteKeys(redisUrl, prefix);
      }
    });
  });

for (const { label, local } of tiers)
  describe(`cache: ${label}, Redis outages (guide correction 14)`, {
    skip: await skipUnless('redis'),
  }, () => {
    let server: ThrowawayRedis;
    let redis: RedisHandle;
    let backend: CacheBackend;
    let cache: Cache;
    let registry: Registry;
    before(async () => {
      server = await startThrowawayRedis();
      redis = redisHandle(server.url);
      await untilReady(redis);
      backend = createRedisCacheBackend(redis, local ? await tierFor(redis) : undefined);
      ({ cache, registry } = measured(backend));
    });
    after(async () => {
      await backend?.close?.();
      await redis?.close();
      await server?.destroy();
    });

    test('invalidation never enumerates keys: no KEYS and no SCAN reach Redis (guide correction 12)', async () => {
      const admin = new Redis(server.url);
      try {
        await admin.config('RESETSTAT');
        const scope = `many-${sequence}`;
        for (let i = 0; i < 200; i++) await cache.aside(entry({ scope }), async () => i);
        await cache.invalidate({ scopes: [scope] });
        const stats = await admin.info('commandstats');
        assert.match(stats, /cmdstat_set:/, 'the cache did talk to this server');
        assert.doesNotMatch(stats, /cmdstat_(keys|scan):/);
      } finally {
        admin.disconnect();
      }
    });

    test('Redis stopped: every read is served by its load, quickly, errors counted; back: cached again', async () => {
      const e = entry();
      assert.equal(await cache.aside(e, async () => 'cached'), 'cached');
      await server.stop();
      const started = Date.now();
      for (let i = 0; i < 20; i++)
        assert.equal(await cache.aside(e, async () => `direct ${i}`), `direct ${i}`);
      assert.ok(Date.now() - started < 1000, `20 reads took ${Date.now() - started} ms`);
      assert.ok((await counterValue(registry, 'cache_requests_total', { result: 'error' })) >= 20);
      assert.equal(await cache.status(), 'degraded');
      await cache.invalidate({ scopes: ['anything'] });
      assert.ok((await counterValue(registry, 'cache_errors_total', { operation: 'invalidate' })) >= 1);

      await server.start();
      await untilReady(redis);
      await sleep(250); // the breaker's half-open probe
      for (let i = 0; i < 20 && (await cache.status()) !== 'up'; i++) await sleep(100);
      assert.equal(await cache.status(), 'up');
      let loads = 0;
      const load = async () => {
        loads += 1;
        return 'fresh';
      };
      assert.equal(await cache.aside(e, load), 'fresh');
      assert.equal(await cache.aside(e, load), 'fresh');
      assert.equal(loads, 1, 'cached again once Redis is back');
    });

    test('a paused (hung) Redis costs at most the command timeout, then nothing while the breaker is open', async () => {
      const e = entry();
      await cache.aside(e, async () => 'before');
      server.pause();
      try {
        const first = Date.now();
        assert.equal(await cache.aside(e, async () => 'from the database'), 'from the database');
        const firstMs = Date.now() - first;
        // Bounds that tell a breaker from none on a loaded machine: without one, every read would wait
        // the 250 ms command timeout (10 reads ≥ 2.5 s); with it, at most a half-open probe does.
        assert.ok(firstMs < 250 + 1500, `the first read took ${firstMs} ms`);
        const next = Date.now();
        for (let i = 0; i < 10; i++) await cache.aside(e, async () => 'from the database');
        const openMs = Date.now() - next;
        assert.ok(openMs < (10 * 250) / 2, `reads with the breaker open took ${openMs} ms`);
      } finally {
        server.resume();
      }
    });

    test('an invalidation that never reached Redis is not forgotten: the stale entry is never served', async () => {
      await untilReady(redis);
      await sleep(250);
      const e = entry();
      for (let i = 0; i < 20 && (await cache.status()) !== 'up'; i++) await sleep(100);
      assert.equal(await cache.aside(e, async () => 'old'), 'old');
      assert.equal(await cache.aside(e, async () => 'not cached?'), 'old');
      // SIGSTOP keeps the data. One read times out and opens the breaker, so the invalidation that
      // follows is refused without being sent: the old entry survives the outage, still stamped valid.
      server.pause();
      try {
        assert.equal(await cache.aside(entry(), async () => 'direct'), 'direct');
        assert.equal(redis.breakerState(), 'open');
        await cache.invalidate({ scopes: [e.scope], keys: [e.key] });
      } finally {
        server.resume();
      }
      await untilReady(redis);
      await sleep(250);
      for (let i = 0; i < 20 && (await cache.status()) !== 'up'; i++) await sleep(100);
      assert.equal(
        await cache.aside(e, async () => 'new'),
        'new',
        'the entry from before the lost invalidation is not served',
      );
      assert.equal(await cache.aside(e, async () => 'newer'), 'new', 'and caching works again');
    });
  });

describe('cache: local tier failure modes (decision 0104)', { skip: await skipUnless('redis') }, () => {
  let server: ThrowawayRedis;
  let admin: Redis;
  let redisA: RedisHandle;
  let redisB: RedisHandle;
  let tierA: LocalTier;
  let backendA: CacheBackend;
  let backendB: CacheBackend;
  let a: Cache;
  let b: Cache;
  before(async () => {
    server = await startThrowawayRedis();
    admin = new Redis(server.url);
    redisA = redisHandle(server.url);
    redisB = redisHandle(server.url);
    await untilReady(redisA);
    await untilReady(redisB);
    // A short lease, so the hung-Redis test waits a fraction of a second, not the default second.
    tierA = await tierFor(redisA, 400);
    backendA = createRedisCacheBackend(redisA, tierA);
    backendB = createRedisCacheBackend(redisB, await tierFor(redisB));
    a = measured(backendA).cache;
    b = measured(backendB).cache;
  });
  after(async () => {
    await backendA?.close?.();
    await backendB?.close?.();
    await redisA?.close();
    await redisB?.close();
    admin?.disconnect();
    await server?.destroy();
  });

  /** Stores `value` through B and reads it through A until A holds a local copy. */
  async function copiedIntoA(e: CacheEntry, value: string): Promise<void> {
    await b.invalidate({ scopes: [e.scope], keys: [e.key] });
    assert.equal(await b.aside(e, async () => value), value);
    await waitUntil(
      async () => {
        assert.equal(await a.aside(e, async () => 'unexpected load'), value);
        return tierA.get(e.scope, e.key) !== undefined;
      },
      { what: 'a local copy in A', intervalMs: 10 },
    );
  }

  /** A write through B is seen by A at once (coherence), and A keeps serving it locally after. */
  async function coherent(e: CacheEntry, value: string): Promise<void> {
    await b.invalidate({ scopes: [e.scope], keys: [e.key] });
    assert.equal(await a.aside(e, async () => value), value, 'A sees B’s write');
    await copiedIntoA(e, `${value}+`);
  }

  test('hits are answered locally: no Redis command per hit', async () => {
    const e = entry();
    await copiedIntoA(e, 'v1');
    await admin.config('RESETSTAT');
    for (let i = 0; i < 50; i++) assert.equal(await a.aside(e, async () => 'unexpected load'), 'v1');
    const stats = await admin.info('commandstats');
    assert.doesNotMatch(stats, /cmdstat_(evalsha|eval|get):/, 'no lookup reached Redis');
  });

  test('an invalidation that overtakes an in-flight lookup is not undone by its fill', async () => {
    const e = entry();
    await copiedIntoA(e, 'old');
    // Directly: a ticket taken before the invalidation arrives cannot fill after it.
    const ticket = tierA.ticket(e.scope, e.key);
    assert.ok(ticket !== undefined);
    await b.invalidate({ scopes: [e.scope], keys: [e.key] });
    await tierA.settle();
    tierA.fill(ticket, e.scope, e.key, 'old', 60_000);
    assert.equal(tierA.get(e.scope, e.key), undefined, 'the late fill was dropped');
    // End to end, both orders of the lookup's reply and the invalidation message, many times.
    for (let i = 0; i < 30; i++) {
      const f = entry({ scope: e.scope });
      await copiedIntoA(f, `v${i}`);
      tierA.invalidate([], [f.key]); // A's copy goes: the next read is a Redis lookup
      const reading = a.aside(f, async () => 'unexpected load');
      const writing = b.invalidate({ scopes: [f.scope], keys: [f.key] });
      await Promise.all([reading, writing]);
      await tierA.settle();
      assert.equal(await a.aside(f, async () => `after ${i}`), `after ${i}`, `round ${i}`);
    }
  });

  test('the tracking connection killed (CLIENT KILL): flushed and bypassed, then tracking again, coherent', async () => {
    const e = entry();
    await copiedIntoA(e, 'v1');
    const id = tierA.trackingId();
    assert.ok(id !== undefined);
    assert.equal(await admin.client('KILL', 'ID', String(id)), 1);
    await waitUntil(() => !tierA.serving(), {
      what: 'A notices the lost tracking connection',
      intervalMs: 5,
    });
    assert.equal(tierA.size(), 0, 'flushed');
    // A write while A has no tracking: A must not serve its old copy.
    await b.invalidate({ scopes: [e.scope], keys: [e.key] });
    assert.equal(await a.aside(e, async () => 'v2'), 'v2');
    await waitUntil(() => tierA.serving(), { what: 'tracking re-established', intervalMs: 10 });
    assert.notEqual(tierA.trackingId(), id, 'on a new connection');
    await coherent(e, 'v3');
  });

  test('a hung Redis (SIGSTOP): no local copy is served past the lease; serving again after', async () => {
    const e = entry();
    await copiedIntoA(e, 'v1');
    server.pause();
    try {
      await waitUntil(() => !tierA.serving(), {
        what: 'the lease runs out',
        intervalMs: 10,
        timeoutMs: 10_000,
      });
      assert.equal(await a.aside(e, async () => 'from the database'), 'from the database');
    } finally {
      server.resume();
    }
    await waitUntil(() => tierA.serving() && redisA.available() && redisB.available(), {
      what: 'serving again',
      intervalMs: 20,
    });
    await waitUntil(async () => (await a.status()) === 'up' && (await b.status()) === 'up', {
      what: 'caches up',
    });
    await coherent(e, 'v2');
  });

  test('Redis restarted: flushed, bypassed while it is down (reads from the source), serving again after', async () => {
    const e = entry();
    await copiedIntoA(e, 'v1');
    await server.stop();
    await waitUntil(() => !tierA.serving(), { what: 'A notices Redis is gone', intervalMs: 5 });
    assert.equal(await a.aside(e, async () => 'direct'), 'direct', 'the old copy is not served');
    await server.start();
    await waitUntil(() => tierA.serving() && redisA.available() && redisB.available(), {
      what: 'tracking on the restarted Redis',
      intervalMs: 20,
    });
    await waitUntil(async () => (await a.status()) === 'up' && (await b.status()) === 'up', {
      what: 'caches up',
    });
    assert.equal(await a.aside(e, async () => 'fresh'), 'fresh', 'the restarted Redis is empty');
    await coherent(e, 'v2');
  });

  test('FLUSHALL empties the local tier', async () => {
    const e = entry();
    await copiedIntoA(e, 'v1');
    await admin.flushall();
    await tierA.settle();
    assert.equal(tierA.size(), 0);
    assert.equal(await a.aside(e, async () => 'reloaded'), 'reloaded');
  });
});
