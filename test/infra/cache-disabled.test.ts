import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildTestApp } from '../helper.js';
import { bearer, createAdmin } from '../support/accounts.js';

describe('CACHE_ENABLED=false', () => {
  test('every read goes to the database: a change made behind the service’s back shows at once', async () => {
    const app = await buildTestApp({ env: { CACHE_ENABLED: 'false' } });
    try {
      assert.equal(app.cache.kind, 'none');
      const admin = await createAdmin(app);
      const created = await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: bearer(admin.accessToken),
        payload: { sku: 'NOCACHE-1', name: 'Before', price: '1.00', stock: 1 },
      });
      assert.equal(created.statusCode, 201, created.body);
      const id = created.json().id as string;
      assert.equal((await app.inject({ url: `/api/products/${id}` })).json().name, 'Before');
      await app.database.db.updateTable('products').set({ name: 'After' }).where('id', '=', id).execute();
      assert.equal((await app.inject({ url: `/api/products/${id}` })).json().name, 'After');
      const list = await app.inject({ url: '/api/products?q=NOCACHE' });
      assert.equal(list.json().items[0].name, 'After');
      assert.deepEqual((await app.inject({ url: '/ready' })).json().checks, { database: 'up', cache: 'up' });
    } finally {
      await app.close();
    }
  });
});
