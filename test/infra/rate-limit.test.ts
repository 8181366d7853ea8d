import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import {
  type CounterStore,
  createMemoryCounterStore,
  createRedisCounterStore,
} from '../../src/infra/rate-limit/counter-store.js';
import { clientKey } from '../../src/infra/rate-limit/rate-limit.js';
import { createRedis, type RedisHandle } from '../../src/infra/redis.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../harness/redis.js';
import { redisUrl, skipUnless } from '../harness/services.js';
import { buildTestApp, captureLogs, deleteKeys, testConfig, testKeyPrefix } from '../helper.js';

/** Every handle of this file writes under one prefix, removed after the file. */
const keyPrefix = testKeyPrefix('ratelimit');
after(() => deleteKeys(redisUrl, keyPrefix));

function redisHandle(url: string): RedisHandle {
  const config = testConfig({ REDIS_URL: url, REDIS_KEY_PREFIX: keyPrefix });
  return createRedis(config.redis, url, captureLogs().logger, { failureThreshold: 1, openMs: 200 });
}

async function untilReady(redis: RedisHandle): Promise<void> {
  for (let i = 0; i < 100 && redis.client.status !== 'ready'; i++) await sleep(20);
}

/** One suite, both implementations (DESIGN habit 7). */
function counterStoreSuite(
  name: string,
  skip: string | false,
  make: () => Promise<{ store: CounterStore; close(): Promise<void> }>,
) {
  describe(`counter store: ${name}`, { skip }, () => {
    let store: CounterStore;
    let close: () => Promise<void>;
    before(async () => {
      ({ store, close } = await make());
    });
    after(() => close?.());

    test('counts hits in a window and reports time to reset', async () => {
      const a = await store.increment('a', 10_000);
      const b = await store.increment('a', 10_000);
      assert.equal(a.count, 1);
      assert.equal(b.count, 2);
      assert.ok(b.resetInMs > 9000 && b.resetInMs <= 10_000, String(b.resetInMs));
      assert.equal((await store.increment('other', 10_000)).count, 1);
    });

    test('a new window starts from zero', async () => {
      await store.increment('short', 150);
      await store.increment('short', 150);
      await sleep(200);
      assert.equal((await store.increment('short', 150)).count, 1);
    });

    test('peek does not count; reset clears', async () => {
      assert.deepEqual(await store.peek('fresh'), { count: 0, resetInMs: 0 });
      await store.increment('p', 10_000);
      assert.equal((await store.peek('p')).count, 1);
      assert.equal((await store.peek('p')).count, 1);
      await store.reset('p');
      assert.equal((await store.peek('p')).count, 0);
    });

    test('concurrent hits are all counted', async () => {
      const results = await Promise.all(Array.from({ length: 50 }, () => store.increment('burst', 10_000)));
      assert.deepEqual(
        results.map((r) => r.count).sort((x, y) => x - y),
        Array.from({ length: 50 }, (_, i) => i + 1),
      );
    });
  });
}

counterStoreSuite('memory', false, async () => ({
  store: createMemoryCounterStore(),
  close: async () => {},
}));
counterStoreSuite('redis', await skipUnless('redis'), async () => {
  const redis = redisHandle(redisUrl);
  await untilReady(redis);
  return { store: createRedisCounterStore(redis), close: () => redis.close() };
});

describe('counter store: Redis outage', { skip: await skipUnless('redis') }, () => {
  let server: ThrowawayRedis;
  before(async () => {
    server = await startThrowawayRedis();
  });
  after(() => server?.destroy());

  test('falls back to in-process counting while Redis is down, then returns to Redis', async () => {
    const redis = redisHandle(server.url);
    await untilReady(redis);
    let fallbacks = 0;
    const store = createRedisCounterStore(redis, createMemoryCounterStore(), {
      onFallback: () => fallbacks++,
    });
    try {
      assert.equal((await store.increment('k', 60_000)).count, 1);
      await server.stop();
      const started = Date.now();
      assert.equal((await store.increment('k', 60_000)).count, 1, 'counted in memory');
      assert.equal((await store.increment('k', 60_000)).count, 2);
      assert.ok(Date.now() - started < 1000, 'no long waits while Redis is down');
      assert.ok(fallbacks >= 2);
      await server.start();
      for (let i = 0; i < 100 && !redis.available(); i++) await sleep(50);
      assert.ok(redis.available(), 'Redis is used again once it is back');
      await sleep(250);
      assert.equal((await store.increment('fresh-key', 60_000)).count, 1);
      assert.equal((await store.increment('fresh-key', 60_000)).count, 2);
    } finally {
      await redis.close();
    }
  });
});

describe('client key', () => {
  test('IPv4 as is; IPv4-mapped IPv6 as IPv4; IPv6 by /64', () => {
    assert.equal(clientKey('203.0.113.7'), '203.0.113.7');
    assert.equal(clientKey('::ffff:203.0.113.7'), '203.0.113.7');
    assert.equal(clientKey('2001:db8:0:1:aaaa:bbbb:cccc:dddd'), '2001:db8:0:1::/64');
    assert.equal(clientKey('2001:db8:0:1::5'), '2001:db8:0:1::/64');
    assert.equal(clientKey('2001:0DB8::1'), '2001:db8:0:0::/64');
    assert.equal(clientKey('::1'), '0:0:0:0::/64');
  });
});

function apiRoute(api: FastifyInstance): void {
  api.get('/limited', async () => ({ ok: true }));
}

describe('rate limiting over HTTP', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildTestApp({
      extendApi: apiRoute,
      env: { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' },
    });
  });
  after(() => app?.close());

  test('the limit+1th request → 429 with Retry-After and RateLimit headers', async () => {
    const headers = { 'x-forwarded-for': '198.51.100.1' };
    for (let i = 1; i <= 3; i++) {
      const res = await app.inject({ url: '/api/limited', remoteAddress: '192.0.2.10', headers });
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['ratelimit-limit'], '3');
      assert.equal(res.headers['ratelimit-remaining'], String(3 - i));
      assert.ok(Number(res.headers['ratelimit-reset']) > 0);
    }
    const limited = await app.inject({ url: '/api/limited', remoteAddress: '192.0.2.10', headers });
    assert.equal(limited.statusCode, 429);
    assert.equal(limited.json().code, 'RATE_LIMITED');
    assert.ok(Number(limited.headers['retry-after']) > 0);
    assert.equal(limited.headers['ratelimit-remaining'], '0');
    assert.equal(limited.headers['x-content-type-options'], 'nosniff');
  });

  test('X-Forwarded-For from an untrusted peer cannot buy a fresh budget', async () => {
    for (let i = 0; i < 3; i++) await app.inject({ url: '/api/limited', remoteAddress: '192.0.2.20' });
    const spoofed = await app.inject({
      url: '/api/limited',
      remoteAddress: '192.0.2.20',
      headers: { 'x-forwarded-for': `203.0.113.${Math.floor(Math.random() * 250)}` },
    });
    assert.equal(spoofed.statusCode, 429);
  });

  test('health, readiness and metrics are never limited', async () => {
    for (let i = 0; i < 6; i++) {
      assert.equal((await app.inject({ url: '/health', remoteAddress: '192.0.2.10' })).statusCode, 200);
    }
  });

  test('behind a trusted proxy, each forwarded client has its own budget', async () => {
    const proxied = await buildTestApp({
      extendApi: apiRoute,
      env: { RATE_LIMIT_MAX: '2', TRUST_PROXY: '10.0.0.0/8' },
    });
    try {
      const via = (client: string) =>
        proxied.inject({
          url: '/api/limited',
          remoteAddress: '10.1.2.3',
          headers: { 'x-forwarded-for': client },
        });
      assert.equal((await via('203.0.113.1')).statusCode, 200);
      assert.equal((await via('203.0.113.1')).statusCode, 200);
      assert.equal((await via('203.0.113.1')).statusCode, 429);
      assert.equal((await via('203.0.113.2')).statusCode, 200);
    } finally {
      await proxied.close();
    }
  });
});

describe('rate limits shared through Redis (guide correction 5)', { skip: await skipUnless('redis') }, () => {
  test('two app instances share one budget', async () => {
    const env = { RATE_LIMIT_MAX: '3', REDIS_KEY_PREFIX: testKeyPrefix('shared') };
    const a = await buildTestApp({ redis: true, extendApi: apiRoute, env });
    const b = await buildTestApp({ redis: true, extendApi: apiRoute, env });
    try {
      const hit = (app: FastifyInstance) => app.inject({ url: '/api/limited', remoteAddress: '192.0.2.99' });
      assert.equal((await hit(a)).statusCode, 200);
      assert.equal((await hit(b)).statusCode, 200);
      assert.equal((await hit(a)).statusCode, 200);
      const fourth = await hit(b);
      assert.equal(
        fourth.statusCode,
        429,
        'the fourth request, on the other instance, is over the shared limit',
      );
    } finally {
      await a.close();
      await b.close();
    }
  });
});
