import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { findUnstorable, unstorableReason } from '../../src/infra/http/storable-text.js';
import { buildTestApp, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';

test('unstorableReason: NUL and lone surrogates, never a well-formed pair or other controls', () => {
  assert.match(String(unstorableReason('a\u0000b')), /U\+0000/);
  assert.match(String(unstorableReason('\ud800')), /lone surrogate/);
  assert.match(String(unstorableReason('x\udc00')), /lone surrogate/);
  assert.match(String(unstorableReason('\udc00\ud800')), /lone surrogate/, 'a reversed pair');
  assert.equal(unstorableReason('😀'), undefined);
  assert.equal(unstorableReason('\u0001\u001f\u007f\u0085\u202e\ufeff'), undefined);
});

test('findUnstorable names the first bad field; keys too; deep nesting cannot overflow the stack', () => {
  assert.deepEqual(findUnstorable({ a: 'ok', b: ['x', 'y\u0000'] }, '/body'), {
    path: '/body/b/1',
    message: 'must not contain U+0000 (NUL)',
  });
  assert.equal(findUnstorable({ 'a/b~': '\ud800' }, '/body')?.path, '/body/a~1b~0');
  assert.deepEqual(findUnstorable({ 'k\u0000': 1 }, '/body'), {
    path: '/body/k\\u0000',
    message: 'property name must not contain U+0000 (NUL)',
  });
  let deep: unknown = '\u0000';
  for (let i = 0; i < 100_000; i++) deep = [deep];
  assert.equal(findUnstorable(deep, '/body')?.path.length, '/body'.length + 100_000 * 2);
  assert.equal(findUnstorable({ a: [1, null, true, { b: 'fine' }] }, '/body'), undefined);
});

for (const engine of engines) {
  describe(`text the database cannot store → 400 naming the field, on ${engine}`, {
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

    async function assertRefused(options: InjectOptions, path: string) {
      const res = await app.inject(options);
      assert.equal(res.statusCode, 400, `${JSON.stringify(options)} → ${res.body}`);
      const body = res.json();
      assert.equal(body.code, 'VALIDATION_FAILED');
      assert.equal(body.errors?.[0]?.path, path, res.body);
    }

    const bad = ['\u0000', 'a\u0000', '\ud800', 'x\udfff', '\udc00\ud800'];

    test('POST /api/auth/login with a NUL login (the finding: 500 on PostgreSQL)', async () => {
      for (const text of bad) {
        await assertRefused(
          { method: 'POST', url: '/api/auth/login', payload: { login: text, password: ' ' } },
          '/body/login',
        );
      }
    });

    test('register, profile and product bodies', async () => {
      for (const text of bad) {
        await assertRefused(
          {
            method: 'POST',
            url: '/api/auth/register',
            payload: { email: 'x@example.com', username: `u${text}`, password: 'long enough password' },
          },
          '/body/username',
        );
        await assertRefused(
          {
            method: 'PATCH',
            url: '/api/users/me',
            headers: bearer(customer.accessToken),
            payload: { username: text },
          },
          '/body/username',
        );
        await assertRefused(
          {
            method: 'POST',
            url: '/api/products',
            headers: bearer(admin.accessToken),
            payload: { sku: 'SKU-1', name: 'n', description: text, price: '1.00', stock: 1 },
          },
          '/body/description',
        );
      }
    });

    test('query strings: admin users q, products q and cursor (raw and percent-encoded)', async () => {
      await assertRefused({ url: '/api/users?q=%00', headers: bearer(admin.accessToken) }, '/querystring/q');
      await assertRefused({ url: '/api/products?q=ab%00' }, '/querystring/q');
      await assertRefused({ url: '/api/products', query: { cursor: '\ud800' } }, '/querystring/cursor');
    });

    test('path parameters', async () => {
      await assertRefused({ url: '/api/products/%00' }, '/params/id');
      await assertRefused({ url: '/api/users/%00', headers: bearer(customer.accessToken) }, '/params/id');
    });

    test('headers the service reads (user-agent is stored with the session)', async () => {
      await assertRefused(
        {
          method: 'POST',
          url: '/api/auth/login',
          headers: { 'user-agent': 'agent\ud800' },
          payload: { login: customer.email, password: customer.password },
        },
        '/headers/user-agent',
      );
      await assertRefused(
        {
          method: 'POST',
          url: '/api/orders',
          headers: { ...bearer(customer.accessToken), 'idempotency-key': 'k\udc00' },
          payload: { items: [] },
        },
        '/headers/idempotency-key',
      );
    });

    test('a JSON body whose bytes are not UTF-8 is refused, not decoded with U+FFFD', async () => {
      const json = (inner: number[]) =>
        Buffer.concat([Buffer.from('{"login":"'), Buffer.from(inner), Buffer.from('","password":"x"}')]);
      for (const bytes of [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xff], [0xe2, 0x82]]) {
        await assertRefused(
          {
            method: 'POST',
            url: '/api/auth/login',
            headers: { 'content-type': 'application/json' },
            payload: json(bytes),
          },
          '/body',
        );
      }
      const ok = await app.inject({
        method: 'POST',
        url: '/api/auth/login',
        headers: { 'content-type': 'application/json' },
        payload: json([...Buffer.from('😀é')]),
      });
      assert.equal(ok.statusCode, 401, 'valid UTF-8 reaches the handler');
      const poisoned = await app.inject({
        method: 'POST',
        url: '/api/auth/login',
        headers: { 'content-type': 'application/json' },
        payload: '{"__proto__":{"x":1},"login":"a","password":"b"}',
      });
      assert.equal(poisoned.statusCode, 400, 'prototype poisoning is still refused');
    });

    test('what the databases can store still goes through as sent', async () => {
      const name = 'Crème 😀 \u202eabc\u202c e\u0301';
      const res = await app.inject({
        method: 'POST',
        url: '/api/products',
        headers: bearer(admin.accessToken),
        payload: { sku: `SKU-${engine}-ok`, name: 'Kettle', description: name, price: '1.00', stock: 1 },
      });
      assert.equal(res.statusCode, 201, res.body);
      const read = await app.inject({ url: `/api/products/${res.json().id}` });
      assert.equal(read.json().description, name);
    });
  });
}
