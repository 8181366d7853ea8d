import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { redisUrl } from '../harness/services.js';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { buildTestApp, buildTwoInstances, cacheCounts, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, login, registerUser, tokenIn } from '../support/accounts.js';

/**
 * `GET /api/users/me` from the cache (decision 0112): where every process sees every write — Redis,
 * or one SQLite file — a warm read does not touch the database, and every write to the account
 * through the service shows in the next read, on this instance and on another. The in-process cache
 * on PostgreSQL is per process (PM2 runs several), so there `/me` reads the database every time.
 */

const userLoads = async (app: FastifyInstance) => (await cacheCounts(app, 'user')).loads;
const userHits = async (app: FastifyInstance) => (await cacheCounts(app, 'user')).hit;

const me = async (app: FastifyInstance, account: Account) => {
  const res = await app.inject({ url: '/api/users/me', headers: bearer(account.accessToken) });
  assert.equal(res.statusCode, 200, res.body);
  return res.json();
};

const renameDirectly = (app: FastifyInstance, id: string, username: string) =>
  app.database.db.updateTable('users').set({ username }).where('id', '=', id).execute();

for (const engine of engines) {
  for (const backend of ['memory', 'redis'] as const) {
    const cached = backend === 'redis' || engine === 'sqlite';
    const skip = await skipEngine(engine, ...(backend === 'redis' ? (['redis'] as const) : []));
    describe(`GET /me on ${engine} with the ${backend} cache`, { skip }, () => {
      let smtp: TestSmtpServer;
      let app: FastifyInstance;
      before(async () => {
        smtp = await startSmtpServer();
        app = await buildTestApp({
          engine,
          redis: backend === 'redis',
          env: {
            MAIL_SMTP_URL: smtp.url,
            PUBLIC_BASE_URL: 'https://shop.example.test',
            JOBS_POLL_INTERVAL_MS: '100',
            ACCOUNT_MAILS_PER_ADDRESS: '1000',
          },
        });
      });
      after(async () => {
        await app?.close();
        await smtp?.close();
      });

      test(
        cached
          ? 'a warm read does not touch the database'
          : 'no cache: every read goes to the database (another worker’s write would miss a per-process copy)',
        async () => {
          const account = await registerUser(app);
          const first = await me(app, account);
          const loads = await userLoads(app);
          await renameDirectly(app, account.user.id, `${first.username}-direct`);
          for (let i = 0; i < 3; i++) {
            const read = await me(app, account);
            assert.equal(read.username, cached ? first.username : `${first.username}-direct`);
          }
          assert.equal(await userLoads(app), loads, 'no load after the first read');
          if (cached) assert.ok((await userHits(app)) >= 3);
          else assert.equal(await userHits(app), 0);
        },
      );

      test('every write to the account through the service shows in the next read', async () => {
        const since = smtp.received.length;
        const account = await registerUser(app);
        const mail = await smtp.waitForMail(account.email, { since });
        const before = await me(app, account);
        assert.equal(before.emailVerified, false);
        assert.equal(before.lastLoginAt, null);

        const renamed = `${account.username}-2`;
        const patched = await app.inject({
          method: 'PATCH',
          url: '/api/users/me',
          headers: bearer(account.accessToken),
          payload: { username: renamed },
        });
        assert.equal(patched.statusCode, 200, patched.body);
        const afterRename = await me(app, account);
        assert.equal(afterRename.username, renamed);

        const verified = await app.inject({
          method: 'POST',
          url: '/api/auth/verify-email',
          payload: { token: tokenIn(mail, 'verify-email') },
        });
        assert.equal(verified.statusCode, 204, verified.body);
        assert.equal((await me(app, account)).emailVerified, true);

        // Another device logs in: the first device's session sees the new login time.
        const other = await login(app, account.email, account.password);
        assert.equal(other.statusCode, 200, other.body);
        const afterLogin = await me(app, account);
        assert.notEqual(afterLogin.lastLoginAt, null);

        const changed = await app.inject({
          method: 'POST',
          url: '/api/users/me/password',
          headers: bearer(account.accessToken),
          payload: { currentPassword: account.password, newPassword: 'a different long passphrase' },
        });
        assert.equal(changed.statusCode, 204, changed.body);
        const afterPassword = await me(app, account);
        assert.ok(afterPassword.updatedAt > afterLogin.updatedAt, 'the row changed: updatedAt moved on');

        // An admin's change ends the sessions; the next login's read shows the new role.
        const admin = await createAdmin(app);
        const promoted = await app.inject({
          method: 'PATCH',
          url: `/api/users/${account.user.id}`,
          headers: bearer(admin.accessToken),
          payload: { role: 'admin' },
        });
        assert.equal(promoted.statusCode, 200, promoted.body);
        const again = await login(app, renamed, 'a different long passphrase');
        assert.equal(again.statusCode, 200, again.body);
        assert.equal((await me(app, { ...account, accessToken: again.json().accessToken })).role, 'admin');
      });

      if (backend === 'redis') {
        test('what Redis holds is the answer’s fields only: no password hash', async () => {
          const account = await registerUser(app);
          await me(app, account);
          const client = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
          try {
            await client.connect();
            const entry = await client.get(
              `${app.config.redis.keyPrefix}cache:entry:user:${account.user.id}`,
            );
            if (entry === null) assert.fail('no cache entry for the account in Redis');
            assert.ok(entry.includes(account.username));
            const value = JSON.parse(entry.slice(entry.indexOf('\n') + 1)) as Record<string, unknown>;
            assert.deepEqual(Object.keys(value).sort(), Object.keys(await me(app, account)).sort());
            assert.doesNotMatch(entry, /password|\$argon2|\$scrypt/i);
          } finally {
            client.disconnect();
          }
        });
      }
    });
  }
}

describe('GET /me shared by two instances through Redis', {
  skip: await skipEngine('postgres', 'redis'),
}, () => {
  let a: FastifyInstance;
  let b: FastifyInstance;
  let close: (() => Promise<void>) | undefined;
  before(async () => {
    ({ a, b, close } = await buildTwoInstances('shared-users'));
  });
  after(() => close?.());

  test('a write on one instance is seen by a read on the other at once (rename, login)', async () => {
    const account = await registerUser(a);
    const first = await me(b, account);
    const hits = await userHits(b);
    assert.equal((await me(b, account)).username, first.username);
    assert.equal((await userHits(b)) - hits, 1, 'B serves it from the cache');

    for (let i = 1; i <= 5; i++) {
      const renamed = `${account.username}-${i}`;
      const patched = await a.inject({
        method: 'PATCH',
        url: '/api/users/me',
        headers: bearer(account.accessToken),
        payload: { username: renamed },
      });
      assert.equal(patched.statusCode, 200, patched.body);
      assert.equal((await me(b, account)).username, renamed, `rename ${i} seen on B`);
    }
    const logins: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await login(a, account.email, account.password);
      assert.equal(res.statusCode, 200, res.body);
      const seen = (await me(b, account)).lastLoginAt as string;
      assert.ok(seen !== null && !logins.includes(seen), `login ${i} seen on B`);
      logins.push(seen);
    }
  });
});
