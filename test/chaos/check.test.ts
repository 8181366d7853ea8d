import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { buildApp } from '../../src/app.js';
import { skipEngine, type TestDatabaseEnv, testConfig, testDatabaseEnv } from '../helper.js';
import { createProduct } from '../products/support.js';
import { bearer, createAdmin, registerUser } from '../support/accounts.js';
import { type CheckedData, checkData } from './check.js';
import type { OrderIntent } from './load.js';

/**
 * The chaos data check must fail on what it exists to catch: each kind of broken data is made on
 * purpose in a real database, after a clean state the check passes.
 */
describe('the chaos data check', { skip: await skipEngine('postgres') }, () => {
  let database: TestDatabaseEnv;
  let app: FastifyInstance;
  let db: pg.Client;
  let data: CheckedData;
  const intents: OrderIntent[] = [];

  before(async () => {
    database = await testDatabaseEnv('postgres');
    app = await buildApp(testConfig(database.env));
    await app.ready();
    const admin = await createAdmin(app);
    const customer = await registerUser(app);
    const product = await createProduct(app, admin, { stock: 10 });
    data = {
      databaseUrl: database.env.DATABASE_URL ?? '',
      customers: [{ userId: customer.user.id }],
      products: [{ id: product.id, initialStock: 10 }],
    };
    for (let i = 0; i < 2; i++) {
      const intent: OrderIntent = {
        key: randomUUID(),
        customer: 0,
        productId: product.id,
        acknowledged: [],
        done: true,
        attempts: 1,
      };
      const res = await app.inject({
        method: 'POST',
        url: '/api/orders',
        headers: { ...bearer(customer.accessToken), 'idempotency-key': intent.key },
        payload: { items: [{ productId: product.id, quantity: 1 }] },
      });
      assert.equal(res.statusCode, 201, res.body);
      intent.acknowledged.push(res.json().id);
      intents.push(intent);
    }
    db = new pg.Client({ connectionString: data.databaseUrl });
    await db.connect();
  });
  after(async () => {
    await db?.end();
    await app?.close();
    await database?.cleanup();
  });

  const problems = async (list: readonly OrderIntent[] = intents) => (await checkData(data, list)).problems;

  test('passes on the data the service wrote', async () => {
    assert.deepEqual(await problems(), []);
  });

  test('an acknowledged order missing from the database', async () => {
    const lost = { ...intents[0], key: randomUUID(), acknowledged: [randomUUID()] } as OrderIntent;
    const found = await problems([...intents, lost]);
    assert.ok(
      found.some((p) => p.includes('was acknowledged and is lost')),
      found.join('\n'),
    );
  });

  test('one key answered with two orders', async () => {
    const first = intents[0] as OrderIntent;
    const second = intents[1] as OrderIntent;
    const twice = { ...first, acknowledged: [...first.acknowledged, ...second.acknowledged] } as OrderIntent;
    const found = await problems([twice, second]);
    assert.ok(
      found.some((p) => p.includes('answered 201 with 2 different orders')),
      found.join('\n'),
    );
  });

  test('an order no key answers with (a retry that made a second order), and stock that does not add up', async () => {
    const original = (intents[0] as OrderIntent).acknowledged[0];
    const copy = randomUUID();
    const productId = data.products[0]?.id;
    const { rows } = await db.query<{ stock: number }>('SELECT stock FROM products WHERE id = $1', [
      productId,
    ]);
    // Committed (the check reads on its own connection), and undone after.
    try {
      await db.query(
        `INSERT INTO orders (id, user_id, status, total_amount, currency, created_at, updated_at)
         SELECT $2, user_id, status, total_amount, currency, created_at, updated_at FROM orders WHERE id = $1`,
        [original, copy],
      );
      const found = await problems();
      assert.ok(
        found.some((p) => p.includes("1 orders in the database are no key's answer")),
        found.join('\n'),
      );
      await db.query('UPDATE products SET stock = stock + 1 WHERE id = $1', [productId]);
      const drift = await problems();
      assert.ok(
        drift.some((p) => p.includes('≠ initial 10')),
        drift.join('\n'),
      );
    } finally {
      await db.query('DELETE FROM orders WHERE id = $1', [copy]);
      await db.query('UPDATE products SET stock = $2 WHERE id = $1', [productId, rows[0]?.stock]);
    }
    assert.deepEqual(await problems(), []);
  });

  test('a live session left with two unspent refresh tokens (half-rotated)', async () => {
    try {
      const session = await db.query<{ id: string }>(
        'SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL LIMIT 1',
        [data.customers[0]?.userId],
      );
      assert.equal(session.rowCount, 1);
      await db.query(
        `INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
         VALUES (repeat('a', 64), $1, now() + interval '1 day')`,
        [session.rows[0]?.id],
      );
      const found = await problems();
      assert.ok(
        found.some((p) => p.includes('has 2 unspent refresh tokens (half-rotated)')),
        found.join('\n'),
      );
    } finally {
      await db.query(`DELETE FROM refresh_tokens WHERE token_hash = repeat('a', 64)`);
    }
    assert.deepEqual(await problems(), []);
  });
});
