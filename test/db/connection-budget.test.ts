import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ConnectionBudgetError,
  checkConnectionBudget,
  connectionBudget,
} from '../../src/infra/connection-budget.js';
import { buildTestApp, captureLogs, skipEngine, testConfig } from '../helper.js';
import { createProduct } from '../products/support.js';
import { createAdmin, registerUser } from '../support/accounts.js';

describe('connection budget (arithmetic)', () => {
  test('a layout that fits, and one that does not, with every number in the summary', () => {
    const server = { maxConnections: 100, superuserReserved: 3 };
    const fits = connectionBudget({ poolMax: 10, workersPerServer: 2, servers: 4, reserved: 10 }, server);
    assert.equal(fits.needed, 90);
    assert.equal(fits.available, 97);
    assert.equal(fits.fits, true);
    const over = connectionBudget({ poolMax: 10, workersPerServer: 4, servers: 3, reserved: 10 }, server);
    assert.equal(over.fits, false);
    assert.equal(
      over.summary,
      'pool 10 × 4 workers × 3 servers = 120 + 10 reserved = 130 > 97 (max_connections 100 − 3 for superusers)',
    );
  });
});

describe('connection budget (the share stated)', () => {
  test('behind PgBouncer (check off) the share is still stated, replicas included, without asking the server', async () => {
    const logs = captureLogs();
    const config = testConfig({
      DATABASE_URL: 'postgres://127.0.0.1:1/none',
      DATABASE_REPLICA_URLS: 'postgres://127.0.0.1:2/none,postgres://127.0.0.1:3/none',
      DATABASE_POOL_MAX: '7',
      DATABASE_BUDGET_CHECK: 'off',
    });
    // No database: with the check off nothing is asked of the server.
    const budget = await checkConnectionBudget(undefined as never, config.database, logs.logger);
    assert.equal(budget, undefined);
    const line = logs.lines.find((l) => String(l.msg).startsWith('connection budget:'));
    assert.ok(line, logs.text());
    assert.equal(
      line.msg,
      "connection budget: this process opens at most 7 to the primary and 7 to each of 2 replicas; not checked against max_connections (DATABASE_BUDGET_CHECK=off: a pooler's limits apply)",
    );
  });
});

describe('connection budget at start-up, and a pool that never waits forever', {
  skip: await skipEngine('postgres'),
}, () => {
  test('the share is stated at start-up', async () => {
    const logs = captureLogs();
    const app = await buildTestApp({
      engine: 'postgres',
      logger: logs.logger,
      env: { DATABASE_POOL_MAX: '2', DATABASE_BUDGET_WORKERS: '1', DATABASE_BUDGET_RESERVED: '0' },
    });
    await app.close();
    const line = logs.lines.find((l) =>
      String(l.msg).startsWith('connection budget: this process opens at most 2'),
    );
    assert.ok(line, logs.text());
    assert.match(
      String(line.msg),
      /pool 2 × 1 workers × 1 servers = 2 \+ 0 reserved = 2 ≤ \d+ \(max_connections \d+ − \d+ for superusers\)/,
    );
  });

  test('a layout that cannot fit: a warning with the numbers, or a refusal to start', async () => {
    const layout = { DATABASE_POOL_MAX: '50', DATABASE_BUDGET_WORKERS: '8', DATABASE_BUDGET_SERVERS: '100' };
    const logs = captureLogs();
    const app = await buildTestApp({ engine: 'postgres', logger: logs.logger, env: layout });
    await app.close();
    const warning = logs.lines.find((l) => String(l.msg).startsWith('connection budget does not fit'));
    assert.ok(warning, logs.text());
    assert.equal(warning.level, 'warn');
    assert.match(
      String(warning.msg),
      /pool 50 × 8 workers × 100 servers = 40000 \+ 10 reserved = 40010 > \d+/,
    );

    await assert.rejects(
      buildTestApp({ engine: 'postgres', env: { ...layout, DATABASE_BUDGET_CHECK: 'refuse' } }),
      (err: unknown) =>
        err instanceof ConnectionBudgetError && /40010 > \d+ \(max_connections/.test(err.message),
    );
  });

  test('pool exhausted → 503 with Retry-After after the bounded wait, never a hang (a read and an order)', async () => {
    const waitMs = 1500;
    const app = await buildTestApp({
      engine: 'postgres',
      env: { DATABASE_POOL_MAX: '2', DATABASE_CONNECT_TIMEOUT_MS: String(waitMs), CACHE_ENABLED: 'false' },
    });
    try {
      const admin = await createAdmin(app);
      const customer = await registerUser(app);
      const product = await createProduct(app, admin);
      let release = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const held = [1, 2].map(() => app.database.db.connection().execute(() => gate));
      // Both connections are checked out before the requests come.
      while ((app.database.poolStats()?.idle ?? 0) > 0 || (app.database.poolStats()?.total ?? 0) < 2) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const requests = [
        { method: 'GET' as const, url: '/api/products' },
        {
          method: 'POST' as const,
          url: '/api/orders',
          headers: { authorization: `Bearer ${customer.accessToken}` },
          payload: { items: [{ productId: product.id, quantity: 1 }] },
        },
      ];
      for (const request of requests) {
        const started = Date.now();
        const res = await app.inject(request);
        const took = Date.now() - started;
        assert.equal(res.statusCode, 503, `${request.method}: ${res.body}`);
        assert.equal(res.headers['retry-after'], '1');
        assert.equal(res.json().code, 'SERVICE_UNAVAILABLE');
        // It waited the bounded wait once — not less (no wait), not twice (a second wait for a
        // connection after the first failed), with room for a loaded machine.
        assert.ok(
          took >= waitMs - 50 && took < 2 * waitMs - 200,
          `${request.method} answered after ${took} ms`,
        );
      }
      release();
      await Promise.all(held);
      const after = await app.inject({ method: 'GET', url: '/api/products' });
      assert.equal(after.statusCode, 200, 'served again once connections are back');
    } finally {
      await app.close();
    }
  });
});
