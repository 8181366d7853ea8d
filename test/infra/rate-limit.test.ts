import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import {
  type CounterStore,
  createMemoryCounterStore,
  createRedisCounterStore,
} from '../../src/infra/rate-limit/counter-store.js';
import { clientKey } from '../../src/infra/rate-limit/rate-limit.js';
import { createRedis, type RedisHandle } from '../../src/infra/redis.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../harness/redis.js';
import { redisUrl, skipUnless } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, captureLogs, deleteKeys, testConfig, testKeyPrefix } from '../helper.js';

/** Every handle of this file writes under one prefix, removed after the file. */
const keyPrefix = testKeyPrefix('ratelimit');
after(() => deleteKeys(redisUrl, keyPrefix));

function redisHandle(url: string, under = ''): RedisHandle {
  const config = testConfig({ REDIS_URL: url, REDIS_KEY_PREFIX: `${keyPrefix}${under}` });
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
  /** Passed with every increment: with Redis, hits counted locally and sent in batches (0105). */
  allowance = 0,
) {
  describe(`counter store: ${name}`, { skip }, () => {
    let store: CounterStore;
    let close: () => Promise<void>;
    before(async () => {
      let made: CounterStore;
      ({ store: made, close } = await make());
      store = {
        kind: made.kind,
        increment: (key, windowMs) => made.increment(key, windowMs, allowance),
        peek: (key) => made.peek(key),
        reset: (key) => made.reset(key),
      };
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
for (const allowance of [0, 10]) {
  counterStoreSuite(
    allowance === 0 ? 'redis' : `redis, ${allowance} hits counted locally`,
    await skipUnless('redis'),
    async () => {
      // Keys of their own: the suites use the same key names.
      const redis = redisHandle(redisUrl, `allowance-${allowance}:`);
      await untilReady(redis);
      return { store: createRedisCounterStore(redis), close: () => redis.close() };
    },
    allowance,
  );
}

describe('counter store: hits counted locally, several instances, one Redis (decision 0105)', {
  skip: await skipUnless('redis'),
}, () => {
  const instances = 3;
  const allowance = 5;
  const max = 60;
  let handles: RedisHandle[] = [];
  before(async () => {
    handles = Array.from({ length: instances + 1 }, () => redisHandle(redisUrl));
    for (const handle of handles) await untilReady(handle);
  });
  after(async () => {
    for (const handle of handles) await handle.close();
  });

  test(`the shared budget is exceeded by at most instances × allowance (${instances} × ${allowance}), never undercut, no hit lost`, async () => {
    const stores = handles.slice(0, instances).map((handle) => createRedisCounterStore(handle));
    const exact = createRedisCounterStore(handles[instances] as RedisHandle);
    for (let trial = 0; trial < 5; trial++) {
      const key = `budget-${trial}-${Math.random()}`;
      const perInstance = 2 * max;
      let admitted = 0;
      let firstRejectedAfter: number | undefined;
      // Each instance answers its hits as fast as it can, interleaved with the others.
      await Promise.all(
        stores.map(async (store) => {
          for (let i = 0; i < perInstance; i++) {
            const { count } = await store.increment(key, 60_000, allowance);
            if (count <= max) admitted += 1;
            else firstRejectedAfter ??= admitted;
            if (i % 3 === 0) await new Promise(setImmediate);
          }
        }),
      );
      assert.ok(
        admitted <= max + instances * allowance,
        `trial ${trial}: ${admitted} admitted for a limit of ${max}`,
      );
      assert.ok(
        (firstRejectedAfter ?? admitted) >= max,
        `trial ${trial}: a hit was rejected after only ${firstRejectedAfter} were admitted`,
      );
      await waitUntil(async () => (await exact.peek(key)).count === instances * perInstance, {
        what: 'every hit counted in Redis',
        intervalMs: 20,
      });
    }
  });

  test('a hit counted on one instance is seen by the others within the sync interval', async () => {
    const [a, b] = handles.map((handle) => createRedisCounterStore(handle, undefined, { syncMs: 20 }));
    assert.ok(a !== undefined && b !== undefined);
    const key = `seen-${Math.random()}`;
    for (let i = 0; i < 3; i++) await a.increment(key, 60_000, 100);
    await waitUntil(async () => (await b.peek(key)).count === 3, { what: 'B sees A’s hits', intervalMs: 10 });
    assert.equal((await b.increment(key, 60_000, 100)).count, 1, 'B had not synced yet: its own view');
    await b.increment(key, 60_000, 0); // an exact hit: B now knows Redis's count
    await waitUntil(async () => (await a.peek(key)).count === 5, {
      what: 'A sees everything',
      intervalMs: 10,
    });
  });
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

describe('counter store: hits counted locally while Redis is down or paused', {
  skip: await skipUnless('redis'),
}, () => {
  let server: ThrowawayRedis;
  before(async () => {
    server = await startThrowawayRedis();
  });
  after(() => server?.destroy());

  test('counted here without waiting while Redis is down; sent once it is back', async () => {
    const redis = redisHandle(server.url);
    await untilReady(redis);
    const store = createRedisCounterStore(redis, createMemoryCounterStore(), { syncMs: 20 });
    try {
      assert.equal((await store.increment('k', 60_000, 3)).count, 1);
      await waitUntil(async () => (await store.peek('k')).count === 1, { what: 'the hit in Redis' });
      await server.stop();
      // Known to be down: batches are refused unsent, and sent later. (A batch that fails in flight
      // may have been counted, and is never sent twice: decision 0105.)
      await waitUntil(() => !redis.available(), { what: 'the handle sees Redis down', intervalMs: 10 });
      const started = Date.now();
      for (let i = 2; i <= 10; i++) assert.equal((await store.increment('k', 60_000, 3)).count, i);
      assert.ok(Date.now() - started < 1000, `10 hits took ${Date.now() - started} ms while Redis was down`);
      await server.start();
      await waitUntil(() => redis.available(), { what: 'Redis back' });
      // The restarted Redis is empty: what reaches it are the hits counted while it was down.
      assert.equal((await store.increment('k', 60_000, 3)).count >= 10, true);
      const admin = new Redis(server.url);
      try {
        await waitUntil(async () => Number(await admin.get(`${keyPrefix}counter:k`)) >= 10, {
          what: 'the hits counted during the outage reach Redis',
          intervalMs: 20,
        });
      } finally {
        admin.disconnect();
      }
    } finally {
      await redis.close();
    }
  });

  test('batches that time out open the breaker: hits stop waiting after a few command timeouts', async () => {
    // The shipped breaker (3 straight failures) and a short command timeout. A pipeline resolves
    // even when every command in it timed out, so a store that took that for a success kept the
    // breaker closed and made every hit over the allowance wait the whole timeout.
    const url = server.url;
    const config = testConfig({
      REDIS_URL: url,
      REDIS_KEY_PREFIX: keyPrefix,
      REDIS_COMMAND_TIMEOUT_MS: '200',
    });
    const redis = createRedis(config.redis, url, captureLogs().logger, {
      failureThreshold: 3,
      openMs: 60_000,
    });
    await untilReady(redis);
    const store = createRedisCounterStore(redis, createMemoryCounterStore(), { syncMs: 20 });
    server.pause();
    try {
      const durations: number[] = [];
      for (let i = 0; i < 12; i++) {
        const started = Date.now();
        await store.increment('paused', 60_000, 1);
        durations.push(Date.now() - started);
      }
      assert.equal(redis.available(), false, 'the breaker opened');
      const waited = durations.filter((ms) => ms >= 150).length;
      assert.ok(waited <= 4, `hits that sat out a timeout: ${waited} (durations ${durations.join(', ')} ms)`);
    } finally {
      server.resume();
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

  test('three app instances: /api within instances × allowance of the limit; the auth limit exact', async () => {
    // 200 a window, 2 % counted locally: an allowance of 4 hits per instance (decision 0105).
    const env = {
      RATE_LIMIT_MAX: '200',
      RATE_LIMIT_LOCAL_PERCENT: '2',
      AUTH_RATE_LIMIT_MAX: '4',
      REDIS_KEY_PREFIX: testKeyPrefix('shared3'),
    };
    const apps = await Promise.all(
      [0, 1, 2].map(() => buildTestApp({ redis: true, extendApi: apiRoute, env })),
    );
    try {
      const statuses = await Promise.all(
        Array.from({ length: 450 }, (_, i) =>
          (apps[i % 3] as FastifyInstance)
            .inject({ url: '/api/limited', remoteAddress: '192.0.2.77' })
            .then((r) => r.statusCode),
        ),
      );
      const ok = statuses.filter((status) => status === 200).length;
      assert.equal(ok + statuses.filter((status) => status === 429).length, 450);
      assert.ok(ok >= 200 && ok <= 200 + 3 * 4, `${ok} of 450 admitted for a shared limit of 200`);

      const logins = [];
      for (let i = 0; i < 9; i++) {
        const res = await (apps[i % 3] as FastifyInstance).inject({
          method: 'POST',
          url: '/api/auth/login',
          remoteAddress: '192.0.2.78',
          payload: { login: `nobody-${i}@example.com`, password: 'not a password' },
        });
        logins.push(res.statusCode);
      }
      assert.equal(logins.filter((status) => status !== 429).length, 4, `auth answers: ${logins.join(' ')}`);
    } finally {
      for (const app of apps) await app.close();
    }
  });
});
