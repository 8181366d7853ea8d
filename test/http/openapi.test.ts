import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { OpenAPI3 } from 'openapi-typescript';
import { createShipshapeClient, type ShipshapeClient } from '../../client/index.js';
import { clientSchemaPath, generateClientSchema, lintDocument } from '../../scripts/openapi.js';
import { buildTestApp } from '../helper.js';
import { createAdmin } from '../support/accounts.js';

const methods = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

/**
 * The document the running service serves (over HTTP, from a listening app): Redocly's recommended
 * rules with zero errors, every operation named and secured, and a typed client generated from it
 * that drives a whole customer flow.
 */
describe('the OpenAPI document the service serves', () => {
  let app: FastifyInstance;
  let baseUrl: string;
  let document: OpenAPI3;
  before(async () => {
    app = await buildTestApp();
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    assert.ok(address !== null && typeof address === 'object');
    baseUrl = `http://127.0.0.1:${address.port}`;
    const res = await fetch(`${baseUrl}/docs/openapi.json`);
    assert.equal(res.status, 200);
    document = (await res.json()) as OpenAPI3;
  });
  after(() => app?.close());

  test('Redocly CLI, recommended rules: zero errors', () => {
    const result = lintDocument(document);
    console.log(result.output);
    assert.equal(result.status, 0, result.output);
    assert.match(result.output, /Your API description is valid/);
  });

  test('every operation has a summary, an operationId and security; no trailing-slash paths', () => {
    const ids = new Set<string>();
    let operations = 0;
    for (const [path, item] of Object.entries(document.paths ?? {})) {
      assert.ok(path === '/' || !path.endsWith('/'), `${path} has a trailing slash`);
      for (const [method, operation] of Object.entries(item as Record<string, Record<string, unknown>>)) {
        if (!methods.includes(method)) continue;
        operations++;
        const name = `${method.toUpperCase()} ${path}`;
        assert.equal(typeof operation.summary, 'string', `${name}: summary`);
        assert.equal(typeof operation.operationId, 'string', `${name}: operationId`);
        assert.ok(!ids.has(operation.operationId as string), `${name}: operationId is unique`);
        ids.add(operation.operationId as string);
        assert.ok(Array.isArray(operation.security), `${name}: security is declared`);
        const responses = operation.responses as Record<string, { content?: Record<string, unknown> }>;
        for (const [status, response] of Object.entries(responses)) {
          if (Number(status) >= 400 && response.content !== undefined)
            assert.deepEqual(
              Object.keys(response.content),
              ['application/problem+json'],
              `${name} ${status}`,
            );
        }
      }
    }
    assert.ok(operations >= 26, `${operations} operations`);
  });

  test('the old trailing-slash paths still answer', async () => {
    for (const path of ['/api/products', '/api/products/']) {
      const res = await fetch(`${baseUrl}${path}`);
      assert.equal(res.status, 200, path);
    }
  });

  test('client/schema.ts is what the generator makes from the served document (npm run client:generate)', async () => {
    assert.equal(
      readFileSync(clientSchemaPath, 'utf8'),
      await generateClientSchema(document),
      'client/schema.ts is stale: run `npm run client:generate` and commit it',
    );
  });

  test('the typed client drives register → login → list products → order → read the order', async () => {
    // The catalog: one product, made by an admin through the same client.
    const admin = await createAdmin(app);
    const asAdmin: ShipshapeClient = createShipshapeClient({
      baseUrl,
      headers: { authorization: `Bearer ${admin.accessToken}` },
    });
    const created = await asAdmin.POST('/api/products', {
      body: { sku: 'CLIENT-FLOW-1', name: 'Typed kettle', price: '24.50', stock: 3 },
    });
    assert.equal(created.response.status, 201, JSON.stringify(created.error));

    const api = createShipshapeClient({ baseUrl });
    const email = `client-flow-${process.pid}@example.com`;
    const password = 'typed client password';
    const registered = await api.POST('/api/auth/register', {
      body: { email, username: `clientflow${process.pid}`, password },
    });
    assert.equal(registered.response.status, 201, JSON.stringify(registered.error));
    assert.equal(registered.data?.user.email, email);

    const refused = await api.POST('/api/auth/login', {
      body: { login: email, password: 'wrong password!' },
    });
    assert.equal(refused.response.status, 401);
    assert.equal(refused.error?.code, 'UNAUTHENTICATED', 'errors are typed problem details');

    const loggedIn = await api.POST('/api/auth/login', { body: { login: email, password } });
    assert.equal(loggedIn.response.status, 200, JSON.stringify(loggedIn.error));
    const token = loggedIn.data?.accessToken;
    assert.ok(token);
    const headers = { authorization: `Bearer ${token}` };

    const listed = await api.GET('/api/products', { params: { query: { q: 'Typed', limit: 10 } } });
    assert.equal(listed.response.status, 200, JSON.stringify(listed.error));
    const product = listed.data?.items.find((p) => p.sku === 'CLIENT-FLOW-1');
    assert.ok(product, 'the product is listed');
    assert.equal(product.price, '24.50');

    const ordered = await api.POST('/api/orders', {
      headers,
      params: { header: { 'idempotency-key': `client-flow-${process.pid}` } },
      body: { items: [{ productId: product.id, quantity: 2 }] },
    });
    assert.equal(ordered.response.status, 201, JSON.stringify(ordered.error));
    assert.equal(ordered.data?.totalAmount, '49.00');

    const orderId = ordered.data?.id;
    assert.ok(orderId);
    const read = await api.GET('/api/orders/{id}', { headers, params: { path: { id: orderId } } });
    assert.equal(read.response.status, 200, JSON.stringify(read.error));
    assert.equal(read.data?.status, 'pending');
    assert.deepEqual(
      read.data?.items.map((line) => [line.sku, line.quantity, line.lineTotal]),
      [['CLIENT-FLOW-1', 2, '49.00']],
    );
  });
});
