import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, captureLogs, engines, skipEngine } from '../helper.js';
import { createProduct } from '../products/support.js';
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

  test('finding 13: a signed token naming a session the database never had, or another user’s, is refused', async () => {
    const account = await registerUser(app);
    const other = await registerUser(app);
    const me = (token: string) => app.inject({ url: '/api/users/me', headers: bearer(token) });
    const claimsOf = (token: string) =>
      JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
    const claims = claimsOf(account.accessToken);
    assert.equal((await me(sign(claims))).statusCode, 200, 'the same claims, signed here, are accepted');
    const missing = await me(sign({ ...claims, sid: randomUUID() }));
    assert.equal(missing.statusCode, 401);
    assert.equal(missing.json().code, 'UNAUTHENTICATED');
    const foreign = await me(sign({ ...claims, sid: claimsOf(other.accessToken).sid }));
    assert.equal(foreign.statusCode, 401, 'a session of another user');
    assert.equal((await me(account.accessToken)).statusCode, 200, 'the real token still works');
  });

  test('finding 17: a missing file under /docs/static is a 404, a wrong method there still a 405', async () => {
    const missing = await app.inject({ url: '/docs/static/nope.js' });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().code, 'NOT_FOUND');
    assert.equal((await app.inject({ method: 'HEAD', url: '/docs/static/nope.js' })).statusCode, 404);
    const css = await app.inject({ url: '/docs/static/swagger-ui.css' });
    assert.equal(css.statusCode, 200, 'a file that exists is served');
    const post = await app.inject({ method: 'POST', url: '/docs/static/nope.js' });
    assert.equal(post.statusCode, 405);
    assert.match(String(post.headers.allow), /GET/);
  });

  test('finding 18: ids in paths work in either case on users, sessions, products and orders; answers are lower case', async () => {
    const admin = await createAdmin(app);
    const account = await registerUser(app);
    const upper = (id: string) => id.toUpperCase();
    const own = await app.inject({
      url: `/api/users/${upper(account.user.id)}`,
      headers: bearer(account.accessToken),
    });
    assert.equal(own.statusCode, 200, own.body);
    assert.equal(own.json().id, account.user.id);

    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/users/${upper(account.user.id)}`,
      headers: bearer(admin.accessToken),
      payload: { role: 'customer' },
    });
    assert.equal(patched.statusCode, 200, patched.body);
    assert.equal(patched.json().id, account.user.id);
    const self = await app.inject({
      method: 'PATCH',
      url: `/api/users/${upper(admin.user.id)}`,
      headers: bearer(admin.accessToken),
      payload: { isActive: false },
    });
    assert.equal(self.statusCode, 409, 'the guard on oneself holds in upper case too');
    const someoneElse = await app.inject({
      url: `/api/users/${upper(admin.user.id)}`,
      headers: bearer(account.accessToken),
    });
    assert.equal(someoneElse.statusCode, 404, 'another user’s account, in upper case, is still a 404');

    const product = await createProduct(app, admin);
    const read = await app.inject({ url: `/api/products/${upper(product.id)}` });
    assert.equal(read.statusCode, 200);
    assert.equal(read.json().id, product.id);
    const order = await app.inject({
      method: 'POST',
      url: '/api/orders',
      headers: bearer(account.accessToken),
      payload: { items: [{ productId: upper(product.id), quantity: 1 }] },
    });
    assert.equal(order.statusCode, 201, order.body);
    assert.equal(order.json().items[0].productId, product.id);
    const orderRead = await app.inject({
      url: `/api/orders/${upper(order.json().id)}`,
      headers: bearer(account.accessToken),
    });
    assert.equal(orderRead.statusCode, 200);
    assert.equal(orderRead.json().id, order.json().id);
    for (const id of [account.user.id, product.id, order.json().id]) assert.equal(id, id.toLowerCase());

    const second = (await login(app, account.email, account.password)).json();
    const sessions = await app.inject({ url: '/api/auth/sessions', headers: bearer(account.accessToken) });
    const other = sessions.json().items.find((s: { current: boolean }) => !s.current);
    assert.ok(other, 'a second session');
    assert.equal(other.id, other.id.toLowerCase());
    const revoked = await app.inject({
      method: 'DELETE',
      url: `/api/auth/sessions/${upper(other.id)}`,
      headers: bearer(account.accessToken),
    });
    assert.equal(revoked.statusCode, 204, revoked.body);
    const me = await app.inject({ url: '/api/users/me', headers: bearer(second.accessToken) });
    assert.equal(me.statusCode, 401, 'the session revoked by its upper-case id has ended');
  });

  test('finding 20: bidi controls, zero-width and C1 characters are refused in product names', async () => {
    const admin = await createAdmin(app);
    const hidden = {
      'right-to-left override': '\u202e',
      'left-to-right embedding': '\u202a',
      'first strong isolate': '\u2068',
      'pop directional isolate': '\u2069',
      'right-to-left mark': '\u200f',
      'arabic letter mark': '\u061c',
      'zero-width space': '\u200b',
      'zero-width joiner': '\u200d',
      'word joiner': '\u2060',
      'byte order mark': '\ufeff',
      'next line (C1)': '\u0085',
    };
    for (const [what, char] of Object.entries(hidden)) {
      const created = await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: bearer(admin.accessToken),
        payload: { sku: `BIDI-${randomUUID().slice(0, 8)}`, name: `Mug${char}gum`, price: '1.00', stock: 1 },
      });
      assert.equal(created.statusCode, 400, what);
      assert.equal(created.json().code, 'VALIDATION_FAILED', what);
      assert.equal(created.json().errors[0].path, '/body/name', what);
    }
    const product = await createProduct(app, admin, { name: 'Café mug 咖啡杯 ☕ — déjà vu' });
    assert.equal(product.name, 'Café mug 咖啡杯 ☕ — déjà vu', 'letters, symbols and punctuation are fine');
    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/products/${product.id}`,
      headers: bearer(admin.accessToken),
      payload: { name: 'exe.\u202etxt' },
    });
    assert.equal(patched.statusCode, 400, 'an update is checked too');
  });
});

for (const engine of engines) {
  describe(`security probe 2026-12-02, finding 12: the refresh-token reuse interval (${engine})`, {
    skip: await skipEngine(engine),
  }, () => {
    let strict: FastifyInstance;
    let lenient: FastifyInstance;
    before(async () => {
      strict = await buildTestApp({ engine });
      lenient = await buildTestApp({ engine, env: { REFRESH_TOKEN_REUSE_INTERVAL_SECONDS: '1' } });
    });
    after(async () => {
      await strict?.close();
      await lenient?.close();
    });

    const refresh = (app: FastifyInstance, refreshToken: string) =>
      app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refreshToken } });
    const me = async (app: FastifyInstance, token: string) =>
      (await app.inject({ url: '/api/users/me', headers: bearer(token) })).statusCode;

    test('off by default: a second use of a spent token ends the session', async () => {
      assert.equal(strict.config.auth.refreshReuseIntervalSeconds, 0);
      const account = await registerUser(strict);
      const first = await refresh(strict, account.refreshToken);
      assert.equal(first.statusCode, 200);
      assert.equal((await refresh(strict, account.refreshToken)).statusCode, 401);
      assert.equal(await me(strict, first.json().accessToken), 401, 'the whole session is revoked');
    });

    test('within the interval, concurrent and repeated uses each get a working token of the same session', async () => {
      const account = await registerUser(lenient);
      const answers = await Promise.all([1, 2, 3].map(() => refresh(lenient, account.refreshToken)));
      assert.deepEqual(
        answers.map((a) => a.statusCode),
        [200, 200, 200],
        answers.map((a) => a.body).join('\n'),
      );
      const tokens = answers.map((a) => a.json());
      assert.equal(
        new Set(tokens.map((t) => t.refreshToken)).size,
        3,
        'each answer has its own refresh token',
      );
      for (const t of tokens) assert.equal(await me(lenient, t.accessToken), 200);
      assert.equal(await me(lenient, account.accessToken), 200, 'the session lives on');
      for (const t of tokens) assert.equal((await refresh(lenient, t.refreshToken)).statusCode, 200);
    });

    test('after the interval, a second use is theft again: 401 and the session revoked', async () => {
      const account = await registerUser(lenient);
      const first = await refresh(lenient, account.refreshToken);
      assert.equal(first.statusCode, 200);
      await sleep(2100); // the interval is 1 s: whatever the machine's load, this is past it
      assert.equal((await refresh(lenient, account.refreshToken)).statusCode, 401);
      assert.equal(await me(lenient, first.json().accessToken), 401, 'the session is revoked');
      assert.equal((await refresh(lenient, first.json().refreshToken)).statusCode, 401);
    });
  });
}
