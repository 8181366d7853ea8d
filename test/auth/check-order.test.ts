import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildTestApp } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

interface Operation {
  readonly method: Method;
  readonly path: string;
  readonly url: string;
  readonly hasBody: boolean;
}

/** Every operation the OpenAPI document marks as needing a bearer token, with malformed input. */
async function protectedOperations(app: FastifyInstance): Promise<Operation[]> {
  const spec = (await app.inject({ url: '/docs/openapi.json' })).json() as {
    paths: Record<string, Record<string, { security?: unknown[]; requestBody?: unknown }>>;
  };
  const operations: Operation[] = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      if (!Array.isArray(operation.security) || operation.security.length === 0) continue;
      // Path parameters that fail their pattern, and a query that fails its schema where one is taken.
      const url = `${path.replace(/\{[^}]+\}/g, 'not-an-id')}?limit=many`;
      operations.push({
        method: method.toUpperCase() as Method,
        path,
        url,
        hasBody: operation.requestBody !== undefined,
      });
    }
  }
  return operations;
}

function send(app: FastifyInstance, op: Operation, headers: Record<string, string> = {}) {
  return app.inject({
    method: op.method,
    url: op.url,
    headers: { ...headers, ...(op.hasBody ? { 'content-type': 'application/json' } : {}) },
    ...(op.hasBody ? { payload: JSON.stringify({ unexpected: [1] }) } : {}),
  });
}

/**
 * Who is asking is checked before what is asked: a caller without a valid token gets 401 from every
 * protected route, whatever its input, never a 400 listing the fields the route expects; a customer
 * on an admin route gets 403 before the body is validated. Only the checks every request passes
 * (JSON syntax, text that cannot be stored) come before them.
 */
describe('authentication and roles come before validation', () => {
  let app: FastifyInstance;
  let operations: Operation[];
  let customer: Account;
  let admin: Account;

  before(async () => {
    app = await buildTestApp();
    operations = await protectedOperations(app);
    customer = await registerUser(app);
    admin = await createAdmin(app);
  });
  after(() => app?.close());

  test('every protected route answers 401 to malformed input without a token, or with a bad one', async () => {
    assert.ok(operations.length >= 20, `protected operations in the document: ${operations.length}`);
    for (const op of operations) {
      for (const headers of [{}, bearer('x.y.z')]) {
        const res = await send(app, op, headers);
        assert.equal(res.statusCode, 401, `${op.method} ${op.path}: ${res.body}`);
        const problem = res.json();
        assert.equal(problem.code, 'UNAUTHENTICATED');
        assert.equal(problem.errors, undefined, `${op.method} ${op.path} listed fields: ${res.body}`);
      }
    }
  });

  test('a customer on an admin route gets 403 before validation; an admin gets the 400', async () => {
    const adminOnly = [
      { method: 'POST', url: '/api/products', payload: { unexpected: [1] } },
      { method: 'PATCH', url: '/api/products/not-an-id', payload: { price: -1 } },
      { method: 'DELETE', url: '/api/products/not-an-id' },
      { method: 'GET', url: '/api/users?limit=many' },
    ] as const;
    for (const request of adminOnly) {
      const asCustomer = await app.inject({ ...request, headers: bearer(customer.accessToken) });
      assert.equal(asCustomer.statusCode, 403, `${request.method} ${request.url}: ${asCustomer.body}`);
      assert.equal(asCustomer.json().errors, undefined);
      const asAdmin = await app.inject({ ...request, headers: bearer(admin.accessToken) });
      assert.equal(asAdmin.statusCode, 400, `${request.method} ${request.url}: ${asAdmin.body}`);
    }
  });

  test('with a valid token, malformed input is still a 400 naming the field', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/api/orders',
      headers: bearer(customer.accessToken),
      payload: { items: 'x' },
    });
    assert.equal(res.statusCode, 400, res.body);
    assert.deepEqual(
      res.json().errors.map((e: { path: string }) => e.path),
      ['/body/items'],
    );
  });
});
