import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { startThrowawayRedis, type ThrowawayRedis } from '../harness/redis.js';
import { skipUnless } from '../harness/services.js';
import { appMetric, buildTestApp, buildTwoInstances, cacheCounts, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import { createProduct, uniqueSku } from './support.js';

const backends = ['memory', 'redis'] as const;

for (const engine of engines) {
  for (const backend of backends) {
    const skip = await skipEngine(engine, ...(backend === 'redis' ? (['redis'] as const) : []));
    describe(`product cache on ${engine} with the ${backend} cache`, { skip }, () => {
      let app: FastifyInstance;
      let admin: Account;
      let customer: Account;
      before(async () => {
        app = await buildTestApp({ engine, redis: backend === 'redis' });
        admin = await createAdmin(app);
        customer = await registerUser(app);
      });
      after(() => app?.close());

      const get = (id: string) => app.inject({ url: `/api/products/${id}` });

      test('a miss then hits: a warm read does not touch the database', async () => {
        assert.equal(app.cache.kind, backend);
        const product = await createProduct(app, admin, { name: 'Original' });
        const before = await cacheCounts(app, 'product');
        assert.equal((await get(product.id)).json().name, 'Original');
        // Changed behind the service's back: only a read from the database could see it.
        await app.database.db
          .updateTable('products')
          .set({ name: 'Changed directly in the database' })
          .where('id', '=', product.id)
          .execute();
        for (let i = 0; i < 3; i++) assert.equal((await get(product.id)).json().name, 'Original');
        const afterReads = await cacheCounts(app, 'product');
        assert.equal(afterReads.miss - before.miss, 1);
        assert.equal(afterReads.loads - before.loads, 1);
        assert.equal(afterReads.hit - before.hit, 3);
      });

      test('an update invalidates before answering: the next read sees it', async () => {
        const product = await createProduct(app, admin, { price: '1.00' });
        assert.equal((await get(product.id)).json().price, '1.00');
        const patched = await app.inject({
          method: 'PATCH',
          url: `/api/products/${product.id}`,
          headers: bearer(admin.accessToken),
          payload: { price: '2.00' },
        });
        assert.equal(patched.statusCode, 200);
        assert.equal((await get(product.id)).json().price, '2.00');
      });

      test('a stock change by an order (and its cancellation) invalidates the product and the list', async () => {
        const tag = uniqueSku('STOCK');
        const product = await createProduct(app, admin, { sku: tag, stock: 5 });
        const listed = async () =>
          (await app.inject({ url: `/api/products?q=${tag}` })).json().items[0]?.stock;
        assert.equal((await get(product.id)).json().stock, 5);
        assert.equal(await listed(), 5);
        const order = await app.inject({
          method: 'POST',
          url: '/api/orders',
          headers: bearer(customer.accessToken),
          payload: { items: [{ productId: product.id, quantity: 2 }] },
        });
        assert.equal(order.statusCode, 201, order.body);
        assert.equal((await get(product.id)).json().stock, 3);
        assert.equal(await listed(), 3);
        const cancelled = await app.inject({
          method: 'POST',
          url: `/api/orders/${order.json().id}/cancel`,
          headers: bearer(customer.accessToken),
        });
        assert.equal(cancelled.statusCode, 200);
        assert.equal((await get(product.id)).json().stock, 5);
        assert.equal(await listed(), 5);
      });

      test('list pages are cached, and a new product shows up at once', async () => {
        const tag = uniqueSku('LIST');
        await createProduct(app, admin, { sku: `${tag}-1` });
        const page = () => app.inject({ url: `/api/products?q=${tag}&limit=10` });
        const before = await cacheCounts(app, 'product_list');
        assert.equal((await page()).json().items.length, 1);
        assert.equal((await page()).json().items.length, 1);
        const warm = await cacheCounts(app, 'product_list');
        assert.equal(warm.hit - before.hit, 1);
        assert.equal(warm.loads - before.loads, 1);
        await createProduct(app, admin, { sku: `${tag}-2` });
        assert.equal((await page()).json().items.length, 2);
        const etag = (await page()).headers.etag;
        const revalidated = await app.inject({
          url: `/api/products?q=${tag}&limit=10`,
          headers: { 'if-none-match': String(etag) },
        });
        assert.equal(revalidated.statusCode, 304);
      });

      test('"no such product" is cached too (a falsy value is a hit), and archival invalidates', async () => {
        const product = await createProduct(app, admin);
        assert.equal((await get(product.id)).statusCode, 200);
        const archived = await app.inject({
          method: 'DELETE',
          url: `/api/products/${product.id}`,
          headers: bearer(admin.accessToken),
        });
        assert.equal(archived.statusCode, 204);
        const before = await cacheCounts(app, 'product');
        assert.equal((await get(product.id)).statusCode, 404);
        assert.equal((await get(product.id)).statusCode, 404);
        assert.equal((await get(product.id)).statusCode, 404);
        const afterReads = await cacheCounts(app, 'product');
        assert.equal(afterReads.loads - before.loads, 1, 'one database read for three 404s');
        assert.equal(afterReads.hit - before.hit, 2);
      });

      test('a stampede: 50 concurrent reads of a cold product → one database query, counted', async () => {
        const product = await createProduct(app, admin);
        const before = await cacheCounts(app, 'product');
        const responses = await Promise.all(Array.from({ length: 50 }, () => get(product.id)));
        assert.ok(responses.every((r) => r.statusCode === 200));
        assert.equal(new Set(responses.map((r) => r.body)).size, 1);
        const afterReads = await cacheCounts(app, 'product');
        assert.equal(afterReads.loads - before.loads, 1, 'one load for 50 concurrent misses');
        assert.equal(afterReads.miss - before.miss + (afterReads.hit - before.hit), 50);
      });
    });
  }
}

describe('product cache shared by two instances through Redis', {
  skip: await skipEngine('postgres', 'redis'),
}, () => {
  let a: FastifyInstance;
  let b: FastifyInstance;
  let close: (() => Promise<void>) | undefined;
  before(async () => {
    ({ a, b, close } = await buildTwoInstances('shared'));
  });
  after(() => close?.());

  test('a write on one instance is seen by a read on the other at once (update, order, archive)', async () => {
    const admin = await createAdmin(a);
    const customer = await registerUser(a);
    const product = await createProduct(a, admin, { price: '5.00', stock: 4 });
    const onB = async () => b.inject({ url: `/api/products/${product.id}` });
    assert.equal((await onB()).json().price, '5.00');
    const served = await cacheCounts(b, 'product');
    assert.equal((await onB()).json().price, '5.00');
    assert.equal((await cacheCounts(b, 'product')).hit - served.hit, 1, 'B serves it from Redis');

    const patched = await a.inject({
      method: 'PATCH',
      url: `/api/products/${product.id}`,
      headers: bearer(admin.accessToken),
      payload: { price: '6.00' },
    });
    assert.equal(patched.statusCode, 200);
    assert.equal((await onB()).json().price, '6.00');

    const order = await a.inject({
      method: 'POST',
      url: '/api/orders',
      headers: bearer(customer.accessToken),
      payload: { items: [{ productId: product.id, quantity: 3 }] },
    });
    assert.equal(order.statusCode, 201);
    assert.equal((await onB()).json().stock, 1);

    await a.inject({
      method: 'DELETE',
      url: `/api/products/${product.id}`,
      headers: bearer(admin.accessToken),
    });
    assert.equal((await onB()).statusCode, 404);
  });
});

describe('product reads and orders while Redis fails (guide correction 14)', {
  skip: await skipUnless('redis'),
}, () => {
  let redis: ThrowawayRedis;
  let app: FastifyInstance;
  before(async () => {
    redis = await startThrowawayRedis();
    app = await buildTestApp({ redis: redis.url });
  });
  after(async () => {
    await app?.close();
    await redis?.destroy();
  });

  const ready = async () => (await app.inject({ url: '/ready' })).json();
  async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check()) return true;
      await sleep(100);
    }
    return false;
  }

  test('Redis stopped mid-test: requests keep succeeding, /ready degraded; restarted: recovered, cached again', async () => {
    const admin = await createAdmin(app);
    const customer = await registerUser(app);
    const product = await createProduct(app, admin, { stock: 10 });
    const get = () => app.inject({ url: `/api/products/${product.id}` });
    assert.equal((await get()).statusCode, 200);
    assert.equal((await ready()).checks.cache, 'up');

    await redis.stop();
    const errorsBefore = await appMetric(app, 'cache_requests_total', { cache: 'product', result: 'error' });
    const started = Date.now();
    for (let i = 0; i < 10; i++) assert.equal((await get()).statusCode, 200);
    const order = await app.inject({
      method: 'POST',
      url: '/api/orders',
      headers: bearer(customer.accessToken),
      payload: { items: [{ productId: product.id, quantity: 1 }] },
    });
    assert.equal(order.statusCode, 201, order.body);
    assert.equal((await get()).json().stock, 9, 'served from the database');
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    assert.ok(
      (await appMetric(app, 'cache_requests_total', { cache: 'product', result: 'error' })) > errorsBefore,
    );
    const degraded = await app.inject({ url: '/ready' });
    assert.equal(degraded.statusCode, 200);
    assert.deepEqual(degraded.json(), { status: 'ready', checks: { database: 'up', cache: 'degraded' } });

    await redis.start();
    assert.ok(await until(async () => (await ready()).checks.cache === 'up'), 'readiness recovers by itself');
    assert.ok(
      await until(async () => {
        const before = await appMetric(app, 'cache_requests_total', { cache: 'product', result: 'hit' });
        await get();
        await get();
        return (await appMetric(app, 'cache_requests_total', { cache: 'product', result: 'hit' })) > before;
      }),
      'reads are cached again',
    );
    assert.equal((await get()).json().stock, 9);
  });

  test('a paused (SIGSTOP) Redis makes no request slower than the short command timeout', async () => {
    const admin = await createAdmin(app);
    const product = await createProduct(app, admin);
    assert.equal((await app.inject({ url: `/api/products/${product.id}` })).statusCode, 200);
    redis.pause();
    try {
      const durations: number[] = [];
      for (let i = 0; i < 10; i++) {
        const started = Date.now();
        const res = await app.inject({ url: `/api/products/${product.id}` });
        durations.push(Date.now() - started);
        assert.equal(res.statusCode, 200);
      }
      // Each request makes at most a couple of Redis calls (rate limit, cache) before the breaker
      // opens; each gives up after REDIS_COMMAND_TIMEOUT_MS (250 ms). The bounds tell a timeout from
      // a hang, and an open breaker from none (a request that waits on Redis takes ≥ 250 ms), with
      // room for a loaded machine.
      assert.ok(Math.max(...durations) < 2 * 250 + 1000, `durations: ${durations.join(', ')} ms`);
      assert.ok(
        durations.slice(-5).every((ms) => ms < 250),
        `durations: ${durations.join(', ')} ms`,
      );
      assert.equal((await ready()).checks.cache, 'degraded');
    } finally {
      redis.resume();
    }
    assert.ok(await until(async () => (await ready()).checks.cache === 'up'));
  });
});
