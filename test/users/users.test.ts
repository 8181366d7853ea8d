import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import {
  type Account,
  bearer,
  createAdmin,
  login,
  registerUser,
  uniqueName,
  userKeys,
} from '../support/accounts.js';

for (const engine of engines) {
  describe(`users on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let customer: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
      customer = await registerUser(app);
    });
    after(() => app?.close());

    test('GET /me: exactly the documented fields', async () => {
      const res = await app.inject({ url: '/api/users/me', headers: bearer(customer.accessToken) });
      assert.equal(res.statusCode, 200);
      assert.deepEqual(Object.keys(res.json()).sort(), userKeys);
      assert.equal(res.json().id, customer.user.id);
    });

    test('PATCH /me: username and email; conflicts → 409; role or unknown fields → 400', async () => {
      const other = await registerUser(app);
      const newName = uniqueName('renamed');
      const ok = await app.inject({
        method: 'PATCH',
        url: '/api/users/me',
        headers: bearer(other.accessToken),
        payload: { username: newName, email: `${newName}@Example.ORG` },
      });
      assert.equal(ok.statusCode, 200, ok.body);
      assert.equal(ok.json().username, newName);
      assert.equal(ok.json().email, `${newName.toLowerCase()}@example.org`);

      const conflict = await app.inject({
        method: 'PATCH',
        url: '/api/users/me',
        headers: bearer(other.accessToken),
        payload: { email: customer.email.toUpperCase() },
      });
      assert.equal(conflict.statusCode, 409);
      assert.deepEqual(conflict.json().errors, [{ path: '/body/email', message: 'is already taken' }]);

      for (const payload of [
        { role: 'admin' },
        { isActive: false },
        { username: 'ok-name', passwordHash: 'x' },
        {},
      ]) {
        const res = await app.inject({
          method: 'PATCH',
          url: '/api/users/me',
          headers: bearer(other.accessToken),
          payload,
        });
        assert.equal(res.statusCode, 400, JSON.stringify(payload));
      }
      const me = await app.inject({ url: '/api/users/me', headers: bearer(other.accessToken) });
      assert.equal(me.json().role, 'customer');
    });

    test('a customer on admin routes → 403; without a token → 401', async () => {
      const routes: Array<{ method: 'GET' | 'PATCH'; url: string; payload?: object }> = [
        { method: 'GET', url: '/api/users' },
        { method: 'PATCH', url: `/api/users/${admin.user.id}`, payload: { role: 'customer' } },
        { method: 'PATCH', url: `/api/users/${customer.user.id}`, payload: { role: 'admin' } },
      ];
      for (const route of routes) {
        const forbidden = await app.inject({ ...route, headers: bearer(customer.accessToken) });
        assert.equal(forbidden.statusCode, 403, `${route.method} ${route.url}`);
        assert.equal(forbidden.json().code, 'FORBIDDEN');
        assert.equal((await app.inject(route)).statusCode, 401);
      }
    });

    test('GET /:id: yourself → 200; someone else → 404 like a missing user; admin → 200', async () => {
      const self = await app.inject({
        url: `/api/users/${customer.user.id}`,
        headers: bearer(customer.accessToken),
      });
      assert.equal(self.statusCode, 200);
      const other = await app.inject({
        url: `/api/users/${admin.user.id}`,
        headers: bearer(customer.accessToken),
      });
      const missing = await app.inject({
        url: '/api/users/00000000-0000-4000-8000-000000000000',
        headers: bearer(customer.accessToken),
      });
      assert.equal(other.statusCode, 404);
      assert.equal(missing.statusCode, 404);
      const withoutId = (body: Record<string, unknown>) => ({ ...body, requestId: 0 });
      assert.deepEqual(withoutId(other.json()), withoutId(missing.json()));
      const byAdmin = await app.inject({
        url: `/api/users/${customer.user.id}`,
        headers: bearer(admin.accessToken),
      });
      assert.equal(byAdmin.statusCode, 200);
      assert.equal(
        (await app.inject({ url: '/api/users/not-a-uuid', headers: bearer(admin.accessToken) })).statusCode,
        400,
      );
    });

    test('admin list: newest first, search, cursor pages without gaps or repeats, forged cursor → 400', async () => {
      const tag = uniqueName('find');
      const created: string[] = [];
      for (let i = 0; i < 5; i++)
        created.push((await registerUser(app, { username: `${tag}-${i}` })).user.id);
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const query: string = `q=${tag}&limit=2${cursor === null ? '' : `&cursor=${cursor}`}`;
        const page = await app.inject({ url: `/api/users?${query}`, headers: bearer(admin.accessToken) });
        assert.equal(page.statusCode, 200, page.body);
        const body = page.json() as { items: Array<{ id: string }>; nextCursor: string | null };
        assert.ok(body.items.length <= 2);
        seen.push(...body.items.map((u) => u.id));
        cursor = body.nextCursor;
      } while (cursor !== null);
      assert.deepEqual(seen, [...created].reverse());

      const byEmail = await app.inject({
        url: `/api/users?q=${encodeURIComponent(customer.email.toUpperCase())}`,
        headers: bearer(admin.accessToken),
      });
      assert.deepEqual(
        byEmail.json().items.map((u: { id: string }) => u.id),
        [customer.user.id],
      );
      // LIKE wildcards are literal.
      const wildcard = await app.inject({ url: '/api/users?q=%25', headers: bearer(admin.accessToken) });
      assert.equal(wildcard.json().items.length, 0);

      for (const forged of [
        'garbage',
        'W10',
        Buffer.from('["x","y"]').toString('base64url'),
        'a'.repeat(600),
      ]) {
        const res = await app.inject({
          url: `/api/users?cursor=${forged}`,
          headers: bearer(admin.accessToken),
        });
        assert.equal(res.statusCode, 400, forged);
        assert.equal(res.json().code, 'VALIDATION_FAILED');
      }
      for (const limit of ['0', '101', 'abc', '1e309', 'Infinity', '-Infinity', 'NaN', '2.5']) {
        assert.equal(
          (await app.inject({ url: `/api/users?limit=${limit}`, headers: bearer(admin.accessToken) }))
            .statusCode,
          400,
        );
      }
    });

    test('admin update: promote, deactivate (sessions end, login refused), reactivate; not yourself', async () => {
      const target = await registerUser(app);
      const promote = await app.inject({
        method: 'PATCH',
        url: `/api/users/${target.user.id}`,
        headers: bearer(admin.accessToken),
        payload: { role: 'admin' },
      });
      assert.equal(promote.statusCode, 200);
      assert.equal(promote.json().role, 'admin');
      assert.equal(
        (await app.inject({ url: '/api/users/me', headers: bearer(target.accessToken) })).statusCode,
        401,
        'old token had the old role',
      );
      const fresh = (await login(app, target.email, target.password)).json();
      assert.equal(
        (await app.inject({ url: '/api/users', headers: bearer(fresh.accessToken) })).statusCode,
        200,
      );

      const deactivate = await app.inject({
        method: 'PATCH',
        url: `/api/users/${target.user.id}`,
        headers: bearer(admin.accessToken),
        payload: { isActive: false },
      });
      assert.equal(deactivate.json().isActive, false);
      assert.equal(
        (await app.inject({ url: '/api/users/me', headers: bearer(fresh.accessToken) })).statusCode,
        401,
      );
      assert.equal((await login(app, target.email, target.password)).statusCode, 401);

      const reactivate = await app.inject({
        method: 'PATCH',
        url: `/api/users/${target.user.id}`,
        headers: bearer(admin.accessToken),
        payload: { isActive: true },
      });
      assert.equal(reactivate.json().isActive, true);
      assert.equal((await login(app, target.email, target.password)).statusCode, 200);

      const self = await app.inject({
        method: 'PATCH',
        url: `/api/users/${admin.user.id}`,
        headers: bearer(admin.accessToken),
        payload: { role: 'customer' },
      });
      assert.equal(self.statusCode, 409);
      const missing = await app.inject({
        method: 'PATCH',
        url: '/api/users/00000000-0000-4000-8000-000000000000',
        headers: bearer(admin.accessToken),
        payload: { role: 'admin' },
      });
      assert.equal(missing.statusCode, 404);
    });

    test('there is no way to become admin through the public API', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/api/auth/register',
        payload: {
          email: `${uniqueName()}@example.com`,
          username: uniqueName(),
          password: 'a fine password here',
          role: 'admin',
        },
      });
      assert.equal(res.statusCode, 400);
    });
  });
}
