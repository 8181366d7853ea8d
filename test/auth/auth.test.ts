import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { hashRefreshToken } from '../../src/modules/auth/tokens.js';
import { buildTestApp, captureLogs, engines, skipEngine } from '../helper.js';
import { bearer, login, registerUser, uniqueName, userKeys } from '../support/accounts.js';

for (const engine of engines) {
  describe(`auth on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    const logs = captureLogs('info');
    before(async () => {
      app = await buildTestApp({ engine, logger: logs.logger });
    });
    after(() => app?.close());

    const refresh = (refreshToken: string) =>
      app.inject({ method: 'POST', url: '/api/auth/refresh', payload: { refreshToken } });
    const me = (accessToken: string) => app.inject({ url: '/api/users/me', headers: bearer(accessToken) });

    test('register → 201 with the user (no hash), tokens and expiry', async () => {
      const name = uniqueName();
      const res = await app.inject({
        method: 'POST',
        url: '/api/auth/register',
        payload: {
          email: `${name.toUpperCase()}@Example.com`,
          username: name,
          password: 'a perfectly fine password',
        },
      });
      assert.equal(res.statusCode, 201, res.body);
      const body = res.json();
      assert.deepEqual(Object.keys(body).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'user']);
      assert.deepEqual(Object.keys(body.user).sort(), userKeys);
      assert.equal(body.user.email, `${name.toLowerCase()}@example.com`);
      assert.equal(body.user.role, 'customer');
      assert.equal(body.user.isActive, true);
      assert.equal(body.expiresIn, 900);
      assert.ok(body.refreshToken.length >= 43, '≥ 256 bits');
      assert.doesNotMatch(res.body, /argon2|password/i);
    });

    test('register: taken email (any case) or username → 409; bad input → 400', async () => {
      const account = await registerUser(app);
      const taken = await app.inject({
        method: 'POST',
        url: '/api/auth/register',
        payload: {
          email: account.email.toUpperCase(),
          username: uniqueName(),
          password: 'another fine password',
        },
      });
      assert.equal(taken.statusCode, 409);
      assert.equal(taken.json().code, 'CONFLICT');
      assert.deepEqual(taken.json().errors, [{ path: '/body/email', message: 'is already taken' }]);
      const takenName = await app.inject({
        method: 'POST',
        url: '/api/auth/register',
        payload: {
          email: `${uniqueName()}@example.com`,
          username: account.username.toUpperCase(),
          password: 'another fine password',
        },
      });
      assert.equal(takenName.statusCode, 409);
      assert.deepEqual(takenName.json().errors, [{ path: '/body/username', message: 'is already taken' }]);

      const cases: Array<[Record<string, unknown>, string]> = [
        [{ password: 'short' }, '/body/password'],
        [{ password: 'x'.repeat(129) }, '/body/password'],
        [{ password: 'password123' }, '/body/password'],
        [{ password: 'Qwertyuiop' }, '/body/password'],
        [{ email: 'not-an-email' }, '/body/email'],
        [{ username: 'no spaces allowed' }, '/body/username'],
        [{ role: 'admin' }, '/body/role'],
      ];
      for (const [override, path] of cases) {
        const name = uniqueName();
        const res = await app.inject({
          method: 'POST',
          url: '/api/auth/register',
          payload: {
            email: `${name}@example.com`,
            username: name,
            password: 'a perfectly fine password',
            ...override,
          },
        });
        assert.equal(res.statusCode, 400, JSON.stringify(override));
        assert.equal(res.json().errors[0].path, path, JSON.stringify(override));
      }
      // 128 characters exactly is fine, and so are non-ASCII passwords.
      await registerUser(app, { password: 'é'.repeat(128) });
    });

    test('the full flow: login → refresh → refresh → reuse of the first token → 401, newest dead too', async () => {
      const account = await registerUser(app);
      const loggedIn = await login(app, account.email, account.password);
      assert.equal(loggedIn.statusCode, 200);
      const first = loggedIn.json();
      assert.equal((await me(first.accessToken)).statusCode, 200);

      const r1 = await refresh(first.refreshToken);
      assert.equal(r1.statusCode, 200);
      assert.deepEqual(Object.keys(r1.json()).sort(), ['accessToken', 'expiresIn', 'refreshToken']);
      const second = r1.json();
      const r2 = await refresh(second.refreshToken);
      assert.equal(r2.statusCode, 200);
      const third = r2.json();
      assert.notEqual(third.refreshToken, second.refreshToken);

      const reuse = await refresh(first.refreshToken);
      assert.equal(reuse.statusCode, 401);
      assert.equal(reuse.json().code, 'UNAUTHENTICATED');
      // The whole family is gone: the newest refresh token and every access token of the login.
      assert.equal((await refresh(third.refreshToken)).statusCode, 401);
      assert.equal((await me(third.accessToken)).statusCode, 401);
      assert.equal((await me(first.accessToken)).statusCode, 401);
      // Other logins of the same user are untouched.
      assert.equal((await me(account.accessToken)).statusCode, 200);
      assert.ok(
        logs.lines.some(
          (l) => l.event === 'refresh_token_reuse' && l.security === true && l.level === 'warn',
        ),
      );
    });

    test('two concurrent refreshes with one token: exactly one wins, and the session is revoked', async () => {
      const account = await registerUser(app);
      const results = await Promise.all([refresh(account.refreshToken), refresh(account.refreshToken)]);
      const statuses = results.map((r) => r.statusCode).sort();
      assert.deepEqual(statuses, [200, 401]);
      const winner = results.find((r) => r.statusCode === 200)?.json();
      assert.equal((await refresh(winner.refreshToken)).statusCode, 401, 'reuse revoked the family');
    });

    test('refresh tokens are stored only as hashes', async () => {
      const account = await registerUser(app);
      const rows = await app.database.db.selectFrom('refresh_tokens').selectAll().execute();
      const serialised = JSON.stringify(rows);
      assert.ok(!serialised.includes(account.refreshToken));
      assert.ok(rows.some((r) => r.token_hash === hashRefreshToken(account.refreshToken)));
    });

    test('idle and absolute lifetimes end refresh tokens', async () => {
      const idle = await registerUser(app);
      await app.database.db
        .updateTable('refresh_tokens')
        .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
        .where('token_hash', '=', hashRefreshToken(idle.refreshToken))
        .execute();
      assert.equal((await refresh(idle.refreshToken)).statusCode, 401);

      const absolute = await registerUser(app);
      await app.database.db
        .updateTable('sessions')
        .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
        .where('user_id', '=', absolute.user.id)
        .execute();
      assert.equal((await refresh(absolute.refreshToken)).statusCode, 401);
    });

    test('the refresh token also works from an HttpOnly, Secure, SameSite=Strict cookie scoped to /api/auth', async () => {
      const account = await registerUser(app);
      const res = await login(app, account.username, account.password);
      const cookie = String(res.headers['set-cookie']);
      assert.match(
        cookie,
        /^__Secure-refresh-token=[\w-]+; Max-Age=\d+; Path=\/api\/auth; HttpOnly; Secure; SameSite=Strict$/,
      );
      const value = cookie.split(';')[0];
      const viaCookie = await app.inject({
        method: 'POST',
        url: '/api/auth/refresh',
        headers: { cookie: value },
      });
      assert.equal(viaCookie.statusCode, 200, viaCookie.body);
      const rotated = String(viaCookie.headers['set-cookie']).split(';')[0];
      assert.notEqual(rotated, value);
      const out = await app.inject({ method: 'POST', url: '/api/auth/logout', headers: { cookie: rotated } });
      assert.equal(out.statusCode, 204);
      assert.match(String(out.headers['set-cookie']), /Max-Age=0/);
      assert.equal(
        (await app.inject({ method: 'POST', url: '/api/auth/refresh', headers: { cookie: rotated } }))
          .statusCode,
        401,
      );
      assert.equal((await app.inject({ method: 'POST', url: '/api/auth/refresh' })).statusCode, 401);
    });

    test('login by email or username, case-insensitively; updates lastLoginAt', async () => {
      const account = await registerUser(app);
      for (const name of [
        account.email.toUpperCase(),
        account.username.toUpperCase(),
        ` ${account.email} `,
      ]) {
        const res = await login(app, name, account.password);
        assert.equal(res.statusCode, 200, name);
        assert.notEqual(res.json().user.lastLoginAt, null);
      }
    });

    test('unknown login and wrong password get the same status and body', async () => {
      const account = await registerUser(app);
      const wrong = await login(app, account.email, 'not the password');
      const unknown = await login(app, `${uniqueName()}@example.com`, 'not the password');
      assert.equal(wrong.statusCode, 401);
      assert.equal(unknown.statusCode, 401);
      const strip = (body: Record<string, unknown>) => ({ ...body, requestId: undefined });
      assert.deepEqual(strip(wrong.json()), strip(unknown.json()));
      assert.equal(wrong.headers['content-length'], unknown.headers['content-length']);
    });

    test('logout revokes that session and its access token at once', async () => {
      const account = await registerUser(app);
      const other = (await login(app, account.email, account.password)).json();
      const out = await app.inject({
        method: 'POST',
        url: '/api/auth/logout',
        payload: { refreshToken: account.refreshToken },
      });
      assert.equal(out.statusCode, 204);
      assert.equal((await me(account.accessToken)).statusCode, 401);
      assert.equal((await refresh(account.refreshToken)).statusCode, 401);
      assert.equal((await me(other.accessToken)).statusCode, 200, 'the other login lives on');
      // Idempotent: an unknown or already used token is still 204.
      assert.equal(
        (await app.inject({ method: 'POST', url: '/api/auth/logout', payload: { refreshToken: 'nonsense' } }))
          .statusCode,
        204,
      );
    });

    test('logout-all revokes every session of the user', async () => {
      const account = await registerUser(app);
      const second = (await login(app, account.email, account.password)).json();
      const res = await app.inject({
        method: 'POST',
        url: '/api/auth/logout-all',
        headers: bearer(second.accessToken),
      });
      assert.equal(res.statusCode, 204);
      for (const token of [account.accessToken, second.accessToken])
        assert.equal((await me(token)).statusCode, 401);
      for (const token of [account.refreshToken, second.refreshToken])
        assert.equal((await refresh(token)).statusCode, 401);
    });

    test('sessions: list with the current one marked; revoke one; another user’s session → 404', async () => {
      const account = await registerUser(app);
      const second = (
        await app.inject({
          method: 'POST',
          url: '/api/auth/login',
          payload: { login: account.username, password: account.password },
          headers: { 'user-agent': 'TestBrowser/1.0' },
        })
      ).json();
      const list = await app.inject({ url: '/api/auth/sessions', headers: bearer(second.accessToken) });
      assert.equal(list.statusCode, 200);
      const items = list.json().items as Array<Record<string, unknown>>;
      assert.equal(items.length, 2);
      assert.deepEqual(Object.keys(items[0] ?? {}).sort(), [
        'createdAt',
        'current',
        'id',
        'ip',
        'lastUsedAt',
        'userAgent',
      ]);
      const current = items.find((s) => s.current === true);
      assert.equal(current?.userAgent, 'TestBrowser/1.0');
      const firstSession = items.find((s) => s.current === false);

      const stranger = await registerUser(app);
      const foreign = await app.inject({
        method: 'DELETE',
        url: `/api/auth/sessions/${String(firstSession?.id)}`,
        headers: bearer(stranger.accessToken),
      });
      assert.equal(foreign.statusCode, 404);
      assert.equal((await me(account.accessToken)).statusCode, 200);

      const own = await app.inject({
        method: 'DELETE',
        url: `/api/auth/sessions/${String(firstSession?.id)}`,
        headers: bearer(second.accessToken),
      });
      assert.equal(own.statusCode, 204);
      assert.equal((await me(account.accessToken)).statusCode, 401);
      assert.equal((await me(second.accessToken)).statusCode, 200);
      const missing = await app.inject({
        method: 'DELETE',
        url: '/api/auth/sessions/00000000-0000-4000-8000-000000000000',
        headers: bearer(second.accessToken),
      });
      assert.equal(missing.statusCode, 404);
    });

    test('password change: wrong current → 403; success revokes the other sessions, keeps this one', async () => {
      const account = await registerUser(app);
      const other = (await login(app, account.email, account.password)).json();
      const wrong = await app.inject({
        method: 'POST',
        url: '/api/users/me/password',
        headers: bearer(account.accessToken),
        payload: { currentPassword: 'not it at all', newPassword: 'a brand new password' },
      });
      assert.equal(wrong.statusCode, 403);
      const ok = await app.inject({
        method: 'POST',
        url: '/api/users/me/password',
        headers: bearer(account.accessToken),
        payload: { currentPassword: account.password, newPassword: 'a brand new password' },
      });
      assert.equal(ok.statusCode, 204, ok.body);
      assert.equal((await me(account.accessToken)).statusCode, 200);
      assert.equal((await me(other.accessToken)).statusCode, 401);
      assert.equal((await login(app, account.email, account.password)).statusCode, 401);
      assert.equal((await login(app, account.email, 'a brand new password')).statusCode, 200);
    });

    test('deactivation: 204, every session ends, login refused like a wrong password, orders kept', async () => {
      const account = await registerUser(app);
      const res = await app.inject({
        method: 'DELETE',
        url: '/api/users/me',
        headers: bearer(account.accessToken),
      });
      assert.equal(res.statusCode, 204);
      assert.equal((await me(account.accessToken)).statusCode, 401);
      const again = await login(app, account.email, account.password);
      assert.equal(again.statusCode, 401);
      assert.equal(again.json().detail, 'The login or password is not correct.');
      const row = await app.database.db
        .selectFrom('users')
        .select('deactivated_at')
        .where('id', '=', account.user.id)
        .executeTakeFirst();
      assert.notEqual(row?.deactivated_at, null, 'deactivated, not deleted');
    });

    test('no token → 401 with WWW-Authenticate; garbage → 401', async () => {
      const none = await app.inject({ url: '/api/users/me' });
      assert.equal(none.statusCode, 401);
      assert.equal(none.headers['www-authenticate'], 'Bearer');
      for (const header of ['Bearer', 'Bearer ', 'Basic abc', 'Bearer a.b.c', 'bearer x']) {
        assert.equal(
          (await app.inject({ url: '/api/users/me', headers: { authorization: header } })).statusCode,
          401,
          header,
        );
      }
    });

    test('a refresh token is not an access token, and an access token is not a refresh token', async () => {
      const account = await registerUser(app);
      assert.equal((await me(account.refreshToken)).statusCode, 401);
      assert.equal((await refresh(account.accessToken)).statusCode, 401);
    });

    test('auth events are logged without secrets', async () => {
      const account = await registerUser(app);
      await login(app, account.email, 'wrong password here');
      await login(app, account.email, account.password);
      const text = logs.text();
      assert.ok(logs.lines.some((l) => l.event === 'login_failed' && l.reason === 'wrong_password'));
      assert.ok(logs.lines.some((l) => l.event === 'login_succeeded' && l.userId === account.user.id));
      assert.ok(!text.includes(account.password));
      assert.ok(!text.includes('wrong password here'));
      assert.ok(!text.includes(account.refreshToken));
      assert.ok(!text.includes(account.accessToken));
    });

    test('metrics count logins and refresh-token reuse', async () => {
      const text = (await app.inject({ url: '/metrics' })).body;
      assert.match(text, /auth_logins_total\{result="success"\} \d+/);
      assert.match(text, /auth_logins_total\{result="failure"\} \d+/);
      assert.match(text, /auth_refresh_reuse_total [1-9]/);
      assert.match(text, /auth_session_revocations_total\{reason="logout_all"\} [1-9]/);
    });

    test('updated_at moves with a profile change; the revocation index exists', async () => {
      const account = await registerUser(app);
      const res = await app.inject({
        method: 'PATCH',
        url: '/api/users/me',
        headers: bearer(account.accessToken),
        payload: { username: uniqueName('renamed') },
      });
      assert.equal(res.statusCode, 200);
      assert.ok(res.json().updatedAt >= account.user.updatedAt);
      if (engine === 'postgres') {
        const { rows } = await sql<{
          indexname: string;
        }>`SELECT indexname FROM pg_indexes WHERE tablename = 'sessions'`.execute(app.database.db);
        assert.ok(rows.some((r) => r.indexname === 'sessions_revoked_at_idx'));
      }
    });
  });
}
