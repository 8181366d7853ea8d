import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import {
  bodyFor,
  describeReport,
  fuzzRuns,
  neverServerError,
  pathSegment,
  requestsWith,
  troublemakerHeader,
} from '../support/fuzz.js';
import { queryString } from './fuzz-support.js';
import { createProduct } from './support.js';

/** Products routes under generated requests (troublemakers mixed in): never a 5xx, on either engine. */
for (const engine of engines) {
  describe(`products routes under generated input on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let customer: Account;
    let ids: string[];
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
      customer = await registerUser(app);
      ids = [];
      for (let i = 0; i < 5; i++) ids.push((await createProduct(app, admin)).id);
    });
    after(() => app?.close());

    const auth = () =>
      fc.oneof(
        fc.constant({}),
        fc.constant(bearer(customer.accessToken)),
        fc.constant(bearer(admin.accessToken)),
        troublemakerHeader.map((s) => ({ authorization: `Bearer ${s}` })),
        troublemakerHeader.map((s) => ({ authorization: s })),
      );
    const id = () =>
      fc.oneof(
        pathSegment,
        fc.constantFrom(...ids),
        fc.constantFrom(...ids).map((x) => x.toUpperCase()),
      );
    const request = requestsWith(auth);

    const productBody = bodyFor(['sku', 'name', 'description', 'price', 'stock'], {
      sku: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,70}$/),
      name: fc.string({ maxLength: 210 }),
      description: fc.string(),
      price: fc.oneof(fc.stringMatching(/^\d{1,9}(\.\d{1,3})?$/), fc.double().map(String)),
      stock: fc.oneof(fc.integer(), fc.integer({ min: 0, max: 2_000_000_000 })),
    });

    const cases: Array<[string, () => fc.Arbitrary<InjectOptions>]> = [
      [
        'GET /api/products',
        () =>
          request(
            'GET',
            queryString(['limit', 'cursor', 'q', 'minPrice', 'maxPrice', 'inStock']).map(
              (q) => `/api/products?${q}`,
            ),
          ),
      ],
      [
        'GET /api/products/:id',
        () =>
          request(
            'GET',
            id().map((x) => `/api/products/${x}`),
            undefined,
            troublemakerHeader.map((s) => ({ 'if-none-match': s })),
          ),
      ],
      ['POST /api/products', () => request('POST', fc.constant('/api/products'), productBody)],
      [
        'PATCH /api/products/:id',
        () =>
          request(
            'PATCH',
            id().map((x) => `/api/products/${x}`),
            productBody,
          ),
      ],
      [
        'DELETE /api/products/:id',
        () =>
          request(
            'DELETE',
            id().map((x) => `/api/products/${x}`),
          ),
      ],
    ];

    for (const [name, arbitrary] of cases) {
      test(`${name}: ${fuzzRuns} generated requests, no 5xx, unstorable text refused`, async (t) => {
        t.diagnostic(`${name} on ${engine}: ${describeReport(await neverServerError(app, arbitrary()))}`);
      });
    }
  });
}
