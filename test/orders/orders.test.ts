import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { formatCents, toCents } from '../../src/lib/money.js';
import { encodeCursor } from '../../src/lib/pagination.js';
import { canTransition, sourcesOf } from '../../src/modules/orders/orders.state.js';
import { orderStatuses } from '../../src/modules/orders/orders.table.js';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { createProduct } from '../products/support.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import { orderCount, orderItemKeys, orderKeys, placeOrder, stockOf, unitsHeld } from './support.js';

describe('order state machine', () => {
  test('pending → paid → shipped → delivered, and pending or paid → cancelled; nothing else', () => {
    const allowed = orderStatuses.flatMap((from) =>
      orderStatuses.filter((to) => canTransition(from, to)).map((to) => `${from}→${to}`),
    );
    assert.deepEqual(allowed.sort(), [
      'paid→cancelled',
      'paid→shipped',
      'pending→cancelled',
      'pending→paid',
      'shipped→delivered',
    ]);
    assert.deepEqual(sourcesOf('cancelled'), ['pending', 'paid']);
    assert.deepEqual(sourcesOf('pending'), []);
  });
});

for (const engine of engines) {
  describe(`orders on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let alice: Account;
    let bob: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
      alice = await registerUser(app);
      bob = await registerUser(app);
    });
    after(() => app?.close());

    const product = (input: { price?: string; stock?: number; name?: string } = {}) =>
      createProduct(app, admin, input);
    const getOrder = (account: Account, id: string) =>
      app.inject({ url: `/api/orders/${id}`, headers: bearer(account.accessToken) });
    const setStatus = (account: Account, id: string, status: string) =>
      app.inject({
        method: 'PATCH',
        url: `/api/orders/${id}`,
        headers: bearer(account.accessToken),
        payload: { status },
      });
    const cancel = (account: Account, id: string) =>
      app.inject({ method: 'POST', url: `/api/orders/${id}/cancel`, headers: bearer(account.accessToken) });

    test('create → 201 pending, exactly the documented fields, prices from the products, stock taken', async () => {
      const a = await product({ price: '19.99', stock: 10, name: 'Alpha' });
      const b = await product({ price: '0.10', stock: 5, name: 'Beta' });
      const res = await placeOrder(app, alice, [
        { productId: b.id, quantity: 3 },
        { productId: a.id.toUpperCase(), quantity: 2 },
      ]);
      assert.equal(res.statusCode, 201, res.body);
      const order = res.json();
      assert.deepEqual(Object.keys(order).sort(), orderKeys);
      for (const item of order.items) assert.deepEqual(Object.keys(item).sort(), orderItemKeys);
      assert.equal(order.status, 'pending');
      assert.equal(order.userId, alice.user.id);
      assert.equal(order.currency, 'USD');
      assert.equal(order.totalAmount, '40.28');
      const byId = new Map(order.items.map((item: { productId: string }) => [item.productId, item]));
      assert.deepEqual(byId.get(a.id), {
        productId: a.id,
        sku: a.sku,
        name: 'Alpha',
        unitPrice: '19.99',
        quantity: 2,
        lineTotal: '39.98',
      });
      assert.deepEqual(byId.get(b.id), {
        productId: b.id,
        sku: b.sku,
        name: 'Beta',
        unitPrice: '0.10',
        quantity: 3,
        lineTotal: '0.30',
      });
      assert.deepEqual(
        order.items.map((item: { productId: string }) => item.productId),
        [a.id, b.id].sort(),
        'lines are listed by productId',
      );
      assert.equal(await stockOf(app, a.id), 8);
      assert.equal(await stockOf(app, b.id), 2);

      // The line keeps the price paid when the product's price changes later.
      await app.inject({
        method: 'PATCH',
        url: `/api/products/${a.id}`,
        headers: bearer(admin.accessToken),
        payload: { price: '25.00', name: 'Alpha 2' },
      });
      const again = await getOrder(alice, order.id);
      assert.deepEqual(again.json(), order);
    });

    test('many lines with awkward prices sum exactly (no floating-point drift)', async () => {
      const prices = ['0.10', '0.20', '0.30', '0.07', '19.99', '33.33', '0.01', '1.15', '4.35', '99999.99'];
      const lines: Array<{ productId: string; quantity: number }> = [];
      let expected = 0;
      let float = 0;
      for (let i = 0; i < 50; i++) {
        const price = prices[i % prices.length] ?? '0.01';
        const quantity = (i % 7) + 1 + (i === 3 ? 993 : 0);
        const p = await product({ price, stock: 1000 });
        lines.push({ productId: p.id, quantity });
        expected += toCents(price) * quantity;
        float += Number(price) * quantity;
      }
      assert.notEqual(float.toFixed(10), (expected / 100).toFixed(10), 'floats would have drifted');
      const res = await placeOrder(app, alice, lines);
      assert.equal(res.statusCode, 201, res.body);
      const order = res.json();
      assert.equal(order.totalAmount, formatCents(expected));
      assert.equal(order.items.length, 50);
      let sum = 0;
      for (const item of order.items) {
        assert.equal(toCents(item.lineTotal), toCents(item.unitPrice) * item.quantity);
        sum += toCents(item.lineTotal);
      }
      assert.equal(sum, expected);
      const stored = await app.database.db
        .selectFrom('orders')
        .select('total_amount')
        .where('id', '=', order.id)
        .executeTakeFirstOrThrow();
      assert.equal(formatCents(toCents(stored.total_amount)), formatCents(expected));
    });

    test('not enough stock → 409 INSUFFICIENT_STOCK naming the product; nothing is taken', async () => {
      const plenty = await product({ stock: 10 });
      const scarce = await product({ stock: 1 });
      const before = await orderCount(app);
      const res = await placeOrder(app, alice, [
        { productId: plenty.id, quantity: 5 },
        { productId: scarce.id, quantity: 2 },
      ]);
      assert.equal(res.statusCode, 409);
      const body = res.json();
      assert.equal(body.code, 'INSUFFICIENT_STOCK');
      assert.equal(body.errors[0].path, '/body/items/1/productId');
      assert.match(body.errors[0].message, new RegExp(scarce.id));
      assert.match(body.detail, new RegExp(scarce.id));
      assert.equal(await stockOf(app, plenty.id), 10, 'the other line was rolled back');
      assert.equal(await stockOf(app, scarce.id), 1);
      assert.equal(await orderCount(app), before);
      assert.equal((await placeOrder(app, alice, [{ productId: scarce.id, quantity: 1 }])).statusCode, 201);
      assert.equal(await stockOf(app, scarce.id), 0);
      assert.equal((await placeOrder(app, alice, [{ productId: scarce.id, quantity: 1 }])).statusCode, 409);
    });

    test('unknown or archived products → 422 VALIDATION_FAILED on the line; nothing is taken', async () => {
      const ok = await product({ stock: 3 });
      const archived = await product({ stock: 3 });
      await app.inject({
        method: 'DELETE',
        url: `/api/products/${archived.id}`,
        headers: bearer(admin.accessToken),
      });
      const unknown = '00000000-0000-4000-8000-000000000000';
      for (const [productId, index] of [
        [unknown, 1],
        [archived.id, 1],
      ] as const) {
        const res = await placeOrder(app, alice, [
          { productId: ok.id, quantity: 1 },
          { productId, quantity: 1 },
        ]);
        assert.equal(res.statusCode, 422, res.body);
        assert.equal(res.json().code, 'VALIDATION_FAILED');
        assert.deepEqual(res.json().errors, [
          { path: `/body/items/${index}/productId`, message: 'is not an orderable product' },
        ]);
      }
      assert.equal(await stockOf(app, ok.id), 3);
      assert.equal(await stockOf(app, archived.id), 3);
    });

    test('bad order requests → 400 (lines, quantities, duplicates); anonymous → 401', async () => {
      const p = await product();
      const q = await product();
      const line = { productId: p.id, quantity: 1 };
      const cases: Array<[unknown, string]> = [
        [{ items: [] }, '/body/items'],
        [{ items: Array.from({ length: 51 }, () => line) }, '/body/items'],
        [{ items: [{ productId: p.id, quantity: 0 }] }, '/body/items/0/quantity'],
        [{ items: [{ productId: p.id, quantity: 1001 }] }, '/body/items/0/quantity'],
        [{ items: [{ productId: p.id, quantity: 1.5 }] }, '/body/items/0/quantity'],
        [{ items: [{ productId: p.id, quantity: '1' }] }, '/body/items/0/quantity'],
        [{ items: [{ productId: 'nope', quantity: 1 }] }, '/body/items/0/productId'],
        [{ items: [{ productId: p.id, quantity: 1, price: '0.01' }] }, '/body/items/0/price'],
        [{ items: [line], userId: bob.user.id }, '/body/userId'],
        [
          {
            items: [{ productId: q.id, quantity: 1 }, line, { productId: p.id.toUpperCase(), quantity: 2 }],
          },
          '/body/items/2/productId',
        ],
      ];
      for (const [payload, path] of cases) {
        const res = await app.inject({
          method: 'POST',
          url: '/api/orders',
          headers: bearer(alice.accessToken),
          payload: payload as object,
        });
        assert.equal(res.statusCode, 400, `${JSON.stringify(payload).slice(0, 100)}: ${res.body}`);
        assert.equal(res.json().errors[0].path, path);
      }
      const fifty = await Promise.all(Array.from({ length: 50 }, () => product({ stock: 1 })));
      const max = await placeOrder(
        app,
        alice,
        fifty.map((x) => ({ productId: x.id, quantity: 1 })),
      );
      assert.equal(max.statusCode, 201, '50 lines is allowed');
      const thousand = await product({ stock: 1000 });
      assert.equal(
        (await placeOrder(app, alice, [{ productId: thousand.id, quantity: 1000 }])).statusCode,
        201,
      );
      const anonymous = await app.inject({ method: 'POST', url: '/api/orders', payload: { items: [line] } });
      assert.equal(anonymous.statusCode, 401);
    });

    test('read: the owner and admins; another user’s order → 404, like a missing one', async () => {
      const p = await product();
      const order = (await placeOrder(app, alice, [{ productId: p.id, quantity: 1 }])).json();
      const own = await getOrder(alice, order.id);
      assert.equal(own.statusCode, 200);
      assert.deepEqual(Object.keys(own.json()).sort(), orderKeys);
      assert.equal((await getOrder(admin, order.id)).statusCode, 200);
      const other = await getOrder(bob, order.id);
      assert.equal(other.statusCode, 404);
      assert.equal(other.json().code, 'NOT_FOUND');
      const missing = await getOrder(alice, '00000000-0000-4000-8000-000000000000');
      assert.equal(missing.statusCode, 404);
      assert.equal(other.json().detail, missing.json().detail);
      assert.equal((await getOrder(alice, 'not-a-uuid')).statusCode, 400);
      assert.equal((await app.inject({ url: `/api/orders/${order.id}` })).statusCode, 401);
    });

    test('list: own orders newest first, paginated, by status; admins see all and filter by user', async () => {
      const carol = await registerUser(app);
      const dave = await registerUser(app);
      const p = await product({ stock: 100 });
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        ids.push((await placeOrder(app, carol, [{ productId: p.id, quantity: 1 }])).json().id);
        await sleep(2); // distinct creation times (ties are ordered by id, not by arrival)
      }
      await placeOrder(app, dave, [{ productId: p.id, quantity: 1 }]);
      await setStatus(admin, ids[1] ?? '', 'paid');

      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const res: LightMyRequestResponse = await app.inject({
          url: `/api/orders?limit=2${cursor === null ? '' : `&cursor=${cursor}`}`,
          headers: bearer(carol.accessToken),
        });
        assert.equal(res.statusCode, 200, res.body);
        const page: { items: Array<{ id: string; userId: string }>; nextCursor: string | null } = res.json();
        assert.deepEqual(Object.keys(page).sort(), ['items', 'nextCursor']);
        for (const order of page.items) {
          assert.deepEqual(Object.keys(order).sort(), orderKeys);
          assert.equal(order.userId, carol.user.id);
        }
        seen.push(...page.items.map((o: { id: string }) => o.id));
        cursor = page.nextCursor;
      } while (cursor !== null);
      assert.deepEqual(seen, [...ids].reverse(), 'newest first, all of them, once');

      const paid = await app.inject({ url: '/api/orders?status=paid', headers: bearer(carol.accessToken) });
      assert.deepEqual(
        paid.json().items.map((o: { id: string }) => o.id),
        [ids[1]],
      );
      const forbidden = await app.inject({
        url: `/api/orders?userId=${dave.user.id}`,
        headers: bearer(carol.accessToken),
      });
      assert.equal(forbidden.statusCode, 403);
      const ownFilter = await app.inject({
        url: `/api/orders?userId=${carol.user.id}`,
        headers: bearer(carol.accessToken),
      });
      assert.equal(ownFilter.json().items.length, 5);

      const byAdmin = await app.inject({
        url: `/api/orders?userId=${dave.user.id}`,
        headers: bearer(admin.accessToken),
      });
      assert.equal(byAdmin.json().items.length, 1);
      assert.equal(byAdmin.json().items[0].userId, dave.user.id);
      const all = await app.inject({ url: '/api/orders?limit=100', headers: bearer(admin.accessToken) });
      const owners = new Set(all.json().items.map((o: { userId: string }) => o.userId));
      assert.ok(owners.has(carol.user.id) && owners.has(dave.user.id));

      for (const bad of [
        'cursor=abc',
        `cursor=${encodeCursor(['x'])}`,
        'status=lost',
        'limit=0',
        'limit=1e309',
        'userId=1',
      ]) {
        const res = await app.inject({ url: `/api/orders?${bad}`, headers: bearer(carol.accessToken) });
        assert.equal(res.statusCode, 400, bad);
      }
    });

    test('cancel: owner or admin, from pending or paid, returns the stock once; otherwise 409', async () => {
      const p = await product({ stock: 10 });
      const first = (await placeOrder(app, alice, [{ productId: p.id, quantity: 4 }])).json();
      assert.equal(await stockOf(app, p.id), 6);
      const byBob = await cancel(bob, first.id);
      assert.equal(byBob.statusCode, 404, 'another user’s order does not exist for them');
      const res = await cancel(alice, first.id);
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.json().status, 'cancelled');
      assert.deepEqual(Object.keys(res.json()).sort(), orderKeys);
      assert.equal(await stockOf(app, p.id), 10);
      const again = await cancel(alice, first.id);
      assert.equal(again.statusCode, 409);
      assert.equal(again.json().code, 'INVALID_STATE_TRANSITION');
      assert.equal(await stockOf(app, p.id), 10, 'returned once');

      const paid = (await placeOrder(app, alice, [{ productId: p.id, quantity: 2 }])).json();
      assert.equal((await setStatus(admin, paid.id, 'paid')).statusCode, 200);
      assert.equal((await cancel(admin, paid.id)).statusCode, 200, 'an admin cancels a paid order');
      assert.equal(await stockOf(app, p.id), 10);

      const shipped = (await placeOrder(app, alice, [{ productId: p.id, quantity: 2 }])).json();
      await setStatus(admin, shipped.id, 'paid');
      await setStatus(admin, shipped.id, 'shipped');
      const late = await cancel(alice, shipped.id);
      assert.equal(late.statusCode, 409);
      assert.equal(late.json().code, 'INVALID_STATE_TRANSITION');
      assert.equal(await stockOf(app, p.id), 8);
      assert.equal((await cancel(alice, '00000000-0000-4000-8000-000000000000')).statusCode, 404);
    });

    test('status changes: admins along the state machine; any other move → 409; customers → 403', async () => {
      const p = await product({ stock: 10 });
      const order = (await placeOrder(app, alice, [{ productId: p.id, quantity: 3 }])).json();
      const byOwner = await setStatus(alice, order.id, 'paid');
      assert.equal(byOwner.statusCode, 403);
      assert.equal(byOwner.json().code, 'FORBIDDEN');
      assert.equal((await setStatus(bob, order.id, 'cancelled')).statusCode, 403);

      for (const bad of ['shipped', 'delivered', 'pending']) {
        const res = await setStatus(admin, order.id, bad);
        assert.equal(res.statusCode, 409, `pending → ${bad}`);
        assert.equal(res.json().code, 'INVALID_STATE_TRANSITION');
      }
      let last = order.updatedAt;
      for (const next of ['paid', 'shipped', 'delivered']) {
        const res = await setStatus(admin, order.id, next);
        assert.equal(res.statusCode, 200, `→ ${next}: ${res.body}`);
        assert.equal(res.json().status, next);
        assert.deepEqual(Object.keys(res.json()).sort(), orderKeys);
        assert.ok(res.json().updatedAt >= last);
        last = res.json().updatedAt;
      }
      for (const bad of ['paid', 'shipped', 'cancelled', 'pending', 'delivered']) {
        assert.equal((await setStatus(admin, order.id, bad)).statusCode, 409, `delivered → ${bad}`);
      }
      assert.equal(await stockOf(app, p.id), 7);

      const toCancel = (await placeOrder(app, alice, [{ productId: p.id, quantity: 2 }])).json();
      await setStatus(admin, toCancel.id, 'paid');
      assert.equal((await setStatus(admin, toCancel.id, 'pending')).statusCode, 409, 'paid → pending');
      assert.equal((await setStatus(admin, toCancel.id, 'cancelled')).statusCode, 200);
      assert.equal(await stockOf(app, p.id), 7, 'cancelling by status returns the stock too');
      assert.equal((await setStatus(admin, toCancel.id, 'paid')).statusCode, 409, 'cancelled is final');
      assert.equal((await setStatus(admin, toCancel.id, 'bogus')).statusCode, 400);
      assert.equal((await setStatus(admin, '00000000-0000-4000-8000-000000000000', 'paid')).statusCode, 404);
    });

    test('concurrent cancels of one order: exactly one succeeds and the stock comes back once', async () => {
      const p = await product({ stock: 5 });
      const order = (await placeOrder(app, alice, [{ productId: p.id, quantity: 5 }])).json();
      const results = await Promise.all([
        ...Array.from({ length: 10 }, () => cancel(alice, order.id)),
        ...Array.from({ length: 10 }, () => setStatus(admin, order.id, 'cancelled')),
      ]);
      const codes = results.map((r) => r.statusCode);
      assert.equal(codes.filter((c) => c === 200).length, 1, codes.join(','));
      assert.equal(codes.filter((c) => c === 409).length, 19, codes.join(','));
      assert.equal(await stockOf(app, p.id), 5);
      assert.equal(await unitsHeld(app, p.id), 0);
    });

    test('a customer who deletes their account keeps their orders on record (guide correction 17)', async () => {
      const leaver = await registerUser(app);
      const p = await product({ stock: 3 });
      const order = (await placeOrder(app, leaver, [{ productId: p.id, quantity: 1 }])).json();
      const deleted = await app.inject({
        method: 'DELETE',
        url: '/api/users/me',
        headers: bearer(leaver.accessToken),
      });
      assert.equal(deleted.statusCode, 204);
      const kept = await getOrder(admin, order.id);
      assert.equal(kept.statusCode, 200);
      assert.deepEqual(kept.json(), order);
      const listed = await app.inject({
        url: `/api/orders?userId=${leaver.user.id}`,
        headers: bearer(admin.accessToken),
      });
      assert.deepEqual(
        listed.json().items.map((o: { id: string }) => o.id),
        [order.id],
      );
    });

    test('archived products keep their past orders readable', async () => {
      const p = await product({ stock: 2 });
      const order = (await placeOrder(app, alice, [{ productId: p.id, quantity: 1 }])).json();
      await app.inject({
        method: 'DELETE',
        url: `/api/products/${p.id}`,
        headers: bearer(admin.accessToken),
      });
      const res = await getOrder(alice, order.id);
      assert.equal(res.statusCode, 200);
      assert.equal(res.json().items[0].productId, p.id);
      assert.equal((await placeOrder(app, alice, [{ productId: p.id, quantity: 1 }])).statusCode, 422);
    });
  });
}
