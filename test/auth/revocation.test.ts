import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { migrateToLatest } from '../../src/db/migrator.js';
import { createDatabase } from '../../src/infra/database.js';
import { createRevocationList } from '../../src/modules/auth/revocations.js';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../harness/postgres.js';
import { skipUnless } from '../harness/services.js';
import {
  buildTestApp,
  captureLogs,
  skipEngine,
  type TestDatabaseEnv,
  testConfig,
  testDatabaseEnv,
} from '../helper.js';
import { bearer, login, registerUser } from '../support/accounts.js';

/** Milliseconds until `check` holds, polling every 20 ms; fails after `limitMs`. */
async function within(limitMs: number, check: () => Promise<boolean>): Promise<number> {
  const started = performance.now();
  while (!(await check())) {
    if (performance.now() - started > limitMs) assert.fail(`not within ${limitMs} ms`);
    await sleep(20);
  }
  return performance.now() - started;
}

describe('revocation reaches access tokens on every instance', {
  skip: await skipEngine('postgres', 'redis'),
}, () => {
  let shared: TestDatabaseEnv;
  let a: FastifyInstance;
  let b: FastifyInstance;
  before(async () => {
    shared = await testDatabaseEnv('postgres');
    a = await buildTestApp({ redis: true, env: shared.env });
    b = await buildTestApp({ redis: true, env: shared.env });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await shared?.cleanup();
  });

  const status = async (app: FastifyInstance, token: string) =>
    (await app.inject({ url: '/api/users/me', headers: bearer(token) })).statusCode;

  test('logout-all on one instance: the old access token is refused on the other within 1 s', async () => {
    const account = await registerUser(a);
    assert.equal(await status(b, account.accessToken), 200, 'instance B accepts the token first');
    const res = await a.inject({
      method: 'POST',
      url: '/api/auth/logout-all',
      headers: bearer(account.accessToken),
    });
    assert.equal(res.statusCode, 204);
    assert.equal(await status(a, account.accessToken), 401, 'at once on the revoking instance');
    const took = await within(1000, async () => (await status(b, account.accessToken)) === 401);
    console.log(`revocation reached the second instance in ${took.toFixed(0)} ms`);
  });

  test('a refresh-token reuse detected on one instance kills the family on the other', async () => {
    const account = await registerUser(a);
    const first = (await login(a, account.email, account.password)).json();
    const rotated = (
      await b.inject({
        method: 'POST',
        url: '/api/auth/refresh',
        payload: { refreshToken: first.refreshToken },
      })
    ).json();
    assert.equal(await status(b, rotated.accessToken), 200);
    const reuse = await a.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      payload: { refreshToken: first.refreshToken },
    });
    assert.equal(reuse.statusCode, 401);
    await within(1000, async () => (await status(b, rotated.accessToken)) === 401);
  });

  test('an admin demoting a user ends their sessions everywhere, so no token keeps the old role', async () => {
    const account = await registerUser(a);
    const { createAdmin } = await import('../support/accounts.js');
    const admin = await createAdmin(a);
    await a.database.db
      .updateTable('users')
      .set({ role: 'admin' })
      .where('id', '=', account.user.id)
      .execute();
    const promoted = (await login(a, account.email, account.password)).json();
    assert.equal(
      (await b.inject({ url: '/api/users', headers: bearer(promoted.accessToken) })).statusCode,
      200,
    );
    const demote = await a.inject({
      method: 'PATCH',
      url: `/api/users/${account.user.id}`,
      headers: bearer(admin.accessToken),
      payload: { role: 'customer' },
    });
    assert.equal(demote.statusCode, 200);
    assert.equal(demote.json().role, 'customer');
    await within(
      1000,
      async () =>
        (await b.inject({ url: '/api/users', headers: bearer(promoted.accessToken) })).statusCode === 401,
    );
  });
});

describe('revocation in a single process on SQLite', () => {
  test('immediate', async () => {
    const app = await buildTestApp();
    try {
      const account = await registerUser(app);
      await app.inject({ method: 'POST', url: '/api/auth/logout-all', headers: bearer(account.accessToken) });
      assert.equal(
        (await app.inject({ url: '/api/users/me', headers: bearer(account.accessToken) })).statusCode,
        401,
      );
    } finally {
      await app.close();
    }
  });
});

describe('the revocation list fails closed', { skip: await skipUnless('postgres') }, () => {
  let pg: ThrowawayPostgres;
  before(async () => {
    pg = await startThrowawayPostgres();
  });
  after(() => pg?.destroy());

  test('while its database is unreachable, authenticated requests get 503, never a pass', async () => {
    const app = await buildTestApp({
      env: { DATABASE_URL: pg.url, DATABASE_MIGRATE_ON_START: 'true', DATABASE_CONNECT_TIMEOUT_MS: '500' },
    });
    try {
      const account = await registerUser(app);
      assert.equal(
        (await app.inject({ url: '/api/users/me', headers: bearer(account.accessToken) })).statusCode,
        200,
      );
      pg.stop();
      // Once the list is stale it cannot vouch for the token, and the direct check fails too.
      await within(5000, async () => {
        const res = await app.inject({ url: '/api/auth/sessions', headers: bearer(account.accessToken) });
        return res.statusCode === 503;
      });
      pg.start();
      await within(10_000, async () => {
        const res = await app.inject({ url: '/api/users/me', headers: bearer(account.accessToken) });
        return res.statusCode === 200;
      });
    } finally {
      await app.close();
    }
  });

  test('stale list → "unknown"; fresh poll → live; marked → revoked', async () => {
    const database = await testDatabaseEnv('sqlite');
    const handle = createDatabase(testConfig(database.env).database, captureLogs().logger);
    try {
      await migrateToLatest(handle.db, handle.engine);
      let now = 0;
      const list = createRevocationList(handle.db, captureLogs().logger, {
        engine: handle.engine,
        retentionMs: 60_000,
        monotonicNow: () => now,
      });
      assert.equal(list.status('s-1'), 'unknown', 'before the first poll');
      await list.start();
      assert.equal(list.status('s-1'), 'live');
      list.markRevoked([{ id: 's-1', revoked_at: new Date().toISOString() }]);
      assert.equal(list.status('s-1'), 'revoked');
      await list.stop();
      now += 1000;
      assert.equal(list.status('s-2'), 'unknown', 'no poll for a second');
    } finally {
      await handle.close();
      await database.cleanup();
    }
  });
});
