import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { migrateDown, migrateToLatest, pendingMigrations } from '../../src/db/migrator.js';
import { createDatabase, type DatabaseHandle } from '../../src/infra/database.js';
import { classifyDbError, violatedConstraint } from '../../src/lib/db-errors.js';
import { toCents } from '../../src/lib/money.js';
import {
  captureLogs,
  engines,
  skipEngine,
  type TestDatabaseEnv,
  testConfig,
  testDatabaseEnv,
} from '../helper.js';

async function rejectsWith(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the statement to fail');
}

for (const engine of engines) {
  describe(`migrations on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let env: TestDatabaseEnv;
    let handle: DatabaseHandle;

    before(async () => {
      env = await testDatabaseEnv(engine);
      handle = createDatabase(testConfig(env.env).database, captureLogs().logger);
    });
    after(async () => {
      await handle?.close();
      await env?.cleanup();
    });

    test('apply from empty, then re-run as a no-op', async () => {
      assert.deepEqual(await pendingMigrations(handle.db, engine), [
        '001_initial',
        '002_feature_flags',
        '003_accounts_and_jobs',
      ]);
      assert.deepEqual(await migrateToLatest(handle.db, engine), [
        '001_initial',
        '002_feature_flags',
        '003_accounts_and_jobs',
      ]);
      assert.deepEqual(await migrateToLatest(handle.db, engine), []);
      assert.deepEqual(await pendingMigrations(handle.db, engine), []);
    });

    test('down and up again', async () => {
      assert.deepEqual(await migrateDown(handle.db, engine), ['003_accounts_and_jobs']);
      assert.deepEqual(await migrateDown(handle.db, engine), ['002_feature_flags']);
      assert.deepEqual(await migrateDown(handle.db, engine), ['001_initial']);
      assert.deepEqual(await migrateToLatest(handle.db, engine), [
        '001_initial',
        '002_feature_flags',
        '003_accounts_and_jobs',
      ]);
    });

    async function insertUser(email: string, username: string): Promise<string> {
      const id = randomUUID();
      await handle.db.insertInto('users').values({ id, email, username, password_hash: 'x' }).execute();
      return id;
    }

    test('emails and usernames are unique regardless of case', async () => {
      await insertUser('Ada@Example.com', 'Ada');
      const byEmail = await rejectsWith(insertUser('ada@example.COM', 'someone-else'));
      assert.equal(classifyDbError(byEmail), 'unique_violation');
      assert.match(violatedConstraint(byEmail) ?? '', /email/);
      const byName = await rejectsWith(insertUser('other@example.com', 'ADA'));
      assert.equal(classifyDbError(byName), 'unique_violation');
      assert.match(violatedConstraint(byName) ?? '', /username/);
    });

    test('timestamps read back as ISO 8601 UTC strings with milliseconds', async () => {
      const id = await insertUser('time@example.com', 'time');
      const row = await handle.db
        .selectFrom('users')
        .selectAll()
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      assert.match(row.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal(row.created_at, row.updated_at);
      assert.equal(row.deactivated_at, null);
      assert.equal(row.role, 'customer');
    });

    test('updated_at changes on every update, even one written by hand (guide correction 16)', async () => {
      const id = await insertUser('touch@example.com', 'touch');
      const before = await handle.db
        .selectFrom('users')
        .select('updated_at')
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      await sleep(5);
      await sql`UPDATE users SET username = 'touched' WHERE id = ${id}`.execute(handle.db);
      const afterUpdate = await handle.db
        .selectFrom('users')
        .select(['updated_at', 'created_at'])
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      assert.ok(
        afterUpdate.updated_at > before.updated_at,
        `${afterUpdate.updated_at} > ${before.updated_at}`,
      );
      assert.equal(afterUpdate.created_at, before.updated_at);
    });

    async function insertProduct(stock: number, price = '19.99'): Promise<string> {
      const id = randomUUID();
      await handle.db
        .insertInto('products')
        .values({ id, sku: `SKU-${id}`, name: 'Widget', price, stock })
        .execute();
      return id;
    }

    test('money keeps exactly two decimals', async () => {
      const id = await insertProduct(1, '1234.05');
      const row = await handle.db
        .selectFrom('products')
        .select('price')
        .where('id', '=', id)
        .executeTakeFirstOrThrow();
      assert.equal(toCents(row.price), 123_405);
    });

    test('stock and prices cannot go negative (guide correction 18)', async () => {
      const id = await insertProduct(1);
      const err = await rejectsWith(
        handle.db.updateTable('products').set({ stock: -1 }).where('id', '=', id).execute(),
      );
      assert.equal(classifyDbError(err), 'check_violation');
      assert.equal(classifyDbError(await rejectsWith(insertProduct(1, '-1.00'))), 'check_violation');
    });

    test('a user with orders cannot be deleted: orders are financial records (guide correction 17)', async () => {
      const userId = await insertUser('buyer@example.com', 'buyer');
      const productId = await insertProduct(5);
      const orderId = randomUUID();
      await handle.db
        .insertInto('orders')
        .values({ id: orderId, user_id: userId, total_amount: '19.99', currency: 'USD' })
        .execute();
      await handle.db
        .insertInto('order_items')
        .values({
          id: randomUUID(),
          order_id: orderId,
          product_id: productId,
          sku: 'S',
          name: 'Widget',
          unit_price: '19.99',
          quantity: 1,
          line_total: '19.99',
        })
        .execute();
      const err = await rejectsWith(handle.db.deleteFrom('users').where('id', '=', userId).execute());
      assert.equal(classifyDbError(err), 'foreign_key_violation');
      assert.equal(
        classifyDbError(
          await rejectsWith(handle.db.deleteFrom('products').where('id', '=', productId).execute()),
        ),
        'foreign_key_violation',
      );
      const orders = await handle.db
        .selectFrom('orders')
        .select('id')
        .where('user_id', '=', userId)
        .execute();
      assert.equal(orders.length, 1);
    });

    test('an order line names each product once, with a positive quantity', async () => {
      const userId = await insertUser('lines@example.com', 'lines');
      const productId = await insertProduct(5);
      const orderId = randomUUID();
      await handle.db
        .insertInto('orders')
        .values({ id: orderId, user_id: userId, total_amount: '0', currency: 'USD' })
        .execute();
      const line = (quantity: number) => ({
        id: randomUUID(),
        order_id: orderId,
        product_id: productId,
        sku: 'S',
        name: 'W',
        unit_price: '1.00',
        quantity,
        line_total: '1.00',
      });
      assert.equal(
        classifyDbError(await rejectsWith(handle.db.insertInto('order_items').values(line(0)).execute())),
        'check_violation',
      );
      await handle.db.insertInto('order_items').values(line(1)).execute();
      assert.equal(
        classifyDbError(await rejectsWith(handle.db.insertInto('order_items').values(line(2)).execute())),
        'unique_violation',
      );
    });
  });
}

describe('PostgreSQL column types', { skip: await skipEngine('postgres') }, () => {
  let env: TestDatabaseEnv;
  let handle: DatabaseHandle;
  before(async () => {
    env = await testDatabaseEnv('postgres');
    handle = createDatabase(testConfig(env.env).database, captureLogs().logger);
    await migrateToLatest(handle.db, 'postgres');
  });
  after(async () => {
    await handle?.close();
    await env?.cleanup();
  });

  test('uuid ids, timestamptz(3), numeric(10,2) prices', async () => {
    const { rows } = await sql<{
      table_name: string;
      column_name: string;
      data_type: string;
      datetime_precision: number | null;
      numeric_precision: number | null;
      numeric_scale: number | null;
    }>`SELECT table_name, column_name, data_type, datetime_precision, numeric_precision, numeric_scale
       FROM information_schema.columns WHERE table_schema = 'public'`.execute(handle.db);
    const column = (table: string, name: string) =>
      rows.find((r) => r.table_name === table && r.column_name === name);
    assert.equal(column('users', 'id')?.data_type, 'uuid');
    assert.equal(column('orders', 'user_id')?.data_type, 'uuid');
    assert.equal(column('users', 'created_at')?.data_type, 'timestamp with time zone');
    assert.equal(column('users', 'created_at')?.datetime_precision, 3);
    assert.deepEqual(
      [
        column('products', 'price')?.data_type,
        column('products', 'price')?.numeric_precision,
        column('products', 'price')?.numeric_scale,
      ],
      ['numeric', 10, 2],
    );
    assert.equal(column('orders', 'total_amount')?.numeric_scale, 2);
    for (const r of rows.filter((r) => r.column_name.endsWith('_at'))) {
      assert.equal(r.data_type, 'timestamp with time zone', `${r.table_name}.${r.column_name}`);
    }
  });

  test('no index duplicates one a UNIQUE constraint already makes (guide correction 15)', async () => {
    const { rows } = await sql<{ tablename: string; indexname: string; indexdef: string }>`
      SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'`.execute(handle.db);
    const users = rows
      .filter((r) => r.tablename === 'users')
      .map((r) => r.indexname)
      .sort();
    assert.deepEqual(users, [
      'users_created_at_id_idx',
      'users_email_lower_key',
      'users_pkey',
      'users_username_lower_key',
    ]);
    // No two indexes of a table cover the same column list.
    const seen = new Set<string>();
    for (const r of rows) {
      const columns = `${r.tablename}:${r.indexdef.replace(/^.*USING btree /, '')}`;
      assert.ok(!seen.has(columns), `duplicate index ${r.indexname}`);
      seen.add(columns);
    }
  });
});
