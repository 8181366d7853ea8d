import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { encodeCursor } from '../../src/lib/pagination.js';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';
import { createProduct, productKeys, uniqueSku } from './support.js';

for (const engine of engines) {
  describe(`products on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    let customer: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
      customer = await registerUser(app);
    });
    after(() => app?.close());

    const asAdmin = () => bearer(admin.accessToken);
    const list = async (query: string) => {
      const res = await app.inject({ url: `/api/products?${query}` });
      assert.equal(res.statusCode, 200, res.body);
      return res.json() as { items: Array<Record<string, unknown>>; nextCursor: string | null };
    };

    test('create → 201 with exactly the documented fields; money as a two-place string', async () => {
      const sku = uniqueSku();
      const res = await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: asAdmin(),
        payload: { sku, name: '  Kettle  ', description: 'Boils water.', price: '19.9', stock: 7 },
      });
      assert.equal(res.statusCode, 201, res.body);
      const product = res.json();
      assert.deepEqual(Object.keys(product).sort(), productKeys);
      assert.equal(product.sku, sku);
      assert.equal(product.name, 'Kettle', 'surrounding blanks are trimmed');
      assert.equal(product.price, '19.90');
      assert.equal(product.currency, 'USD');
      assert.equal(product.stock, 7);
      assert.equal(product.createdAt, product.updatedAt);
      assert.ok(!Number.isNaN(Date.parse(product.createdAt)));
      const zero = await createProduct(app, admin, { price: '0', stock: 0 });
      assert.equal(zero.price, '0.00');
      const top = await createProduct(app, admin, { price: '99999999.99' });
      assert.equal(top.price, '99999999.99');
      assert.equal((await createProduct(app, admin)).description, '');
    });

    test('create: only admins; a duplicate sku → 409; bad input → 400 naming the field', async () => {
      const payload = { sku: uniqueSku(), name: 'Lamp', price: '5.00', stock: 1 };
      const anonymous = await app.inject({ method: 'POST', url: '/api/products', payload });
      assert.equal(anonymous.statusCode, 401);
      const asCustomer = await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: bearer(customer.accessToken),
        payload,
      });
      assert.equal(asCustomer.statusCode, 403);
      assert.equal(asCustomer.json().code, 'FORBIDDEN');

      await createProduct(app, admin, payload);
      const duplicate = await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: asAdmin(),
        payload,
      });
      assert.equal(duplicate.statusCode, 409);
      assert.equal(duplicate.json().code, 'CONFLICT');
      assert.deepEqual(duplicate.json().errors, [{ path: '/body/sku', message: 'is already taken' }]);

      const cases: Array<[Record<string, unknown>, string]> = [
        [{ price: 19.99 }, '/body/price'],
        [{ price: '19.999' }, '/body/price'],
        [{ price: '-1.00' }, '/body/price'],
        [{ price: '100000000.00' }, '/body/price'],
        [{ price: '1e3' }, '/body/price'],
        [{ stock: -1 }, '/body/stock'],
        [{ stock: 1.5 }, '/body/stock'],
        [{ stock: '3' }, '/body/stock'],
        [{ name: '   ' }, '/body/name'],
        [{ name: 'a\u0000b' }, '/body/name'],
        [{ description: 'nul \u0000' }, '/body/description'],
        [{ sku: 'has space' }, '/body/sku'],
        [{ sku: 'x'.repeat(65) }, '/body/sku'],
        [{ archived: true }, '/body/archived'],
      ];
      for (const [override, path] of cases) {
        const res = await app.inject({
          method: 'POST',
          url: '/api/products',
          headers: asAdmin(),
          payload: { sku: uniqueSku(), name: 'Valid', price: '1.00', stock: 1, ...override },
        });
        assert.equal(res.statusCode, 400, `${JSON.stringify(override)}: ${res.body}`);
        assert.equal(res.json().code, 'VALIDATION_FAILED');
        assert.equal(res.json().errors[0].path, path, JSON.stringify(override));
      }
    });

    test('read → 200 with a strong ETag; If-None-Match → 304; unknown → 404; malformed id → 400', async () => {
      const created = await createProduct(app, admin, { price: '3.50' });
      const res = await app.inject({ url: `/api/products/${created.id}` });
      assert.equal(res.statusCode, 200);
      assert.deepEqual(res.json(), created);
      assert.deepEqual(Object.keys(res.json()).sort(), productKeys);
      assert.match(String(res.headers['content-type']), /^application\/json; charset=utf-8/);
      const etag = String(res.headers.etag);
      assert.match(etag, /^"[A-Za-z0-9_-]+"$/, 'a strong ETag');

      for (const header of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
        const cached = await app.inject({
          url: `/api/products/${created.id}`,
          headers: { 'if-none-match': header },
        });
        assert.equal(cached.statusCode, 304, String(header));
        assert.equal(cached.body, '');
        assert.equal(cached.headers.etag, etag);
      }
      const stale = await app.inject({
        url: `/api/products/${created.id}`,
        headers: { 'if-none-match': '"not-it"' },
      });
      assert.equal(stale.statusCode, 200);

      const upper = await app.inject({ url: `/api/products/${created.id.toUpperCase()}` });
      assert.equal(upper.statusCode, 200, 'ids are case-insensitive on both engines');
      assert.equal(upper.json().id, created.id);

      const missing = await app.inject({ url: '/api/products/00000000-0000-4000-8000-000000000000' });
      assert.equal(missing.statusCode, 404);
      assert.equal(missing.json().code, 'NOT_FOUND');
      for (const bad of ['nope', 'urn:uuid:00000000-0000-4000-8000-000000000000', '1']) {
        const res400 = await app.inject({ url: `/api/products/${encodeURIComponent(bad)}` });
        assert.equal(res400.statusCode, 400, bad);
      }
    });

    test('update → 200; the ETag changes; a taken sku → 409; unknown → 404; only admins', async () => {
      const product = await createProduct(app, admin, { price: '10.00', stock: 3 });
      const before = await app.inject({ url: `/api/products/${product.id}` });
      const res = await app.inject({
        method: 'PATCH',
        url: `/api/products/${product.id}`,
        headers: asAdmin(),
        payload: { price: '12.5', stock: 0, name: 'Renamed', description: 'New words.' },
      });
      assert.equal(res.statusCode, 200, res.body);
      const updated = res.json();
      assert.deepEqual(Object.keys(updated).sort(), productKeys);
      assert.equal(updated.price, '12.50');
      assert.equal(updated.stock, 0);
      assert.equal(updated.name, 'Renamed');
      assert.equal(updated.description, 'New words.');
      assert.equal(updated.sku, product.sku);
      assert.equal(updated.createdAt, product.createdAt);
      assert.ok(updated.updatedAt >= String(product.updatedAt));

      const after = await app.inject({ url: `/api/products/${product.id}` });
      assert.deepEqual(after.json(), updated);
      assert.notEqual(after.headers.etag, before.headers.etag);

      const other = await createProduct(app, admin);
      const taken = await app.inject({
        method: 'PATCH',
        url: `/api/products/${product.id}`,
        headers: asAdmin(),
        payload: { sku: other.sku },
      });
      assert.equal(taken.statusCode, 409);
      assert.equal(taken.json().code, 'CONFLICT');

      const newSku = uniqueSku();
      const renamed = await app.inject({
        method: 'PATCH',
        url: `/api/products/${product.id}`,
        headers: asAdmin(),
        payload: { sku: newSku },
      });
      assert.equal(renamed.json().sku, newSku);

      const empty = await app.inject({
        method: 'PATCH',
        url: `/api/products/${product.id}`,
        headers: asAdmin(),
        payload: {},
      });
      assert.equal(empty.statusCode, 400);
      const unknown = await app.inject({
        method: 'PATCH',
        url: '/api/products/00000000-0000-4000-8000-000000000000',
        headers: asAdmin(),
        payload: { stock: 1 },
      });
      assert.equal(unknown.statusCode, 404);
      const byCustomer = await app.inject({
        method: 'PATCH',
        url: `/api/products/${product.id}`,
        headers: bearer(customer.accessToken),
        payload: { stock: 1000 },
      });
      assert.equal(byCustomer.statusCode, 403);
    });

    test('archive → 204; then gone from reads, lists and edits; archiving twice → 404', async () => {
      const tag = uniqueSku('ARCH');
      const product = await createProduct(app, admin, { sku: `${tag}-1` });
      await createProduct(app, admin, { sku: `${tag}-2` });
      assert.equal((await list(`q=${tag}`)).items.length, 2);
      assert.equal((await app.inject({ url: `/api/products/${product.id}` })).statusCode, 200);

      const byCustomer = await app.inject({
        method: 'DELETE',
        url: `/api/products/${product.id}`,
        headers: bearer(customer.accessToken),
      });
      assert.equal(byCustomer.statusCode, 403);
      const res = await app.inject({
        method: 'DELETE',
        url: `/api/products/${product.id}`,
        headers: asAdmin(),
      });
      assert.equal(res.statusCode, 204);
      assert.equal(res.body, '');

      assert.equal((await app.inject({ url: `/api/products/${product.id}` })).statusCode, 404);
      assert.deepEqual(
        (await list(`q=${tag}`)).items.map((p) => p.sku),
        [`${tag}-2`],
      );
      const edit = await app.inject({
        method: 'PATCH',
        url: `/api/products/${product.id}`,
        headers: asAdmin(),
        payload: { stock: 5 },
      });
      assert.equal(edit.statusCode, 404);
      const again = await app.inject({
        method: 'DELETE',
        url: `/api/products/${product.id}`,
        headers: asAdmin(),
      });
      assert.equal(again.statusCode, 404);
      const row = await app.database.db
        .selectFrom('products')
        .select('archived_at')
        .where('id', '=', product.id)
        .executeTakeFirstOrThrow();
      assert.ok(row.archived_at !== null, 'archived, not deleted');
    });

    test('list: sku order, cursor pagination to the end, exact keys; limit bounds', async () => {
      const tag = uniqueSku('PAGE');
      const skus = ['e', 'a', 'c', 'b', 'd'].map((s) => `${tag}-${s}`);
      for (const sku of skus) await createProduct(app, admin, { sku });
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await list(`q=${tag}&limit=2${cursor === null ? '' : `&cursor=${cursor}`}`);
        assert.deepEqual(Object.keys(page).sort(), ['items', 'nextCursor']);
        for (const item of page.items) assert.deepEqual(Object.keys(item).sort(), productKeys);
        seen.push(...page.items.map((p) => String(p.sku)));
        cursor = page.nextCursor;
        pages += 1;
      } while (cursor !== null);
      assert.deepEqual(seen, [...skus].sort());
      assert.equal(pages, 3);

      const everything = await list('');
      assert.ok(everything.items.length <= 20, 'default limit 20');
      for (const limit of ['0', '101', '-1', 'many', '1e309', '-1e309', 'Infinity', '1.5']) {
        const res = await app.inject({ url: `/api/products?limit=${limit}` });
        assert.equal(res.statusCode, 400, limit);
      }
      assert.equal((await list(`q=${tag}&limit=100`)).items.length, 5);
    });

    test('list: pages stay stable while products are added before and after the cursor', async () => {
      const tag = uniqueSku('STABLE');
      for (const s of ['b', 'd', 'f', 'h']) await createProduct(app, admin, { sku: `${tag}-${s}` });
      const first = await list(`q=${tag}&limit=2`);
      assert.deepEqual(
        first.items.map((p) => p.sku),
        [`${tag}-b`, `${tag}-d`],
      );
      await createProduct(app, admin, { sku: `${tag}-a` });
      await createProduct(app, admin, { sku: `${tag}-c` });
      await createProduct(app, admin, { sku: `${tag}-e` });
      const second = await list(`q=${tag}&limit=2&cursor=${first.nextCursor}`);
      assert.deepEqual(
        second.items.map((p) => p.sku),
        [`${tag}-e`, `${tag}-f`],
        'no repeats, nothing skipped that was there before',
      );
    });

    test('list: a forged or foreign cursor → 400, never 500', async () => {
      const forged = [
        'not-base64!',
        encodeCursor(['x', 'y']),
        encodeCursor(['has space']),
        encodeCursor(['nul\u0000']),
        Buffer.from('{"a":1}').toString('base64url'),
        encodeCursor(['2026-01-01T00:00:00.000Z', '00000000-0000-4000-8000-000000000000']),
      ];
      for (const cursor of forged) {
        const res = await app.inject({ url: `/api/products?cursor=${encodeURIComponent(cursor)}` });
        assert.equal(res.statusCode, 400, cursor);
        assert.equal(res.json().code, 'VALIDATION_FAILED');
        assert.equal(res.json().errors[0].path, '/querystring/cursor');
      }
    });

    test('list filters: q on name or sku (case-insensitive, wildcards literal), price range, stock', async () => {
      const tag = uniqueSku('FILTER');
      await createProduct(app, admin, { sku: `${tag}-1`, name: 'Blue Mug', price: '4.99', stock: 0 });
      await createProduct(app, admin, { sku: `${tag}-2`, name: 'Red mug 50%', price: '5.00', stock: 3 });
      await createProduct(app, admin, { sku: `${tag}-3`, name: 'Teapot', price: '25.00', stock: 1 });
      const skus = async (query: string) =>
        (await list(`q=${encodeURIComponent(tag)}&${query}`)).items.map((p) => String(p.sku).slice(-1));

      assert.deepEqual(await skus(''), ['1', '2', '3']);
      const byName = (await list(`q=MUG`)).items.filter((p) => String(p.sku).startsWith(tag));
      assert.deepEqual(
        byName.map((p) => p.name),
        ['Blue Mug', 'Red mug 50%'],
      );
      assert.deepEqual(
        (await list(`q=${encodeURIComponent(tag.toLowerCase())}-3`)).items.map((p) => p.name),
        ['Teapot'],
        'sku matches case-insensitively',
      );
      assert.deepEqual(
        (await list(`q=${encodeURIComponent('50%')}`)).items.map((p) => p.name),
        ['Red mug 50%'],
      );
      assert.equal((await list(`q=${encodeURIComponent(`${tag}_`)}`)).items.length, 0, '_ is not a wildcard');
      assert.deepEqual(await skus('minPrice=5'), ['2', '3']);
      assert.deepEqual(await skus('maxPrice=5.00'), ['1', '2']);
      assert.deepEqual(await skus('minPrice=4.99'), ['1', '2', '3']);
      assert.deepEqual(await skus('minPrice=5.01&maxPrice=25'), ['3']);
      assert.deepEqual(await skus('minPrice=30&maxPrice=1'), []);
      assert.deepEqual(await skus('inStock=true'), ['2', '3']);
      assert.deepEqual(await skus('inStock=false'), ['1']);
      for (const query of ['minPrice=abc', 'maxPrice=1.234', 'minPrice=-1', 'inStock=maybe', 'q=']) {
        const res = await app.inject({ url: `/api/products?${query}` });
        assert.equal(res.statusCode, 400, query);
      }
    });
  });
}
