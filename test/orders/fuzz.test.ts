import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { queryString } from '../products/fuzz-support.js';
import { createProduct } from '../products/support.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import {
  bodyFor,
  describeReport,
  fuzzRuns,
  nastyValue,
  neverServerError,
  pathSegment,
  requestsWith,
  troublemakerHeader,
} from '../support/fuzz.js';
import { placeOrder } from './support.js';

/** Orders routes under generated requests (troublemakers mixed in): never a 5xx, on either engine. */
for (const engine of engines) {
  describe(`orders routes under generated input on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let customer: Account;
    let productIds: string[];
    let orderIds: string[];
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
      customer = await registerUser(app);
      productIds = [];
      for (let i = 0; i < 5; i++) productIds.push((await createProduct(app, admin, { stock: 100_000 })).id);
      orderIds = [];
      for (const productId of productIds) {
        orderIds.push((await placeOrder(app, customer, [{ productId, quantity: 1 }])).json().id);
      }
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
    const orderId = () =>
      fc.oneof(
        pathSegment,
        fc.constantFrom(...orderIds),
        fc.constantFrom(...orderIds).map((x) => x.toUpperCase()),
      );
    const productId = () =>
      fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom(...productIds) },
        fc.uuid(),
        fc.constantFrom(...productIds).map((x) => x.toUpperCase()),
        nastyValue,
      );
    // Mostly plausible orders (so the transaction, stock and idempotency paths run), some nonsense.
    const goodLine = () => fc.record({ productId: productId(), quantity: fc.integer({ min: 1, max: 3 }) });
    const anyLine = () =>
      fc.oneof(
        fc.record({ productId: productId(), quantity: fc.oneof(fc.integer(), nastyValue) }),
        bodyFor(['productId', 'quantity']),
      );
    const orderBody = () =>
      fc.oneof(
        {
          weight: 6,
          arbitrary: fc.record({
            items: fc.uniqueArray(goodLine(), {
              minLength: 1,
              maxLength: 4,
              selector: (l) => String(l.productId),
            }),
          }),
        },
        {
          weight: 2,
          arbitrary: fc.record({ items: fc.array(fc.oneof(goodLine(), anyLine()), { maxLength: 55 }) }),
        },
        bodyFor(['items'], { items: fc.array(anyLine(), { maxLength: 3 }) }),
      );
    const request = requestsWith(auth);
    const idempotencyKey = fc.oneof(
      { weight: 3, arbitrary: fc.constant(undefined) },
      { weight: 3, arbitrary: fc.constantFrom('same-key', 'other-key') },
      { weight: 2, arbitrary: fc.stringMatching(/^[\x20-\x7e]{1,20}$/) },
      troublemakerHeader,
      fc.string({ minLength: 250, maxLength: 260 }),
    );

    const cases: Array<[string, () => fc.Arbitrary<InjectOptions>]> = [
      [
        'POST /api/orders',
        () =>
          request(
            'POST',
            fc.constant('/api/orders'),
            orderBody(),
            idempotencyKey.map(
              (key): Record<string, string> => (key === undefined ? {} : { 'idempotency-key': key }),
            ),
          ),
      ],
      [
        'GET /api/orders',
        () =>
          request(
            'GET',
            queryString(['limit', 'cursor', 'status', 'userId']).map((q) => `/api/orders?${q}`),
          ),
      ],
      [
        'GET /api/orders/:id',
        () =>
          request(
            'GET',
            orderId().map((id) => `/api/orders/${id}`),
          ),
      ],
      [
        'POST /api/orders/:id/cancel',
        () =>
          request(
            'POST',
            orderId().map((id) => `/api/orders/${id}/cancel`),
            nastyValue,
          ),
      ],
      [
        'PATCH /api/orders/:id',
        () =>
          request(
            'PATCH',
            orderId().map((id) => `/api/orders/${id}`),
            bodyFor(['status'], {
              status: fc.constantFrom('pending', 'paid', 'shipped', 'delivered', 'cancelled'),
            }),
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
