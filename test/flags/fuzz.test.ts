import { after, before, describe } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { flagKeys } from '../../src/modules/flags/flags.definitions.js';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import { bodyFor, fuzzEachRoute, pathSegment, requestsWith, troublemakerHeader } from '../support/fuzz.js';

/** Feature-flag routes under generated requests (troublemakers mixed in): never a 5xx, on either engine. */
for (const engine of engines) {
  describe(`feature-flag routes under generated input on ${engine}`, {
    skip: await skipEngine(engine),
  }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let customer: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      [admin, customer] = await Promise.all([createAdmin(app), registerUser(app)]);
    });
    after(() => app?.close());

    const auth = () =>
      fc.oneof(
        fc.constant({}),
        fc.constant(bearer(customer.accessToken)),
        fc.constant(bearer(admin.accessToken)),
        fc.constant(bearer(admin.accessToken)),
        troublemakerHeader.map((s) => ({ authorization: `Bearer ${s}` })),
      );
    const key = () =>
      fc.oneof(pathSegment, fc.constantFrom(...flagKeys), fc.constantFrom('no-such-flag', 'A'));
    const request = requestsWith(auth);
    const userIds = () =>
      fc.constantFrom([], [customer.user.id], [customer.user.id, customer.user.id], ['x']);
    const stateBody = () =>
      bodyFor(['enabled', 'percentage', 'allowUsers'], {
        enabled: fc.boolean(),
        percentage: fc.oneof(fc.integer({ min: 0, max: 100 }), fc.integer(), fc.double()),
        allowUsers: fc.oneof(userIds(), fc.array(fc.uuid(), { maxLength: 5 })),
      });

    const cases: Array<[string, () => fc.Arbitrary<InjectOptions>]> = [
      ['GET /api/flags', () => request('GET', fc.constant('/api/flags'))],
      [
        'PUT /api/flags/:key',
        () =>
          request(
            'PUT',
            key().map((k) => `/api/flags/${k}`),
            stateBody(),
          ),
      ],
      [
        'DELETE /api/flags/:key',
        () =>
          request(
            'DELETE',
            key().map((k) => `/api/flags/${k}`),
          ),
      ],
    ];

    fuzzEachRoute(engine, () => app, cases);
  });
}
