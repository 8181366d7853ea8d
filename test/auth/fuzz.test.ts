import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { queryString } from '../products/fuzz-support.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import {
  bodyFor,
  describeReport,
  fuzzRuns,
  nastyText,
  nastyValue,
  neverServerError,
  pathSegment,
  troublemakerHeader,
} from '../support/fuzz.js';

/** Generated requests (troublemakers mixed in) on every auth and users route: never a 5xx, on either engine. */
for (const engine of engines) {
  describe(`auth and users routes under generated input on ${engine}`, {
    skip: await skipEngine(engine),
  }, () => {
    let app: FastifyInstance;
    let customer: Account;
    let admin: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      customer = await registerUser(app);
      admin = await createAdmin(app);
    });
    after(() => app?.close());

    const authHeader = () =>
      fc.oneof(
        fc.constant({}),
        fc.constant(bearer(customer.accessToken)),
        fc.constant(bearer(admin.accessToken)),
        troublemakerHeader.map((s) => ({ authorization: `Bearer ${s}` })),
        troublemakerHeader.map((s) => ({ authorization: s })),
      );

    /** A request with a JSON body (or none for GET and DELETE), random auth and a random cookie. */
    const request = (
      method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
      url: fc.Arbitrary<string>,
      body: fc.Arbitrary<unknown>,
    ) =>
      fc
        .record({
          url,
          body,
          headers: authHeader(),
          cookie: fc.option(troublemakerHeader, { nil: undefined }),
          agent: fc.option(troublemakerHeader, { nil: undefined, freq: 4 }),
        })
        .map(({ url: path, body: payload, headers: auth, cookie, agent }): InjectOptions => {
          const cookieHeader =
            cookie === undefined ? {} : { cookie: `__Secure-refresh-token=${cookie.replace(/;/g, '')}` };
          // user-agent is stored with the session: a NUL there must be a 400, not a 500.
          const headers = agent === undefined ? auth : { ...auth, 'user-agent': agent };
          if (method === 'GET' || method === 'DELETE')
            return { method, url: path, headers: { ...headers, ...cookieHeader } };
          return {
            method,
            url: path,
            headers: { ...headers, ...cookieHeader, 'content-type': 'application/json' },
            payload: JSON.stringify(payload) ?? 'null',
          };
        });

    const query = queryString(['q', 'limit', 'cursor']);

    const cases: Array<[string, () => fc.Arbitrary<InjectOptions>]> = [
      [
        'POST /api/auth/register',
        () =>
          request(
            'POST',
            fc.constant('/api/auth/register'),
            bodyFor(['email', 'username', 'password'], {
              email: fc.emailAddress(),
              username: fc.oneof(fc.string({ minLength: 3, maxLength: 50 }), nastyText),
              password: fc.oneof(fc.string({ minLength: 8, maxLength: 40 }), nastyText),
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
      test(`${name}: ${fuzzRuns} generated requests, no 5xx, unstorable text refused`, async (t) => {
        t.diagnostic(`${name} on ${engine}: ${describeReport(await neverServerError(app, arbitrary()))}`);
      });
    }

    test(`DELETE /api/users/me: ${fuzzRuns} generated requests, no 5xx, unstorable text refused`, async (t) => {
      // Last, because a valid token deactivates the account (which this check does not mind).
      const report = await neverServerError(
        app,
        request('DELETE', fc.constant('/api/users/me'), fc.constant(undefined)),
      );
      t.diagnostic(`DELETE /api/users/me on ${engine}: ${describeReport(report)}`);
    });
  });
}
