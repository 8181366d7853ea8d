import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { buildTestApp } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import { bodyFor, nastyValue, neverServerError, pathSegment } from '../support/fuzz.js';

/** At least 1,000 generated requests per auth and users route; none may answer 5xx. */
describe('auth and users routes under generated input', () => {
  let app: FastifyInstance;
  let customer: Account;
  let admin: Account;
  before(async () => {
    app = await buildTestApp();
    customer = await registerUser(app);
    admin = await createAdmin(app);
  });
  after(() => app?.close());

  const authHeader = () =>
    fc.oneof(
      fc.constant({}),
      fc.constant(bearer(customer.accessToken)),
      fc.constant(bearer(admin.accessToken)),
      fc.string().map((s) => ({ authorization: `Bearer ${s.replace(/[\r\n]/g, '')}` })),
      fc.string().map((s) => ({ authorization: s.replace(/[\r\n]/g, '') })),
    );

  /** A request with a JSON body (or none for GET and DELETE), random auth and a random cookie. */
  const request = (
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: fc.Arbitrary<string>,
    body: fc.Arbitrary<unknown>,
  ) =>
    fc
      .record({ url, body, headers: authHeader(), cookie: fc.option(fc.string(), { nil: undefined }) })
      .map(({ url: path, body: payload, headers, cookie }): InjectOptions => {
        const cookieHeader =
          cookie === undefined ? {} : { cookie: `__Secure-refresh-token=${cookie.replace(/[\r\n;]/g, '')}` };
        if (method === 'GET' || method === 'DELETE')
          return { method, url: path, headers: { ...headers, ...cookieHeader } };
        return {
          method,
          url: path,
          headers: { ...headers, ...cookieHeader, 'content-type': 'application/json' },
          payload: JSON.stringify(payload) ?? 'null',
        };
      });

  const query = fc
    .record({ q: nastyValue, limit: nastyValue, cursor: nastyValue }, { requiredKeys: [] })
    .map((q) =>
      new URLSearchParams(
        Object.entries(q).map(([k, v]): [string, string] => [
          k,
          typeof v === 'string' ? v : String(JSON.stringify(v)),
        ]),
      ).toString(),
    );

  const cases: Array<[string, () => fc.Arbitrary<InjectOptions>]> = [
    [
      'POST /api/auth/register',
      () =>
        request(
          'POST',
          fc.constant('/api/auth/register'),
          bodyFor(['email', 'username', 'password'], {
            email: fc.emailAddress(),
            username: fc.string({ minLength: 3, maxLength: 50 }),
            password: fc.string({ minLength: 8, maxLength: 40 }),
          }),
        ),
    ],
    [
      'POST /api/auth/login',
      () =>
        request(
          'POST',
          fc.constant('/api/auth/login'),
          bodyFor(['login', 'password'], { login: fc.constant(customer.email), password: fc.string() }),
        ),
    ],
    [
      'POST /api/auth/refresh',
      () => request('POST', fc.constant('/api/auth/refresh'), bodyFor(['refreshToken'])),
    ],
    [
      'POST /api/auth/logout',
      () => request('POST', fc.constant('/api/auth/logout'), bodyFor(['refreshToken'])),
    ],
    ['POST /api/auth/logout-all', () => request('POST', fc.constant('/api/auth/logout-all'), nastyValue)],
    [
      'GET /api/auth/sessions',
      () => request('GET', fc.constant('/api/auth/sessions'), fc.constant(undefined)),
    ],
    [
      'DELETE /api/auth/sessions/:id',
      () =>
        request(
          'DELETE',
          pathSegment.map((id) => `/api/auth/sessions/${id}`),
          fc.constant(undefined),
        ),
    ],
    ['GET /api/users/me', () => request('GET', fc.constant('/api/users/me'), fc.constant(undefined))],
    [
      'PATCH /api/users/me',
      () =>
        request(
          'PATCH',
          fc.constant('/api/users/me'),
          bodyFor(['username', 'email'], { email: fc.emailAddress() }),
        ),
    ],
    [
      'POST /api/users/me/password',
      () =>
        request('POST', fc.constant('/api/users/me/password'), bodyFor(['currentPassword', 'newPassword'])),
    ],
    [
      'GET /api/users',
      () =>
        request(
          'GET',
          query.map((q) => `/api/users?${q}`),
          fc.constant(undefined),
        ),
    ],
    [
      'GET /api/users/:id',
      () =>
        request(
          'GET',
          pathSegment.map((id) => `/api/users/${id}`),
          fc.constant(undefined),
        ),
    ],
    [
      'PATCH /api/users/:id',
      () =>
        request(
          'PATCH',
          pathSegment.map((id) => `/api/users/${id}`),
          bodyFor(['role', 'isActive'], {
            role: fc.constantFrom('admin', 'customer'),
            isActive: fc.boolean(),
          }),
        ),
    ],
  ];

  for (const [name, arbitrary] of cases) {
    test(`${name}: 1,000 generated requests, no 5xx`, async () => {
      await neverServerError(app, arbitrary());
    });
  }

  test('DELETE /api/users/me: 1,000 generated requests, no 5xx', async () => {
    // Last, because a valid token deactivates the account (which this check does not mind).
    await neverServerError(app, request('DELETE', fc.constant('/api/users/me'), fc.constant(undefined)));
  });
});
