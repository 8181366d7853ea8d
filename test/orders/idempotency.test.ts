import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import * as idempotency from '../../src/modules/idempotency/idempotency.service.js';
import { recordOrder } from '../../src/modules/orders/orders.repository.js';
import { orderLines, orderRequestOf } from '../../src/modules/orders/orders.service.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, engines, skipEngine, testDatabaseEnv } from '../helper.js';
import { createProduct } from '../products/support.js';
import { type Account, createAdmin, registerUser } from '../support/accounts.js';
import { type Line, orderCount, placeOrder, stockOf } from './support.js';

const hour = 3_600_000;

function requestFingerprint(lines: readonly Line[]): string {
  return idempotency.fingerprint(orderRequestOf(orderLines(lines)));
}

async function keyRow(app: FastifyInstance, userId: string, key: string) {
  return app.database.db
    .selectFrom('idempotency_keys')
    .selectAll()
    .where('user_id', '=', userId)
    .where('key', '=', key)
    .executeTakeFirst();
}

let keySequence = 0;
const newKey = () => `key-${process.pid}-${Date.now()}-${++keySequence}`;

for (const engine of engines) {
  describe(`Idempotency-Key on POST /api/orders on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let alice: Account;
    let bob: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
      alice = await registerUser(app);
      bob = await registerUser(app);
    });
    after(() => app?.close());

    test('a retry replays the first response byte for byte, with Idempotent-Replayed, creating nothing', async () => {
      const p = await createProduct(app, admin, { stock: 10, price: '2.50' });
      const q = await createProduct(app, admin, { stock: 10, price: '1.25' });
      const key = newKey();
      const lines = [
        { productId: p.id, quantity: 2 },
        { productId: q.id, quantity: 1 },
      ];
      const first = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(first.statusCode, 201, first.body);
      assert.equal(first.headers['idempotent-replayed'], undefined);
      const count = await orderCount(app);
      const replay = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(replay.statusCode, 201);
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.equal(replay.body, first.body);
      assert.equal(replay.headers['content-type'], first.headers['content-type']);
      // The same lines in another order (and ids in capitals) are the same request.
      const reordered = await placeOrder(
        app,
        alice,
        [
          { productId: q.id.toUpperCase(), quantity: 1 },
          { productId: p.id, quantity: 2 },
        ],
        { 'idempotency-key': key },
      );
      assert.equal(reordered.statusCode, 201);
      assert.equal(reordered.body, first.body);
      assert.equal(await orderCount(app), count);
      assert.equal(await stockOf(app, p.id), 8);
      const row = await keyRow(app, alice.user.id, key);
      assert.equal(row?.response_status, 201);
      assert.equal(row?.response_body, first.body);
      assert.ok(
        Date.parse(row?.expires_at ?? '') - Date.now() >= 24 * hour - 60_000,
        'kept at least 24 hours',
      );
    });

    test('the same key with a different body → 422 IDEMPOTENCY_KEY_REUSED; keys are per user', async () => {
      const p = await createProduct(app, admin, { stock: 10 });
      const key = newKey();
      assert.equal(
        (await placeOrder(app, alice, [{ productId: p.id, quantity: 1 }], { 'idempotency-key': key }))
          .statusCode,
        201,
      );
      const different = await placeOrder(app, alice, [{ productId: p.id, quantity: 2 }], {
        'idempotency-key': key,
      });
      assert.equal(different.statusCode, 422);
      assert.equal(different.json().code, 'IDEMPOTENCY_KEY_REUSED');
      assert.equal(different.headers['idempotent-replayed'], undefined);
      const bobsOrder = await placeOrder(app, bob, [{ productId: p.id, quantity: 1 }], {
        'idempotency-key': key,
      });
      assert.equal(bobsOrder.statusCode, 201, 'another user’s identical key is another key');
      assert.equal(bobsOrder.headers['idempotent-replayed'], undefined);
      assert.equal(bobsOrder.json().userId, bob.user.id);
      assert.equal(await stockOf(app, p.id), 8);
    });

    test('a refusal (409 INSUFFICIENT_STOCK) is the answer for that key too, replayed even after a restock', async () => {
      const p = await createProduct(app, admin, { stock: 1 });
      const key = newKey();
      const lines = [{ productId: p.id, quantity: 2 }];
      const first = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(first.statusCode, 409);
      assert.equal(first.json().code, 'INSUFFICIENT_STOCK');
      assert.match(String(first.headers['content-type']), /^application\/problem\+json/);
      await app.inject({
        method: 'PATCH',
        url: `/api/products/${p.id}`,
        headers: { authorization: `Bearer ${admin.accessToken}` },
        payload: { stock: 10 },
      });
      const replay = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(replay.statusCode, 409);
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.equal(replay.body, first.body);
      assert.match(String(replay.headers['content-type']), /^application\/problem\+json/);
      assert.equal((await placeOrder(app, alice, lines, { 'idempotency-key': newKey() })).statusCode, 201);
    });

    test('the key header must be 1–255 printable ASCII characters → else 400', async () => {
      const p = await createProduct(app, admin);
      for (const key of ['x'.repeat(256), 'tab\there', 'caf\u00e9']) {
        const res = await placeOrder(app, alice, [{ productId: p.id, quantity: 1 }], {
          'idempotency-key': key,
        });
        assert.equal(res.statusCode, 400, JSON.stringify(key));
        assert.equal(res.json().errors[0].path, '/headers/idempotency-key');
      }
      const empty = await app.inject({
        method: 'POST',
        url: '/api/orders',
        headers: { authorization: `Bearer ${alice.accessToken}`, 'idempotency-key': '' },
        payload: { items: [{ productId: p.id, quantity: 1 }] },
      });
      assert.equal(empty.statusCode, 400);
      for (const key of ['x'.repeat(255), 'a', ' spaced key with symbols !@#$%^&*()~ ']) {
        const res = await placeOrder(app, alice, [{ productId: p.id, quantity: 1 }], {
          'idempotency-key': key,
        });
        assert.equal(res.statusCode, 201, JSON.stringify(key));
      }
    });

    test('while the first request runs, a repeat gets 409 IDEMPOTENCY_KEY_IN_USE; a different body 422', async () => {
      const p = await createProduct(app, admin);
      const key = newKey();
      const lines = [{ productId: p.id, quantity: 1 }];
      const now = Date.now();
      // A first request still running (its lock is in the future): what a concurrent repeat sees.
      await app.database.db
        .insertInto('idempotency_keys')
        .values({
          user_id: alice.user.id,
          key,
          scope: 'POST /api/orders',
          request_hash: requestFingerprint(lines),
          response_status: null,
          response_body: null,
          created_at: new Date(now).toISOString(),
          locked_until: new Date(now + 60_000).toISOString(),
          expires_at: new Date(now + 24 * hour).toISOString(),
        })
        .execute();
      const repeat = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(repeat.statusCode, 409);
      assert.equal(repeat.json().code, 'IDEMPOTENCY_KEY_IN_USE');
      assert.equal(repeat.headers['retry-after'], '1');
      const other = await placeOrder(app, alice, [{ productId: p.id, quantity: 2 }], {
        'idempotency-key': key,
      });
      assert.equal(other.statusCode, 422);
      assert.equal(await stockOf(app, p.id), 10);
    });

    test('a first request that crashed (its lock expired) is taken over by the retry', async () => {
      const p = await createProduct(app, admin, { stock: 5 });
      const key = newKey();
      const lines = [{ productId: p.id, quantity: 2 }];
      const now = Date.now();
      await app.database.db
        .insertInto('idempotency_keys')
        .values({
          user_id: alice.user.id,
          key,
          scope: 'POST /api/orders',
          request_hash: requestFingerprint(lines),
          response_status: null,
          response_body: null,
          created_at: new Date(now - 120_000).toISOString(),
          locked_until: new Date(now - 60_000).toISOString(),
          expires_at: new Date(now + 23 * hour).toISOString(),
        })
        .execute();
      const retry = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(retry.statusCode, 201, retry.body);
      assert.equal(retry.headers['idempotent-replayed'], undefined);
      assert.equal(await stockOf(app, p.id), 3);
      const again = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.equal(again.body, retry.body);
      assert.equal(await stockOf(app, p.id), 3);
    });

    test('a request whose lock was taken over can neither store its answer nor release the key', async () => {
      // The lock must outlive the in-use check below on a busy machine (50 ms did not: seen failing
      // under load), and the sleep must outlive the lock.
      const settings = { ttlMs: 24 * hour, lockMs: 2000 };
      const request = {
        userId: alice.user.id,
        key: newKey(),
        scope: 'POST /api/orders',
        fingerprint: 'f'.repeat(64),
      };
      const slow = await idempotency.begin(app.database.db, request, settings);
      assert.equal(slow.kind, 'run');
      await assert.rejects(
        idempotency.begin(app.database.db, request, settings),
        idempotency.IdempotencyKeyInUseError,
      );
      await sleep(2500);
      const retry = await idempotency.begin(app.database.db, request, settings);
      assert.equal(retry.kind, 'run', 'the expired lock is taken over');
      if (slow.kind !== 'run' || retry.kind !== 'run') return;
      // The slow first request finishes after all: its work's transaction must roll back.
      await assert.rejects(
        app.database.db
          .transaction()
          .execute((trx) => idempotency.complete(trx, slow.hold, { status: 201, body: '"stale"' }, settings)),
        idempotency.IdempotencyKeyInUseError,
      );
      await idempotency.release(app.database.db, slow.hold);
      assert.ok((await keyRow(app, alice.user.id, request.key)) !== undefined, 'not released by the loser');
      await app.database.db
        .transaction()
        .execute((trx) => idempotency.complete(trx, retry.hold, { status: 201, body: '"fresh"' }, settings));
      const replay = await idempotency.begin(app.database.db, request, settings);
      assert.deepEqual(replay, { kind: 'replay', status: 201, body: '"fresh"' });
    });

    test('an order written with a lost hold stores no answer and is rolled back (one statement on PostgreSQL)', async () => {
      const settings = { ttlMs: 24 * hour, lockMs: 2000 };
      const request = {
        userId: alice.user.id,
        key: newKey(),
        scope: 'POST /api/orders',
        fingerprint: 'e'.repeat(64),
      };
      const slow = await idempotency.begin(app.database.db, request, settings);
      await sleep(2500);
      const retry = await idempotency.begin(app.database.db, request, settings);
      assert.ok(slow.kind === 'run' && retry.kind === 'run', 'the expired lock is taken over');
      const product = await createProduct(app, admin, { stock: 5, price: '2.50' });
      const at = new Date().toISOString();
      const write = (id: string) => ({
        order: {
          id,
          user_id: alice.user.id,
          status: 'pending' as const,
          total_amount: '2.50',
          currency: 'EUR',
          created_at: at,
          updated_at: at,
        },
        items: [
          {
            id: crypto.randomUUID(),
            order_id: id,
            product_id: product.id,
            sku: product.sku,
            name: String(product.name),
            unit_price: '2.50',
            quantity: 1,
            line_total: '2.50',
          },
        ],
      });
      const before = await orderCount(app);
      const stale = write(crypto.randomUUID());
      const stored = await app.database.db
        .transaction()
        .execute(async (trx) => {
          const ok = await recordOrder(
            trx,
            app.database.engine,
            stale.order,
            stale.items,
            idempotency.completion(slow.hold, { status: 201, body: '"stale"' }, settings),
          );
          if (!ok) throw new idempotency.IdempotencyKeyInUseError();
          return ok;
        })
        .catch((err: unknown) => err);
      assert.ok(stored instanceof idempotency.IdempotencyKeyInUseError, 'the lost hold is reported');
      assert.equal(await orderCount(app), before, 'the order and its lines were rolled back');
      assert.equal((await keyRow(app, alice.user.id, request.key))?.response_body, null);
      const fresh = write(crypto.randomUUID());
      assert.equal(
        await app.database.db
          .transaction()
          .execute((trx) =>
            recordOrder(
              trx,
              app.database.engine,
              fresh.order,
              fresh.items,
              idempotency.completion(retry.hold, { status: 201, body: '"fresh"' }, settings),
            ),
          ),
        true,
      );
      assert.equal(await orderCount(app), before + 1);
      assert.deepEqual(await idempotency.begin(app.database.db, request, settings), {
        kind: 'replay',
        status: 201,
        body: '"fresh"',
      });
    });

    test('an expired key is a new key: the request runs again', async () => {
      const p = await createProduct(app, admin, { stock: 5 });
      const key = newKey();
      const lines = [{ productId: p.id, quantity: 1 }];
      const first = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(first.statusCode, 201);
      await app.database.db
        .updateTable('idempotency_keys')
        .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
        .where('user_id', '=', alice.user.id)
        .where('key', '=', key)
        .execute();
      const later = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(later.statusCode, 201);
      assert.equal(later.headers['idempotent-replayed'], undefined);
      assert.notEqual(later.json().id, first.json().id);
      assert.equal(await stockOf(app, p.id), 3);
    });
  });
}

describe('a 5xx releases the key (PostgreSQL)', { skip: await skipEngine('postgres') }, () => {
  let app: FastifyInstance;
  let cleanup: () => Promise<void>;
  let url: string;
  before(async () => {
    const database = await testDatabaseEnv('postgres');
    cleanup = database.cleanup;
    url = database.env.DATABASE_URL ?? '';
    app = await buildTestApp({
      engine: 'postgres',
      env: { ...database.env, DATABASE_STATEMENT_TIMEOUT_MS: '300' },
    });
  });
  after(async () => {
    await app?.close();
    await cleanup?.();
  });

  test('the order fails with 503 while its product row is locked; the same key then succeeds', async () => {
    const admin = await createAdmin(app);
    const alice = await registerUser(app);
    const p = await createProduct(app, admin, { stock: 5 });
    const key = newKey();
    const lines = [{ productId: p.id, quantity: 1 }];
    // Another session holds the product row: the order's conditional update hits statement_timeout.
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM products WHERE id = $1 FOR UPDATE', [p.id]);
      const failed = await placeOrder(app, alice, lines, { 'idempotency-key': key });
      assert.equal(failed.statusCode, 503, failed.body);
      assert.equal(failed.json().code, 'SERVICE_UNAVAILABLE');
      assert.equal(await keyRow(app, alice.user.id, key), undefined, 'the key was released');
    } finally {
      await blocker.query('ROLLBACK').catch(() => {});
      await blocker.end();
    }
    const retry = await placeOrder(app, alice, lines, { 'idempotency-key': key });
    assert.equal(retry.statusCode, 201, retry.body);
    assert.equal(retry.headers['idempotent-replayed'], undefined);
    assert.equal(await stockOf(app, p.id), 4);
  });
});

function cli(env: Record<string, string>): Promise<{ status: number; stdout: string; stderr: string }> {
  const entry = new URL('../../src/cli/idempotency-cleanup.ts', import.meta.url).pathname;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', entry],
      { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 300_000 },
      (error, stdout, stderr) =>
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

for (const engine of engines) {
  describe(`expired idempotency keys are removed on ${engine}`, { skip: await skipEngine(engine) }, () => {
    /** Inserts 1,200 keys (800 expired) and answers how many went in. */
    async function seedKeys(app: FastifyInstance, userId: string): Promise<number> {
      const now = Date.now();
      const rows = Array.from({ length: 1200 }, (_, i) => ({
        user_id: userId,
        key: `k${i}`,
        scope: 'POST /api/orders',
        request_hash: 'a'.repeat(64),
        response_status: 201,
        response_body: '{}',
        created_at: new Date(now - 25 * hour).toISOString(),
        locked_until: new Date(now - 25 * hour).toISOString(),
        // Two in three expired; the rest are still within their 24 hours.
        expires_at: new Date(i % 3 === 2 ? now + hour : now - 1000 - i).toISOString(),
      }));
      let inserted = 0;
      for (let i = 0; i < rows.length; i += 200) {
        const [result] = await app.database.db
          .insertInto('idempotency_keys')
          .values(rows.slice(i, i + 200))
          .execute();
        inserted += Number(result?.numInsertedOrUpdatedRows ?? 0);
      }
      return inserted;
    }
    const remaining = async (app: FastifyInstance) =>
      Number(
        (
          await app.database.db
            .selectFrom('idempotency_keys')
            .select((eb) => eb.fn.countAll<number | string>().as('n'))
            .executeTakeFirstOrThrow()
        ).n,
      );

    test('by the service’s clean-up job (one per IDEMPOTENCY_CLEANUP_INTERVAL_SECONDS)', async () => {
      const app = await buildTestApp({ engine, env: { IDEMPOTENCY_CLEANUP_INTERVAL_SECONDS: '1' } });
      try {
        const user = await registerUser(app);
        // The job may already run while the keys go in (its interval is 1 s), so what went in is
        // counted by the inserts, not by reading the table back.
        assert.equal(await seedKeys(app, user.user.id), 1200);
        await waitUntil(async () => (await remaining(app)) === 400, { what: 'the clean-up job' });
        assert.equal(await remaining(app), 400, 'the 800 expired keys are gone, in batches');
      } finally {
        await app.close();
      }
    });

    test('by `npm run idempotency:cleanup`', async () => {
      const database = await testDatabaseEnv(engine);
      const env = { ...database.env, IDEMPOTENCY_CLEANUP_INTERVAL_SECONDS: '0' };
      const app = await buildTestApp({ engine, env });
      try {
        const user = await registerUser(app);
        await seedKeys(app, user.user.id);
        const result = await cli(env);
        assert.equal(result.status, 0, result.stderr);
        assert.match(result.stdout, new RegExp(`${engine}: removed 800 expired idempotency keys`));
        assert.equal(await remaining(app), 400);
        assert.match((await cli(env)).stdout, /removed 0 expired/);
      } finally {
        await app.close();
        await database.cleanup();
      }
    });
  });
}
