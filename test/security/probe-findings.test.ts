import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildTestApp } from '../helper.js';
import { type Account, bearer, createAdmin, login, registerUser } from '../support/accounts.js';

/**
 * The contract for each Low finding of the security probe of 2026-12-02 (status and code), one test
 * each. The Medium ones have suites of their own: test/auth/clock-skew.test.ts,
 * test/auth/credential-races.test.ts and test/http/connection-limits.test.ts.
 */

describe('security probe 2026-12-02: the smaller findings', () => {
  let app: FastifyInstance;
  let admin: Account;
  before(async () => {
    app = await buildTestApp();
    admin = await createAdmin(app);
  });
  after(() => app?.close());

  test('finding 7: an account’s email and username share one lockout budget', async () => {
    const account = await registerUser(app);
    const statuses: number[] = [];
    for (const name of [account.email, account.email, account.email, account.username, account.username]) {
      statuses.push((await login(app, name, 'not the password at all')).statusCode);
    }
    assert.deepEqual(statuses, [401, 401, 401, 401, 401]);
    const sixth = await login(app, account.username.toUpperCase(), 'still not the password');
    assert.equal(sixth.statusCode, 429, 'the sixth failure across both logins is locked');
    assert.equal(sixth.json().code, 'RATE_LIMITED');
    const right = await login(app, account.email, account.password);
    assert.equal(right.statusCode, 429, 'locked for the email too, even with the right password');
    // An unknown login still has a bucket of its own, and locks the same way.
    const unknown = 'nobody-at-all@example.com';
    for (let i = 0; i < 5; i++) assert.equal((await login(app, unknown, 'whatever pw')).statusCode, 401);
    assert.equal((await login(app, unknown, 'whatever pw')).statusCode, 429);
  });

  test('finding 10: an admin cannot deactivate themselves through DELETE /me', async () => {
    const res = await app.inject({
      method: 'DELETE',
      url: '/api/users/me',
      headers: bearer(admin.accessToken),
    });
    assert.equal(res.statusCode, 409);
    assert.equal(res.json().code, 'CONFLICT');
    const me = await app.inject({ url: '/api/users/me', headers: bearer(admin.accessToken) });
    assert.equal(me.statusCode, 200);
    assert.equal(me.json().isActive, true);
    // A customer still can.
    const customer = await registerUser(app);
    const gone = await app.inject({
      method: 'DELETE',
      url: '/api/users/me',
      headers: bearer(customer.accessToken),
    });
    assert.equal(gone.statusCode, 204);
  });
});
