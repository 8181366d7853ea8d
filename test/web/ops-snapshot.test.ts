import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';

// GET /api/ops/metrics: the operations page's data. Admins only; the figures come from the same
// registry Prometheus scrapes, so they move with the traffic.
for (const engine of engines) {
  describe(`operations snapshot on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let customer: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
      customer = await registerUser(app);
    });
    after(() => app?.close());

    test('anonymous → 401, a customer → 403 (someone else’s view of the system)', async () => {
      assert.equal((await app.inject({ url: '/api/ops/metrics' })).statusCode, 401);
      const res = await app.inject({ url: '/api/ops/metrics', headers: bearer(customer.accessToken) });
      assert.equal(res.statusCode, 403);
    });

    test('an admin gets this instance’s figures, and they move with the traffic', async () => {
      const first = await app.inject({ url: '/api/ops/metrics', headers: bearer(admin.accessToken) });
      assert.equal(first.statusCode, 200, first.body);
      const a = first.json();
      assert.equal(a.instance.pid, process.pid);
      // SQLite has no connection pool; PostgreSQL's has DATABASE_POOL_MAX connections.
      if (engine === 'postgres') assert.ok(a.pool.max >= 1, `pool max ${a.pool.max}`);
      const made = await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: bearer(admin.accessToken),
        payload: { sku: `OPS-${process.pid}`, name: 'Ops item', price: '1.00', stock: 1 },
      });
      assert.equal(made.statusCode, 201, made.body);
      for (let i = 0; i < 20; i++) await app.inject({ url: `/api/products/${made.json().id}` });
      const b = (await app.inject({ url: '/api/ops/metrics', headers: bearer(admin.accessToken) })).json();
      assert.ok(b.requests.total >= a.requests.total + 21, `${a.requests.total} → ${b.requests.total}`);
      assert.ok(b.cache.hits >= a.cache.hits + 19, `cache hits ${a.cache.hits} → ${b.cache.hits}`);
      const buckets = b.requests.durationBuckets as Array<{ le: number; count: number }>;
      assert.equal(buckets.at(-1)?.le, 1e9, 'the +Inf bucket closes the histogram');
      // Both count answered requests (the snapshot's own request is in flight, in neither).
      assert.equal(buckets.at(-1)?.count, b.requests.total);
      for (let i = 1; i < buckets.length; i++) {
        assert.ok((buckets[i]?.count ?? 0) >= (buckets[i - 1]?.count ?? 0), 'cumulative buckets');
      }
      assert.ok(b.eventLoop.utilization >= 0 && b.eventLoop.utilization <= 1);
      assert.deepEqual(Object.keys(b).sort(), [
        'cache',
        'eventLoop',
        'instance',
        'pool',
        'requests',
        'takenAt',
      ]);
    });
  });
}
