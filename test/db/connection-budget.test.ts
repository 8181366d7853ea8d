import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConnectionBudgetError, connectionBudget } from '../../src/infra/connection-budget.js';
import { buildTestApp, captureLogs, skipEngine } from '../helper.js';

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

  test('pool exhausted → 503 with Retry-After after the bounded wait, never a hang', async () => {
    const app = await buildTestApp({
      engine: 'postgres',
      env: { DATABASE_POOL_MAX: '2', DATABASE_CONNECT_TIMEOUT_MS: '300', CACHE_ENABLED: 'false' },
    });
    try {
      let release = () => {};
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      const held = [1, 2].map(() => app.database.db.connection().execute(() => gate));
      // Both connections are checked out before the request comes.
      while ((app.database.poolStats()?.idle ?? 0) > 0 || (app.database.poolStats()?.total ?? 0) < 2) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const res = await app.inject({ method: 'GET', url: '/api/products' });
      assert.equal(res.statusCode, 503, res.body);
      assert.equal(res.headers['retry-after'], '1');
      assert.equal(res.json().code, 'SERVICE_UNAVAILABLE');
      release();
      await Promise.all(held);
      const after = await app.inject({ method: 'GET', url: '/api/products' });
      assert.equal(after.statusCode, 200, 'served again once connections are back');
    } finally {
      await app.close();
    }
  });
});
