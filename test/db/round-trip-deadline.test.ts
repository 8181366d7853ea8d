import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import pg from 'pg';
import { buildApp } from '../../src/app.js';
import { afterCommit, afterCommitAllowanceMs, requestDeadline } from '../../src/infra/database-deadline.js';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { createTestDatabase, type TestDatabase } from '../harness/postgres.js';
import { skipEngine, testConfig } from '../helper.js';
import { bearer, registerUser } from '../support/accounts.js';

/**
 * A PostgreSQL that accepts and never answers (the fault proxy's `timeout` toxic): every request
 * still ends — 503 with Retry-After shortly after statement_timeout — and once the database
 * answers again no connection carries a stale answer into the next query (src/infra/database-deadline.ts).
 */
describe('PostgreSQL round-trip deadline', { skip: await skipEngine('postgres') }, () => {
  let database: TestDatabase;
  let proxy: FaultProxy;
  let app: FastifyInstance;
  const statementTimeoutMs = 1000;
  const budgetMs = 2500;
  const products: string[] = [];

  before(async () => {
    database = await createTestDatabase();
    const url = new URL(database.url);
    proxy = await startFaultProxy({
      name: 'postgres',
      target: { host: url.hostname, port: Number(url.port || 5432) },
    });
    url.host = proxy.address;
    app = await buildApp(
      testConfig({
        DATABASE_URL: url.toString(),
        DATABASE_MIGRATE_ON_START: 'true',
        DATABASE_STATEMENT_TIMEOUT_MS: String(statementTimeoutMs),
        DATABASE_REQUEST_BUDGET_MS: String(budgetMs),
        DATABASE_CONNECT_TIMEOUT_MS: '1000',
        DATABASE_POOL_MAX: '4',
        CACHE_ENABLED: 'false',
      }),
    );
    await app.ready();
    const direct = new pg.Client({ connectionString: database.url });
    await direct.connect();
    try {
      for (let i = 0; i < 3; i++) {
        const id = randomUUID();
        await direct.query('INSERT INTO products (id, sku, name, price, stock) VALUES ($1, $2, $3, 1, 10)', [
          id,
          `DEADLINE-${i}`,
          `Deadline ${i}`,
        ]);
        products.push(id);
      }
    } finally {
      await direct.end();
    }
  });

  after(async () => {
    await app?.close();
    await proxy?.close();
    await database?.drop();
  });

  test('a hung database: 503 with Retry-After after the deadline, not a hang; then correct answers', async () => {
    const before = await app.inject({ method: 'GET', url: `/api/products/${products[0]}` });
    assert.equal(before.statusCode, 200, before.body);

    const toxic = proxy.add({ type: 'timeout', timeoutMs: 0 });
    const started = Date.now();
    const hung = await Promise.all(
      products.map((id) => app.inject({ method: 'GET', url: `/api/products/${id}` })),
    );
    const took = Date.now() - started;
    proxy.remove(toxic);
    for (const res of hung) {
      assert.equal(res.statusCode, 503, res.body);
      assert.equal(res.headers['retry-after'], '1');
    }
    assert.ok(took >= statementTimeoutMs, `answered after ${took} ms`);
    // Deadline (statement_timeout + 1 s) plus a busy machine's slack; without the deadline: never.
    assert.ok(took < 15_000, `answered after ${took} ms`);

    // Every connection that missed its answer was dropped: each product comes back as itself.
    for (let round = 0; round < 3; round++) {
      for (const id of products) {
        const res = await app.inject({ method: 'GET', url: `/api/products/${id}` });
        assert.equal(res.statusCode, 200, res.body);
        assert.equal(res.json().id, id);
      }
    }
  });

  test("every round trip slow but under its deadline: the request's budget ends it with 503, nothing half-done", async () => {
    const customer = await registerUser(app);
    const order = () =>
      app.inject({
        method: 'POST',
        url: '/api/orders',
        headers: bearer(customer.accessToken),
        payload: { items: [{ productId: products[1], quantity: 1 }] },
      });
    const stock = async () => (await app.inject({ url: `/api/products/${products[1]}` })).json().stock;
    const stockBefore = await stock();
    // 1 s on every answer: under the 2 s round-trip deadline, and an order makes five round trips,
    // so without the budget it answers 201 after 5 s (measured: 5.2 s).
    const toxic = proxy.add({ type: 'latency', latencyMs: 1000 }, 'downstream');
    const started = Date.now();
    const res = await order();
    const took = Date.now() - started;
    proxy.remove(toxic);
    assert.equal(res.statusCode, 503, res.body);
    assert.equal(res.headers['retry-after'], '1');
    assert.ok(took >= budgetMs - 100, `answered after ${took} ms, before the budget`);
    // The budget, plus a COMMIT already sent (never cut) and a busy machine's slack.
    assert.ok(took < 8000, `answered after ${took} ms`);
    // Rolled back: no stock taken, and the customer has no order.
    assert.equal(await stock(), stockBefore);
    const mine = await app.inject({ url: '/api/orders', headers: bearer(customer.accessToken) });
    assert.equal(mine.statusCode, 200, mine.body);
    assert.equal(mine.json().items.length, 0);
    // Without the fault the same request succeeds: no connection was left in a broken state.
    assert.equal((await order()).statusCode, 201);
    assert.equal(await stock(), stockBefore - 1);
  });

  test("past the request's deadline a round trip is refused; bookkeeping after the commit gets one short allowance", async () => {
    const db = app.database.db;
    await requestDeadline.run({ endsAt: Date.now() - 1 }, async () => {
      await assert.rejects(
        sql`select 1`.execute(db),
        (err: NodeJS.ErrnoException) => err.code === 'ETIMEDOUT',
      );
      const { rows } = await afterCommit(() => sql<{ one: number }>`select 1 as one`.execute(db));
      assert.equal(rows[0]?.one, 1);
    });
    // The allowance is cut at its end (not at the round trip's own, longer deadline), and it is
    // one per request: a second read after it has run out is refused.
    await requestDeadline.run({ endsAt: Date.now() - 1 }, async () => {
      const started = Date.now();
      await assert.rejects(
        afterCommit(() => sql`select pg_sleep(3)`.execute(db)),
        (err: NodeJS.ErrnoException) => err.code === 'ETIMEDOUT',
      );
      const took = Date.now() - started;
      assert.ok(
        // Before the round trip's own deadline (statement timeout + 1 s = 2 s here).
        took >= afterCommitAllowanceMs - 50 && took < statementTimeoutMs + 1000 - 200,
        `cut after ${took} ms`,
      );
      await assert.rejects(
        afterCommit(() => sql`select 1`.execute(db)),
        (err: NodeJS.ErrnoException) => err.code === 'ETIMEDOUT',
      );
    });
    // With budget left, the bookkeeping runs within it, as any round trip.
    await requestDeadline.run({ endsAt: Date.now() + 60_000 }, async () => {
      const { rows } = await afterCommit(() =>
        sql<{ one: number }>`select pg_sleep(1.5), 1 as one`.execute(db),
      );
      assert.equal(rows[0]?.one, 1);
    });
  });

  test('a transaction that lifts statement_timeout (the migration lock) is not cut by the deadline', async () => {
    const db = app.database.db;
    await db.transaction().execute(async (trx) => {
      await sql`select set_config('statement_timeout', '0', true)`.execute(trx);
      await sql`select pg_sleep(2.5)`.execute(trx);
    });
    // After its commit the same rule applies again: a statement past the deadline is cut.
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await sql`select set_config('statement_timeout', '60000', true)`.execute(trx);
        await sql`select pg_sleep(4)`.execute(trx);
      }),
      (err: NodeJS.ErrnoException) => err.code === 'ETIMEDOUT',
    );
  });
});
