import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import pg from 'pg';
import { buildApp } from '../../src/app.js';
import { readAfterCookie, readAfterHeader } from '../../src/infra/read-your-writes.js';
import { type ReplicatedPostgres, startReplicatedPostgres } from '../harness/replication.js';
import { redisUrl, skipUnless } from '../harness/services.js';
import { testConfig, testKeyPrefix } from '../helper.js';
import { createProduct } from '../products/support.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';

/**
 * Read replicas against a real primary and a real streaming standby (initdb + pg_basebackup -R,
 * test/harness/replication.ts), through the API: the 10,000 write-then-read trials in
 * every run (four clients at once; STALE_READ_TRIALS=500 for a quick one while working on this file).
 */

const trials = Number(process.env.STALE_READ_TRIALS ?? 10_000);
const pausedTrials = Math.max(100, Math.round(trials / 10));

let cluster: ReplicatedPostgres;
let app: FastifyInstance;
let standbyClient: pg.Client;
let admin: Account;
const keyPrefix = testKeyPrefix('replicas');

async function deleteRedisKeys(): Promise<void> {
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
}

async function waitFor(what: string, condition: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function replicasReady(): Promise<string | undefined> {
  const res = await app.inject({ method: 'GET', url: '/ready' });
  return res.json().checks.replicas;
}

/** db_replica_reads_total by target, summed over reasons. */
async function readsBy(target: 'replica' | 'primary', reason?: string): Promise<number> {
  const metric = app.metrics.registry.getSingleMetric('db_replica_reads_total');
  assert.ok(metric, 'db_replica_reads_total is registered');
  const { values } = await metric.get();
  return values
    .filter((v) => v.labels.target === target && (reason === undefined || v.labels.reason === reason))
    .reduce((sum, v) => sum + v.value, 0);
}

/** Product trials: PATCH a stock, an anonymous GET (fills the cache), then the writer's GET. */
async function productTrials(
  count: number,
  productId: string,
): Promise<{ stale: number; anonymousStale: number }> {
  let stale = 0;
  let anonymousStale = 0;
  let token: string | undefined;
  for (let i = 1; i <= count; i++) {
    const write = await app.inject({
      method: 'PATCH',
      url: `/api/products/${productId}`,
      headers: { ...bearer(admin.accessToken), ...(token === undefined ? {} : { [readAfterHeader]: token }) },
      payload: { stock: 1000 + i },
    });
    assert.equal(write.statusCode, 200, write.body);
    token = String(write.headers[readAfterHeader]);
    const anonymous = await app.inject({ method: 'GET', url: `/api/products/${productId}` });
    assert.equal(anonymous.statusCode, 200, anonymous.body);
    if (anonymous.json().stock !== 1000 + i) anonymousStale += 1;
    const read = await app.inject({
      method: 'GET',
      url: `/api/products/${productId}`,
      headers: { [readAfterHeader]: token },
    });
    assert.equal(read.statusCode, 200, read.body);
    if (read.json().stock !== 1000 + i) stale += 1;
  }
  return { stale, anonymousStale };
}

/** Order trials: place an order, then list your orders (newest first): it must be there. */
async function orderTrials(count: number, customer: Account, productId: string): Promise<number> {
  let stale = 0;
  for (let i = 0; i < count; i++) {
    const placed = await app.inject({
      method: 'POST',
      url: '/api/orders',
      headers: bearer(customer.accessToken),
      payload: { items: [{ productId, quantity: 1 }] },
    });
    assert.equal(placed.statusCode, 201, placed.body);
    const list = await app.inject({
      method: 'GET',
      url: '/api/orders?limit=1',
      headers: {
        ...bearer(customer.accessToken),
        [readAfterHeader]: String(placed.headers[readAfterHeader]),
      },
    });
    assert.equal(list.statusCode, 200, list.body);
    if (list.json().items[0]?.id !== placed.json().id) stale += 1;
  }
  return stale;
}

describe('read replicas: routing and read-your-writes', { skip: await skipUnless('redis') }, () => {
  before(async () => {
    cluster = await startReplicatedPostgres();
    const admin0 = new pg.Client({ connectionString: cluster.primaryUrl() });
    await admin0.connect();
    await admin0.query('CREATE DATABASE shipshape');
    await admin0.end();
    await cluster.waitForCatchUp();
    app = await buildApp(
      testConfig({
        DATABASE_URL: cluster.primaryUrl('shipshape'),
        DATABASE_MIGRATE_ON_START: 'true',
        DATABASE_REPLICA_URLS: cluster.standby.url('shipshape'),
        DATABASE_REPLICA_CHECK_INTERVAL_MS: '200',
        // Tests here hold the replica a little behind on purpose and need it in use meanwhile, on
        // a loaded machine too; the time-lag limit itself is tested in replica-health.test.ts.
        DATABASE_REPLICA_MAX_LAG_SECONDS: '60',
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: keyPrefix,
      }),
    );
    await app.ready();
    await waitFor('the replica in use', async () => (await replicasReady()) === 'up');
    standbyClient = new pg.Client({ connectionString: cluster.standby.url('shipshape') });
    // The standby is killed in one test: its connection then ends with an error, expectedly.
    standbyClient.on('error', () => {});
    await standbyClient.connect();
    admin = await createAdmin(app);
  });

  after(async () => {
    await standbyClient?.end().catch(() => {});
    await app?.close();
    cluster?.destroy();
    await deleteRedisKeys();
  });

  test(`${trials} write-then-read trials with replay running: 0 stale, and the replica serves`, async () => {
    // Four product clients and four order clients side by side (each client's trials are
    // sequential: a write, then its reads), each with a product of its own — an order takes stock,
    // which a product trial reads back: the primary and the replica see concurrent writes and
    // reads, as in service, and the run takes less of CI's time than one client would.
    const lanes = 4;
    const sizes = (total: number) =>
      Array.from({ length: lanes }, (_, i) => Math.floor(total / lanes) + (i < total % lanes ? 1 : 0));
    const createProducts = () =>
      Promise.all(Array.from({ length: lanes }, () => createProduct(app, admin, { stock: 1_000_000_000 })));
    const products = await createProducts();
    const ordered = await createProducts();
    const customers = await Promise.all(Array.from({ length: lanes }, () => registerUser(app)));
    const replicaBefore = await readsBy('replica');
    const started = Date.now();
    const [productResults, orderResults] = await Promise.all([
      Promise.all(sizes(Math.ceil(trials / 2)).map((n, i) => productTrials(n, products[i]?.id ?? ''))),
      Promise.all(
        sizes(Math.floor(trials / 2)).map((n, i) =>
          orderTrials(n, customers[i] as Account, ordered[i]?.id ?? ''),
        ),
      ),
    ]);
    const product = {
      stale: productResults.reduce((sum, r) => sum + r.stale, 0),
      anonymousStale: productResults.reduce((sum, r) => sum + r.anonymousStale, 0),
    };
    const orders = orderResults.reduce((sum, n) => sum + n, 0);
    const seconds = (Date.now() - started) / 1000;
    const replicaReads = (await readsBy('replica')) - replicaBefore;
    console.log(
      `# ${trials} trials (${lanes} clients at once) in ${seconds.toFixed(1)} s: product stale ${product.stale}, anonymous stale ${product.anonymousStale}, order stale ${orders}; reads on the replica ${replicaReads}, primary fallbacks after waiting ${await readsBy('primary', 'behind')}`,
    );
    assert.equal(product.stale, 0, 'the writer always reads its product write');
    assert.equal(orders, 0, 'the customer always sees the order just placed');
    assert.equal(product.anonymousStale, 0, 'a cache refill never stores what the replica had not replayed');
    assert.ok(replicaReads > trials / 2, `most trial reads ran on the replica (${replicaReads})`);

    // They really reach the standby: its own view of its sessions.
    const { rows } = await standbyClient.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'shipshape-replica-read' AND datname = 'shipshape'",
    );
    assert.ok((rows[0]?.n ?? 0) > 0, 'the standby has the service’s read sessions');
  });

  test('control: reading the replica directly right after a committed write is often stale', async () => {
    const product = await createProduct(app, admin, { stock: 1 });
    await cluster.waitForCatchUp();
    // The write as the service commits it (autocommit on the primary), the read straight from the
    // standby with no position check: what the trials above would see without the gate.
    const primaryClient = new pg.Client({ connectionString: cluster.primaryUrl('shipshape') });
    await primaryClient.connect();
    let stale = 0;
    let count = 0;
    const deadline = Date.now() + 30_000;
    try {
      // Until a few stale reads were seen (a loaded machine makes them rarer), within bounds.
      for (let i = 1; i <= 2000 && stale < 20 && Date.now() < deadline; i++) {
        count = i;
        await primaryClient.query('UPDATE products SET stock = $1 WHERE id = $2', [i, product.id]);
        const { rows } = await standbyClient.query<{ stock: number }>(
          'SELECT stock FROM products WHERE id = $1',
          [product.id],
        );
        if (rows[0]?.stock !== i) stale += 1;
      }
    } finally {
      await primaryClient.end();
    }
    console.log(`# control: ${stale} of ${count} direct replica reads were stale`);
    assert.ok(stale > 0, 'the trials would catch a router that ignored the write position');
  });

  test(`replay paused: ${pausedTrials} trials, 0 stale, every read from the primary`, async () => {
    const product = await createProduct(app, admin, { stock: 1 });
    const customer = await registerUser(app);
    await cluster.waitForCatchUp();
    await cluster.pauseReplay();
    try {
      const caughtUpBefore = await readsBy('replica', 'caught_up');
      const products = await productTrials(Math.ceil(pausedTrials / 2), product.id);
      const orders = await orderTrials(Math.floor(pausedTrials / 2), customer, product.id);
      assert.equal(products.stale + products.anonymousStale + orders, 0, 'no stale read with replay paused');
      assert.equal(
        (await readsBy('replica', 'caught_up')) - caughtUpBefore,
        0,
        'no read needing a write was served by the paused replica',
      );
      // The check has noticed: /ready and the metrics say the primary serves every read.
      await waitFor('the paused replica to be skipped', async () => (await replicasReady()) === 'degraded');
      const metrics = await app.metrics.registry.metrics();
      assert.match(metrics, /^db_replica_serving 0$/m);
      assert.match(metrics, /^db_replica_up\{replica="127\.0\.0\.1:\d+"\} 0$/m);
      const noReplicaBefore = await readsBy('primary', 'no_replica');
      const res = await app.inject({
        method: 'GET',
        url: '/api/orders',
        headers: bearer(customer.accessToken),
      });
      assert.equal(res.statusCode, 200);
      assert.equal((await readsBy('primary', 'no_replica')) - noReplicaBefore, 1);
    } finally {
      await cluster.resumeReplay();
    }
    await waitFor('the replica back in use', async () => (await replicasReady()) === 'up');
  });

  test('another device of the same user sees its write (position kept per user in Redis)', async () => {
    const product = await createProduct(app, admin, { stock: 1000 });
    const customer = await registerUser(app);
    await cluster.waitForCatchUp();
    // Replay runs, 400 ms late: the replica stays in use (well within the lag limits) but is behind.
    await standbyClient.query("ALTER SYSTEM SET recovery_min_apply_delay = '400ms'");
    await standbyClient.query('SELECT pg_reload_conf()');
    try {
      let missingOnReplica = 0;
      for (let i = 0; i < 5; i++) {
        const placed = await app.inject({
          method: 'POST',
          url: '/api/orders',
          headers: bearer(customer.accessToken),
          payload: { items: [{ productId: product.id, quantity: 1 }] },
        });
        assert.equal(placed.statusCode, 201);
        const { rows } = await standbyClient.query('SELECT 1 FROM orders WHERE id = $1', [placed.json().id]);
        if (rows.length === 0) missingOnReplica += 1;
        // The other device: the same bearer token, no position token of its own.
        const list = await app.inject({
          method: 'GET',
          url: '/api/orders?limit=1',
          headers: bearer(customer.accessToken),
        });
        assert.equal(list.json().items[0]?.id, placed.json().id, 'the other device sees the order');
      }
      assert.ok(missingOnReplica > 0, 'the replica was behind when the other device read');
    } finally {
      await standbyClient.query('ALTER SYSTEM RESET recovery_min_apply_delay');
      await standbyClient.query('SELECT pg_reload_conf()');
    }
  });

  test('the position token alone keeps the writer fresh, as a header and as a cookie; without it the lagging replica serves (the control)', async () => {
    const product = await createProduct(app, admin, { stock: 1000 });
    const customer = await registerUser(app);
    await cluster.waitForCatchUp();
    // Replay runs 2 s late: the replica stays in use (well within the lag limits) but is behind.
    await standbyClient.query("ALTER SYSTEM SET recovery_min_apply_delay = '2s'");
    await standbyClient.query('SELECT pg_reload_conf()');
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
    try {
      const stale = { header: 0, cookie: 0, none: 0 };
      for (let i = 0; i < 4; i++) {
        for (const via of ['header', 'cookie', 'none'] as const) {
          const placed = await app.inject({
            method: 'POST',
            url: '/api/orders',
            headers: bearer(customer.accessToken),
            payload: { items: [{ productId: product.id, quantity: 1 }] },
          });
          assert.equal(placed.statusCode, 201, placed.body);
          const token = String(placed.headers[readAfterHeader]);
          // Only the token may carry the position: the user's own key (another device's path) goes.
          await redis.del(`${keyPrefix}rw:${customer.user.id}`);
          const list = await app.inject({
            method: 'GET',
            url: '/api/orders?limit=1',
            headers: {
              ...bearer(customer.accessToken),
              ...(via === 'header' ? { [readAfterHeader]: token } : {}),
              ...(via === 'cookie' ? { cookie: `theme=dark; ${readAfterCookie}=${token}` } : {}),
            },
          });
          assert.equal(list.statusCode, 200, list.body);
          if (list.json().items[0]?.id !== placed.json().id) stale[via] += 1;
        }
      }
      assert.equal(stale.header, 0, 'the header');
      assert.equal(stale.cookie, 0, 'the cookie');
      assert.ok(
        stale.none > 0,
        `without a token the replica served lists without the order (${stale.none} of 4)`,
      );
    } finally {
      redis.disconnect();
      await standbyClient.query('ALTER SYSTEM RESET recovery_min_apply_delay');
      await standbyClient.query('SELECT pg_reload_conf()');
    }
  });

  test('a forged or tampered position token is ignored', async () => {
    const product = await createProduct(app, admin, { stock: 5 });
    const write = await app.inject({
      method: 'PATCH',
      url: `/api/products/${product.id}`,
      headers: bearer(admin.accessToken),
      payload: { stock: 6 },
    });
    const token = String(write.headers[readAfterHeader]);
    assert.match(token, /^[0-9a-f]{16}\.[A-Za-z0-9_-]{22}$/);
    assert.match(
      String(write.headers['set-cookie']),
      /shipshape-read-after=.+; HttpOnly; Secure; SameSite=Lax/,
    );
    const behindBefore = await readsBy('primary', 'behind');
    const forged = `ffffffffffffffff.${token.slice(17)}`;
    const res = await app.inject({
      method: 'GET',
      url: '/api/products?limit=5',
      headers: { [readAfterHeader]: forged },
    });
    assert.equal(res.statusCode, 200);
    assert.equal(
      await readsBy('primary', 'behind'),
      behindBefore,
      'a forged position never makes a read wait',
    );
  });

  test('the standby killed under load: 0 failed requests, then back in use', async () => {
    const customer = await registerUser(app);
    const product = await createProduct(app, admin, { stock: 1000 });
    await app.inject({
      method: 'POST',
      url: '/api/orders',
      headers: bearer(customer.accessToken),
      payload: { items: [{ productId: product.id, quantity: 1 }] },
    });
    await cluster.waitForCatchUp();
    const failures: string[] = [];
    let requests = 0;
    let stop = false;
    const worker = async (n: number) => {
      for (let i = 0; !stop; i++) {
        // Uncached reads that need no freshness: each goes to the replica while it is in use.
        const res =
          i % 2 === 0
            ? await app.inject({ method: 'GET', url: '/api/orders', headers: bearer(customer.accessToken) })
            : await app.inject({ method: 'GET', url: `/api/products?q=${n}x${i}` });
        requests += 1;
        if (res.statusCode !== 200) failures.push(`${res.statusCode} ${res.body}`);
      }
    };
    const workers = Array.from({ length: 6 }, (_, n) => worker(n));
    await sleep(500);
    const replicaBefore = await readsBy('replica');
    cluster.standby.kill();
    await waitFor('the killed replica to be skipped', async () => (await replicasReady()) === 'degraded');
    await sleep(300);
    stop = true;
    await Promise.all(workers);
    console.log(`# standby killed under load: ${requests} requests, ${failures.length} failed`);
    assert.deepEqual(failures, [], 'no request failed');
    assert.ok(replicaBefore > 0);
    cluster.standby.start();
    await waitFor('the restarted replica in use', async () => (await replicasReady()) === 'up');
    const before = await readsBy('replica');
    const res = await app.inject({
      method: 'GET',
      url: '/api/orders',
      headers: bearer(customer.accessToken),
    });
    assert.equal(res.statusCode, 200);
    assert.equal((await readsBy('replica')) - before, 1, 'reads go back to the replica');
  });
  test('the primary killed while the replica misses the last write: catalog reads go on from the replica, uncached; a read-your-writes read answers 503', async () => {
    const product = await createProduct(app, admin, { stock: 500 });
    await cluster.waitForCatchUp();
    const cached = await app.inject({ method: 'GET', url: `/api/products/${product.id}` });
    assert.equal(cached.json().stock, 500);
    // The standby streams but applies nothing for an hour: still in recovery, streaming, not
    // paused, so in use (within the 60 s lag limit), and behind every later write (as when the
    // primary dies before the standby applied its last commits, seen in the chaos suite). A standby
    // whose WAL receiver stopped would be skipped at once while the primary answers (decision 0119).
    const standby = new pg.Client({ connectionString: cluster.standby.url('shipshape') });
    standby.on('error', () => {});
    await standby.connect();
    const setApplyDelay = async (value: string | undefined) => {
      await standby.query(
        value === undefined
          ? 'ALTER SYSTEM RESET recovery_min_apply_delay'
          : `ALTER SYSTEM SET recovery_min_apply_delay = ${standby.escapeLiteral(value)}`,
      );
      await standby.query('SELECT pg_reload_conf()');
    };
    let crashed = false;
    try {
      await setApplyDelay('1h');
      await waitFor('the delay in effect on the standby', async () => {
        const { rows } = await standby.query<{ delay: string }>(
          "SELECT current_setting('recovery_min_apply_delay') AS delay",
        );
        return rows[0]?.delay === '1h';
      });
      // A write the standby will not have: it invalidates the product with a floor past its replay.
      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/products/${product.id}`,
        headers: bearer(admin.accessToken),
        payload: { stock: 400 },
      });
      assert.equal(patched.statusCode, 200, patched.body);
      const token = String(patched.headers[readAfterHeader]);
      const missing = await standby.query('SELECT stock FROM products WHERE id = $1', [product.id]);
      assert.equal(missing.rows[0]?.stock, 500, 'the standby has not applied the write');
      assert.equal(await replicasReady(), 'up', 'the replica is still in use');
      crashed = true;
      await cluster.primary.crash();
      const staleBefore = await readsBy('replica', 'primary_unreachable');
      for (let i = 0; i < 3; i++) {
        const one = await app.inject({ method: 'GET', url: `/api/products/${product.id}` });
        assert.equal(one.statusCode, 200, `product read ${i} with the primary down: ${one.body}`);
        assert.equal(one.json().stock, 500, "the replica's answer: the write it has not replayed is missing");
        const list = await app.inject({ method: 'GET', url: `/api/products?q=${product.sku}` });
        assert.equal(list.statusCode, 200, `catalog page ${i} with the primary down: ${list.body}`);
      }
      assert.ok(
        (await readsBy('replica', 'primary_unreachable')) - staleBefore >= 6,
        'served by the replica because the primary was unreachable',
      );
      // A read that must see the writer's own write is never given the older answer.
      const own = await app.inject({
        method: 'GET',
        url: '/api/orders',
        headers: { ...bearer(admin.accessToken), [readAfterHeader]: token },
      });
      assert.equal(own.statusCode, 503, own.body);
      assert.ok(own.headers['retry-after'], 'with Retry-After');
    } finally {
      // Only if it was crashed: a restart of a running server fails and hides the test's own error.
      if (crashed) await cluster.primary.restart();
      await setApplyDelay(undefined);
      await standby.end();
    }
    await cluster.waitForCatchUp();
    await waitFor('the replica in use', async () => (await replicasReady()) === 'up');
    // Nothing older was cached: the first read after the outage shows the write.
    const after = await app.inject({ method: 'GET', url: `/api/products/${product.id}` });
    assert.equal(after.statusCode, 200, after.body);
    assert.equal(after.json().stock, 400, 'the stale answer was not cached');
  });
});
