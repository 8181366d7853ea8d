import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { createProduct } from '../products/support.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import { orderCount, placeOrder, stockOf, unitsHeld } from './support.js';

/**
 * The invariants of docs/api.md under concurrency: stock never negative; for every product, stock plus
 * the units in non-cancelled orders equals everything ever stocked; a retried request with the
 * same idempotency key never creates a second order. Run on PostgreSQL (real row locks and a
 * connection pool) and on SQLite.
 */
for (const engine of engines) {
  describe(`orders under concurrency on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let customers: Account[];
    before(async () => {
      // These tests are about the accounting, not overload: a request waits as long as it must for
      // a pooled connection (on two busy cores, 200 at once outlast the default 5 s and get 503).
      app = await buildTestApp({
        engine,
        env: { DATABASE_POOL_MAX: '20', DATABASE_CONNECT_TIMEOUT_MS: '120000' },
      });
      admin = await createAdmin(app);
      customers = await Promise.all(Array.from({ length: 20 }, () => registerUser(app)));
    });
    after(() => app?.close());

    const customer = (i: number): Account => customers[i % customers.length] as Account;

    async function assertInvariant(productId: string, stocked: number): Promise<void> {
      const stock = await stockOf(app, productId);
      assert.ok(stock >= 0, `stock ${stock}`);
      assert.equal(stock + (await unitsHeld(app, productId)), stocked, 'stock + units held = stocked');
    }

    test('200 concurrent single-unit orders for 50 in stock: exactly 50 × 201 and 150 × 409 (guide correction 18)', async () => {
      const product = await createProduct(app, admin, { stock: 50, price: '7.77' });
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          placeOrder(app, customer(i), [{ productId: product.id, quantity: 1 }]),
        ),
      );
      const created = results.filter((r) => r.statusCode === 201);
      const refused = results.filter((r) => r.statusCode === 409);
      assert.equal(created.length, 50, results.map((r) => r.statusCode).join(','));
      assert.equal(refused.length, 150);
      for (const r of refused) assert.equal(r.json().code, 'INSUFFICIENT_STOCK');
      assert.equal(new Set(created.map((r) => r.json().id)).size, 50);
      for (const r of created) assert.equal(r.json().totalAmount, '7.77');
      assert.equal(await stockOf(app, product.id), 0);
      await assertInvariant(product.id, 50);
    });

    test('orders over the same products in opposite orders, with cancels mixed in: no deadlock, invariant holds', async () => {
      const a = await createProduct(app, admin, { stock: 60 });
      const b = await createProduct(app, admin, { stock: 60 });
      const c = await createProduct(app, admin, { stock: 60 });
      const products = [a, b, c];
      const results = await Promise.all(
        Array.from({ length: 60 }, (_, i) => {
          const lines = (i % 2 === 0 ? products : [...products].reverse()).map((p, j) => ({
            productId: p.id,
            quantity: ((i + j) % 3) + 1,
          }));
          return placeOrder(app, customer(i), lines);
        }),
      );
      assert.ok(
        results.every((r) => r.statusCode === 201 || r.statusCode === 409),
        results.map((r) => r.statusCode).join(','),
      );
      const created = results.filter((r) => r.statusCode === 201);
      assert.ok(created.length > 0);
      // Cancel half of them while new orders arrive.
      const cancels = created.slice(0, Math.floor(created.length / 2)).map((r) => {
        const order = r.json();
        const owner = customers.find((x) => x.user.id === order.userId) as Account;
        return app.inject({
          method: 'POST',
          url: `/api/orders/${order.id}/cancel`,
          headers: bearer(owner.accessToken),
        });
      });
      const more = Array.from({ length: 30 }, (_, i) =>
        placeOrder(app, customer(i), [
          { productId: c.id, quantity: 2 },
          { productId: a.id, quantity: 1 },
        ]),
      );
      const mixed: LightMyRequestResponse[] = await Promise.all([...cancels, ...more]);
      assert.ok(
        mixed.every((r) => [200, 201, 409].includes(r.statusCode)),
        mixed.map((r) => r.statusCode).join(','),
      );
      for (const p of products) await assertInvariant(p.id, 60);
    });

    test('50 concurrent identical requests with one Idempotency-Key → one order; the rest replay it or get 409', async () => {
      const product = await createProduct(app, admin, { stock: 100, price: '3.33' });
      const buyer = customer(7);
      const key = `order-${Date.now()}`;
      const before = await orderCount(app);
      const lines = [{ productId: product.id, quantity: 2 }];
      const results = await Promise.all(
        Array.from({ length: 50 }, () => placeOrder(app, buyer, lines, { 'idempotency-key': key })),
      );
      assert.equal((await orderCount(app)) - before, 1, 'exactly one order');
      assert.equal(await stockOf(app, product.id), 98);
      const created = results.filter((r) => r.statusCode === 201);
      const inUse = results.filter((r) => r.statusCode === 409);
      assert.equal(created.length + inUse.length, 50, results.map((r) => r.statusCode).join(','));
      for (const r of inUse) assert.equal(r.json().code, 'IDEMPOTENCY_KEY_IN_USE');
      const original = created.filter((r) => r.headers['idempotent-replayed'] === undefined);
      assert.equal(original.length, 1, 'one response created the order');
      const body = original[0]?.body ?? '';
      for (const r of created) assert.equal(r.body, body, 'replays are byte-identical');
      assert.ok(
        created.slice(0).every((r) => r === original[0] || r.headers['idempotent-replayed'] === 'true'),
      );

      const replay = await placeOrder(app, buyer, lines, { 'idempotency-key': key });
      assert.equal(replay.statusCode, 201);
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.equal(replay.body, body);
      const different = await placeOrder(app, buyer, [{ productId: product.id, quantity: 3 }], {
        'idempotency-key': key,
      });
      assert.equal(different.statusCode, 422);
      assert.equal(different.json().code, 'IDEMPOTENCY_KEY_REUSED');
      assert.equal((await orderCount(app)) - before, 1);
      await assertInvariant(product.id, 100);
    });
  });
}
