import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../harness/postgres.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../harness/redis.js';
import { skipUnless } from '../harness/services.js';
import { buildTestApp, engines, skipEngine } from '../helper.js';

async function eventually(
  app: FastifyInstance,
  url: string,
  accept: (res: LightMyRequestResponse) => boolean,
  timeoutMs = 10_000,
): Promise<LightMyRequestResponse> {
  const deadline = Date.now() + timeoutMs;
  let res = await app.inject({ url });
  while (!accept(res) && Date.now() < deadline) {
    await sleep(100);
    res = await app.inject({ url });
  }
  return res;
}

for (const engine of engines) {
  describe(`health and readiness on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    before(async () => {
      app = await buildTestApp({ engine });
    });
    after(() => app?.close());

    test('/health: liveness in the guide’s shape', async () => {
      const res = await app.inject({ url: '/health' });
      assert.equal(res.statusCode, 200);
      const body = res.json();
      assert.deepEqual(Object.keys(body).sort(), ['status', 'timestamp', 'uptime']);
      assert.equal(body.status, 'healthy');
      assert.ok(!Number.isNaN(Date.parse(body.timestamp)));
      assert.equal(typeof body.uptime, 'number');
    });

    test('/ready: database and in-process cache up', async () => {
      const res = await app.inject({ url: '/ready' });
      assert.equal(res.statusCode, 200);
      assert.deepEqual(res.json(), { status: 'ready', checks: { database: 'up', cache: 'up' } });
    });
  });
}

describe('readiness with PostgreSQL and Redis', { skip: await skipEngine('postgres', 'redis') }, () => {
  test('both up', async () => {
    const app = await buildTestApp({ engine: 'postgres', redis: true });
    try {
      const res = await app.inject({ url: '/ready' });
      assert.deepEqual(res.json(), { status: 'ready', checks: { database: 'up', cache: 'up' } });
    } finally {
      await app.close();
    }
  });
});

describe('readiness when Redis goes away', { skip: await skipUnless('redis') }, () => {
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

  test('cache down → still ready, cache degraded; back → up, by itself', async () => {
    assert.equal((await app.inject({ url: '/ready' })).json().checks.cache, 'up');
    await redis.stop();
    const degraded = await eventually(app, '/ready', (r) => r.json().checks.cache === 'degraded');
    assert.equal(degraded.statusCode, 200);
    assert.deepEqual(degraded.json(), { status: 'ready', checks: { database: 'up', cache: 'degraded' } });
    await redis.start();
    const recovered = await eventually(app, '/ready', (r) => r.json().checks.cache === 'up');
    assert.equal(recovered.json().checks.cache, 'up');
  });

  test('a paused (hung) Redis is reported degraded quickly, not after a long timeout', async () => {
    redis.pause();
    try {
      const started = Date.now();
      const res = await app.inject({ url: '/ready' });
      assert.equal(res.json().checks.cache, 'degraded');
      assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
    } finally {
      redis.resume();
    }
  });
});

describe('readiness when PostgreSQL goes away', { skip: await skipUnless('postgres') }, () => {
  let pg: ThrowawayPostgres;
  let app: FastifyInstance;
  before(async () => {
    pg = await startThrowawayPostgres();
    app = await buildTestApp({
      env: { DATABASE_URL: pg.url, DATABASE_MIGRATE_ON_START: 'true', DATABASE_CONNECT_TIMEOUT_MS: '1000' },
      extend: (instance) => {
        instance.get('/test/db', async () => {
          await sql`select 1`.execute(instance.database.db);
          return { ok: true };
        });
      },
    });
  });
  after(async () => {
    await app?.close();
    pg?.destroy();
  });

  test('database down → 503 unavailable, requests that need it → 503, never 500; back → ready', async () => {
    assert.equal((await app.inject({ url: '/ready' })).statusCode, 200);
    pg.stop();
    const down = await eventually(app, '/ready', (r) => r.statusCode === 503);
    assert.equal(down.statusCode, 503);
    assert.deepEqual(down.json(), {
      status: 'unavailable',
      checks: { database: 'down', cache: 'up' },
      reason: 'database unreachable',
    });
    const query = await app.inject({ url: '/test/db' });
    assert.equal(query.statusCode, 503);
    assert.equal(query.json().code, 'SERVICE_UNAVAILABLE');
    assert.equal(query.headers['retry-after'], '1');
    pg.start();
    const up = await eventually(app, '/ready', (r) => r.statusCode === 200);
    assert.equal(up.statusCode, 200);
    assert.equal((await app.inject({ url: '/test/db' })).statusCode, 200);
  });
});

describe('readiness while shutting down', () => {
  test('503, and every response asks the client to close the connection', async () => {
    const app = await buildTestApp();
    try {
      assert.equal((await app.inject({ url: '/health' })).headers.connection, 'keep-alive');
      app.lifecycle.beginShutdown();
      const ready = await app.inject({ url: '/ready' });
      assert.equal(ready.statusCode, 503);
      assert.equal(ready.json().reason, 'shutting down');
      assert.equal(ready.headers.connection, 'close');
      const health = await app.inject({ url: '/health' });
      assert.equal(health.statusCode, 200, 'liveness is unaffected');
      assert.equal(health.headers.connection, 'close');
    } finally {
      await app.close();
    }
  });
});
