import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, captureLogs } from '../helper.js';
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

  const cursorOf = (values: unknown[]) => Buffer.from(JSON.stringify(values)).toString('base64url');

  test('finding 5: a cursor holding an impossible date is a 400 on orders and on the admin user list', async () => {
    const customer = await registerUser(app);
    for (const date of ['2026-02-30T00:00:00.000Z', '0000-01-01T00:00:00.000Z', '2026-13-01T00:00:00.000Z']) {
      const cursor = cursorOf([date, '00000000-0000-4000-8000-000000000000']);
      for (const [url, token] of [
        [`/api/orders?cursor=${cursor}`, customer.accessToken],
        [`/api/users?cursor=${cursor}`, admin.accessToken],
      ] as const) {
        const res = await app.inject({ url, headers: bearer(token) });
        assert.equal(res.statusCode, 400, `${url} (${date})`);
        assert.equal(res.json().code, 'VALIDATION_FAILED');
      }
    }
  });

  test('finding 9: a NUL in the admin user search is a 400 naming the parameter', async () => {
    const res = await app.inject({ url: '/api/users?q=a%00b', headers: bearer(admin.accessToken) });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().code, 'VALIDATION_FAILED');
    assert.equal(res.json().errors[0].path, '/querystring/q');
  });

  test('finding 11: what Node’s HTTP parser refuses is problem+json with the security headers and a request id', async () => {
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    const port = Number(new URL(address).port);
    const raw = (text: string) =>
      new Promise<string>((resolve) => {
        let got = '';
        const socket = connect({ host: '127.0.0.1', port }, () => socket.write(text));
        socket.on('data', (chunk) => {
          got += chunk;
        });
        socket.on('error', () => {});
        socket.on('close', () => resolve(got));
      });
    for (const [what, text, status, code] of [
      ['garbage', 'GARBAGE\r\n\r\n', 400, 'VALIDATION_FAILED'],
      [
        '20 KB header',
        `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
        431,
        'HEADERS_TOO_LARGE',
      ],
      ['no Host', 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n', 400, 'VALIDATION_FAILED'],
    ] as const) {
      const answer = await raw(text);
      const [head = '', body = ''] = answer.split('\r\n\r\n');
      assert.match(head, new RegExp(`^HTTP/1\\.1 ${status} `), what);
      assert.match(head, /content-type: application\/problem\+json/i, what);
      assert.match(head, /x-content-type-options: nosniff/i, what);
      assert.match(head, /content-security-policy: default-src 'none'/i, what);
      assert.match(head, /x-request-id: [0-9a-f-]{36}/i, what);
      const parsed = JSON.parse(
        body
          .replace(/^[0-9a-f]+\r\n/, '')
          .replace(/\r\n0\r\n$/, '')
          .trim(),
      );
      assert.equal(parsed.status, status, what);
      assert.equal(parsed.code, code, what);
    }
  });

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

describe('security probe 2026-12-02: PATCH /me shares the auth budget', () => {
  test('finding 6: probing emails through PATCH /me hits the strict auth limit (429)', async () => {
    const app = await buildTestApp({ env: { AUTH_RATE_LIMIT_MAX: '4' } });
    try {
      const account = await registerUser(app);
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await app.inject({
          method: 'PATCH',
          url: '/api/users/me',
          headers: bearer(account.accessToken),
          payload: { email: `probe${i}@example.com` },
        });
        statuses.push(res.statusCode);
      }
      // The registration used one of the four.
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    } finally {
      await app.close();
    }
  });
});

describe('security probe 2026-12-02: /metrics and /docs in production', () => {
  const production = {
    NODE_ENV: 'production',
    ARGON2_MEMORY_KIB: '19456',
    ARGON2_ITERATIONS: '2',
    BCRYPT_COST: '12',
  };

  test('finding 8: /docs is closed in production and an unprotected /metrics is a start-up warning', async () => {
    const logs = captureLogs('warn');
    const app = await buildTestApp({ env: production, logger: logs.logger });
    try {
      for (const url of ['/docs', '/docs/openapi.json']) {
        const res = await app.inject({ url });
        assert.equal(res.statusCode, 404, url);
        assert.equal(res.json().code, 'NOT_FOUND');
      }
    } finally {
      await app.close();
    }
    assert.ok(logs.lines.some((l) => l.event === 'metrics_unprotected' && l.level === 'warn'));
  });

  test('finding 8: with DOCS_ENABLED and METRICS_TOKEN, docs are served and nothing is warned', async () => {
    const logs = captureLogs('warn');
    const app = await buildTestApp({
      env: { ...production, DOCS_ENABLED: 'true', METRICS_TOKEN: 'a-metrics-token-for-tests' },
      logger: logs.logger,
    });
    try {
      assert.equal((await app.inject({ url: '/docs/openapi.json' })).statusCode, 200);
      assert.equal((await app.inject({ url: '/metrics' })).statusCode, 401);
    } finally {
      await app.close();
    }
    assert.ok(!logs.lines.some((l) => l.event === 'metrics_unprotected'));
  });
});

describe('security probe 2026-12-02: worth fixing', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildTestApp();
  });
  after(() => app?.close());

  test('finding 16: two Idempotency-Key headers are a 400', async () => {
    const account = await registerUser(app);
    const res = await app.inject({
      method: 'POST',
      url: '/api/orders',
      headers: { ...bearer(account.accessToken), 'idempotency-key': ['dupA', 'dupB'] },
      payload: { items: [{ productId: '00000000-0000-4000-8000-000000000000', quantity: 1 }] },
    });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().code, 'VALIDATION_FAILED');
    assert.equal(res.json().errors[0].path, '/headers/idempotency-key');
  });

  test('finding 19: two refresh-token cookies are refused', async () => {
    const account = await registerUser(app);
    const cookie = `__Secure-refresh-token=${account.refreshToken}; __Secure-refresh-token=${account.refreshToken}`;
    for (const url of ['/api/auth/refresh', '/api/auth/logout']) {
      const res = await app.inject({ method: 'POST', url, headers: { cookie } });
      assert.equal(res.statusCode, 400, url);
      assert.equal(res.json().code, 'VALIDATION_FAILED');
    }
    const one = await app.inject({
      method: 'POST',
      url: '/api/auth/refresh',
      headers: { cookie: `__Secure-refresh-token=${account.refreshToken}` },
    });
    assert.equal(one.statusCode, 200, 'one cookie still works');
  });

  const sign = (claims: Record<string, unknown>) => {
    const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'at+jwt' })).toString('base64url');
    const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const signature = createHmac('sha256', app.config.auth.jwtSecret)
      .update(`${header}.${payload}`)
      .digest('base64url');
    return `${header}.${payload}.${signature}`;
  };

  test('finding 14: only the canonical signature string is accepted, and nbf is honoured', async () => {
    const account = await registerUser(app);
    const me = (token: string) => app.inject({ url: '/api/users/me', headers: bearer(token) });
    assert.equal((await me(account.accessToken)).statusCode, 200);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const last = account.accessToken.at(-1) ?? 'A';
    // The low two bits of the last character of a 32-byte signature are padding.
    const variant = `${account.accessToken.slice(0, -1)}${alphabet[alphabet.indexOf(last) ^ 1]}`;
    assert.equal((await me(variant)).statusCode, 401, 'a non-canonical spelling of the signature');

    const [, payload = ''] = account.accessToken.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    const now = Math.floor(Date.now() / 1000);
    assert.equal((await me(sign({ ...claims, nbf: now - 10 }))).statusCode, 200, 'nbf in the past');
    assert.equal((await me(sign({ ...claims, nbf: now + 60 }))).statusCode, 401, 'nbf in the future');
    assert.equal((await me(sign({ ...claims, nbf: 'soon' }))).statusCode, 401, 'nbf not a number');
  });
});
