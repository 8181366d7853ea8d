import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createMemoryCounterStore } from '../../src/infra/rate-limit/counter-store.js';
import { createLoginLockout } from '../../src/modules/auth/lockout.js';
import { skipUnless } from '../harness/services.js';
import { buildTestApp, testConfig, testDatabaseEnv, testKeyPrefix } from '../helper.js';
import { login, registerUser, uniqueName } from '../support/accounts.js';

const lockoutEnv = {
  LOGIN_MAX_FAILURES: '3',
  LOGIN_LOCKOUT_BASE_SECONDS: '30',
  LOGIN_LOCKOUT_MAX_SECONDS: '90',
};

describe('login lockout', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildTestApp({ env: lockoutEnv });
  });
  after(() => app?.close());

  test('after repeated failures: 429 with Retry-After, even with the right password', async () => {
    const account = await registerUser(app);
    for (let i = 0; i < 3; i++)
      assert.equal((await login(app, account.email, 'wrong password')).statusCode, 401);
    const locked = await login(app, account.email, account.password);
    assert.equal(locked.statusCode, 429);
    assert.equal(locked.json().code, 'RATE_LIMITED');
    const retryAfter = Number(locked.headers['retry-after']);
    assert.ok(retryAfter > 25 && retryAfter <= 30, String(retryAfter));
    // By username too: the lock is on the account as typed, whichever identifier is used.
    assert.equal((await login(app, account.email.toUpperCase(), account.password)).statusCode, 429);
  });

  test('an unknown account locks exactly like a real one (no enumeration through lockout)', async () => {
    const ghost = `${uniqueName()}@example.com`;
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push((await login(app, ghost, 'whatever password')).statusCode);
    assert.deepEqual(answers, [401, 401, 401, 429]);
  });

  test('a success clears the failures', async () => {
    const account = await registerUser(app);
    await login(app, account.email, 'wrong password');
    await login(app, account.email, 'wrong password');
    assert.equal((await login(app, account.email, account.password)).statusCode, 200);
    await login(app, account.email, 'wrong password');
    await login(app, account.email, 'wrong password');
    assert.equal((await login(app, account.email, account.password)).statusCode, 200);
  });

  test('lockouts grow, and are capped', async () => {
    let now = 0;
    const counters = createMemoryCounterStore(1000, () => now);
    const lockout = createLoginLockout(counters, testConfig(lockoutEnv).auth);
    const lockOnce = async () => {
      let seconds = 0;
      for (let i = 0; i < 3; i++) seconds = await lockout.recordFailure('victim@example.com');
      return seconds;
    };
    assert.equal(await lockOnce(), 30);
    assert.equal(await lockout.lockedFor('victim@example.com'), 30);
    now += 30_000;
    assert.equal(await lockout.lockedFor('victim@example.com'), 0);
    assert.equal(await lockOnce(), 60);
    now += 60_000;
    assert.equal(await lockOnce(), 90, 'capped at LOGIN_LOCKOUT_MAX_SECONDS');
    now += 90_000;
    assert.equal(await lockOnce(), 90);
  });

  test('timing: an unknown login costs about as much as a wrong password', async () => {
    const timed = await buildTestApp({
      env: { ARGON2_MEMORY_KIB: '19456', ARGON2_ITERATIONS: '2', LOGIN_MAX_FAILURES: '1000' },
    });
    try {
      const account = await registerUser(timed);
      const ghost = `${uniqueName()}@example.com`;
      const time = async (name: string) => {
        const started = performance.now();
        await login(timed, name, 'not the password at all');
        return performance.now() - started;
      };
      await time(account.email);
      await time(ghost);
      // Interleaved, so load from whatever else runs on the machine hits both sides alike.
      const known: number[] = [];
      const unknown: number[] = [];
      for (let i = 0; i < 15; i++) {
        known.push(await time(account.email));
        unknown.push(await time(ghost));
      }
      const median = (values: number[]) => [...values].sort((a, b) => a - b)[7] ?? 0;
      const ratio = median(unknown) / median(known);
      assert.ok(
        ratio > 0.5 && ratio < 2,
        `median unknown ${median(unknown).toFixed(1)} ms vs known ${median(known).toFixed(1)} ms`,
      );
    } finally {
      await timed.close();
    }
  });
});

describe('per-IP limit on auth routes', () => {
  test('strict, separate from the general API limit, with RateLimit headers', async () => {
    const app = await buildTestApp({ env: { AUTH_RATE_LIMIT_MAX: '3', RATE_LIMIT_MAX: '1000' } });
    try {
      const attempt = () =>
        app.inject({
          method: 'POST',
          url: '/api/auth/login',
          remoteAddress: '198.51.100.7',
          payload: { login: `${uniqueName()}@example.com`, password: 'x' },
        });
      for (let i = 0; i < 3; i++) {
        const res = await attempt();
        assert.equal(res.statusCode, 401);
        assert.equal(res.headers['ratelimit-limit'], '3');
      }
      const limited = await attempt();
      assert.equal(limited.statusCode, 429);
      assert.ok(Number(limited.headers['retry-after']) > 0);
      // Registration shares the auth budget; the rest of the API does not.
      const register = await app.inject({
        method: 'POST',
        url: '/api/auth/register',
        remoteAddress: '198.51.100.7',
        payload: {
          email: `${uniqueName()}@example.com`,
          username: uniqueName(),
          password: 'a fine password here',
        },
      });
      assert.equal(register.statusCode, 429);
      const other = await app.inject({ url: '/api/users/me', remoteAddress: '198.51.100.7' });
      assert.equal(other.statusCode, 401);
    } finally {
      await app.close();
    }
  });
});

describe('lockout shared through Redis', { skip: await skipUnless('redis') }, () => {
  test('failures on one instance lock the account on another', async () => {
    const database = await testDatabaseEnv('sqlite');
    const env = {
      ...lockoutEnv,
      ...database.env,
      REDIS_KEY_PREFIX: testKeyPrefix('lock'),
    };
    const a = await buildTestApp({ redis: true, env });
    const b = await buildTestApp({ redis: true, env });
    try {
      const account = await registerUser(a);
      await login(a, account.email, 'wrong password');
      await login(b, account.email, 'wrong password');
      await login(a, account.email, 'wrong password');
      assert.equal((await login(b, account.email, account.password)).statusCode, 429);
    } finally {
      await a.close();
      await b.close();
      await database.cleanup();
    }
  });
});
