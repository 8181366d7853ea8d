import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../src/app.js';
import { flagDefinitions } from '../../src/modules/flags/flags.definitions.js';
import { decide, rolloutBucket } from '../../src/modules/flags/flags.evaluate.js';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { redisUrl } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';
import {
  buildTestApp,
  captureLogs,
  deleteKeys,
  type EngineName,
  engines,
  skipEngine,
  testConfig,
  testDatabaseEnv,
} from '../helper.js';
import { type Account, bearer, createAdmin, registerUser } from '../support/accounts.js';

const flag = 'checkout-unit-limit';
const flagKeys = ['default', 'description', 'key', 'override'];
const overrideKeys = ['allowUsers', 'enabled', 'percentage', 'updatedAt', 'updatedBy'];
/** 10 % of 10,000 ids: the binomial standard deviation is 30 ids (0.3 points); ±1.5 points is 5 of them. */
const rolloutTolerance = 1.5;

function ids(n: number): string[] {
  return Array.from({ length: n }, () => randomUUID());
}

describe('feature-flag evaluation', () => {
  test('a 10 % rollout over 10,000 ids lands within ±1.5 points; raising it only adds users; each flag hashes apart', () => {
    const users = ids(10_000);
    const at = (percentage: number, name: string = flag) =>
      new Set(users.filter((id) => decide(name, { enabled: true, percentage, allowUsers: [] }, id).enabled));
    const ten = at(10);
    const share = (ten.size / users.length) * 100;
    console.log(`rollout: 10 % of 10,000 random ids → ${ten.size} on (${share.toFixed(2)} %)`);
    assert.ok(Math.abs(share - 10) <= rolloutTolerance, `${share} %`);
    const twenty = at(20);
    assert.ok(
      [...ten].every((id) => twenty.has(id)),
      'sticky: 20 % contains the 10 %',
    );
    const other = at(10, 'another-flag');
    const both = [...ten].filter((id) => other.has(id)).length;
    assert.ok(both < ten.size / 3, `another flag picks other users (${both} in both)`);
    assert.equal(at(0).size, 0);
    assert.equal(at(100).size, users.length);
    for (const id of users.slice(0, 100)) assert.equal(rolloutBucket(flag, id), rolloutBucket(flag, id));
  });

  test('off beats the allow-list; the allow-list beats the percentage; anonymous callers only at 100 %', () => {
    const [listed, other] = ids(2);
    assert.deepEqual(decide(flag, { enabled: false, percentage: 100, allowUsers: [listed ?? ''] }, listed), {
      enabled: false,
      reason: 'disabled',
    });
    assert.deepEqual(decide(flag, { enabled: true, percentage: 0, allowUsers: [listed ?? ''] }, listed), {
      enabled: true,
      reason: 'allow_list',
    });
    assert.equal(
      decide(flag, { enabled: true, percentage: 0, allowUsers: [listed ?? ''] }, other).enabled,
      false,
    );
    assert.equal(decide(flag, { enabled: true, percentage: 99, allowUsers: [] }, undefined).enabled, false);
    assert.equal(decide(flag, { enabled: true, percentage: 100, allowUsers: [] }, undefined).enabled, true);
  });
});

async function setFlag(
  app: FastifyInstance,
  admin: Account,
  body: Record<string, unknown>,
): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'PUT',
    url: `/api/flags/${flag}`,
    headers: bearer(admin.accessToken),
    payload: body,
  });
}

for (const engine of engines) {
  describe(`feature flags on ${engine}`, { skip: await skipEngine(engine) }, () => {
    test('admin API: admin only, validated, audited; the product rule follows the flag', async () => {
      const logs = captureLogs();
      const app = await buildTestApp({ engine, logger: logs.logger });
      try {
        const admin = await createAdmin(app);
        const buyer = await registerUser(app);
        const other = await registerUser(app);
        assert.equal((await app.inject({ method: 'GET', url: '/api/flags' })).statusCode, 401);
        const forbidden = await app.inject({
          method: 'GET',
          url: '/api/flags',
          headers: bearer(buyer.accessToken),
        });
        assert.equal(forbidden.statusCode, 403);
        assert.equal(
          (await setFlag(app, buyer, { enabled: true, percentage: 100, allowUsers: [] })).statusCode,
          403,
        );

        const listed = await app.inject({
          method: 'GET',
          url: '/api/flags',
          headers: bearer(admin.accessToken),
        });
        assert.equal(listed.statusCode, 200);
        const [first] = listed.json().items;
        assert.deepEqual(Object.keys(first).sort(), flagKeys);
        assert.deepEqual(first, {
          key: flag,
          description: flagDefinitions[flag].description,
          default: { enabled: false, percentage: 0, allowUsers: [] },
          override: null,
        });

        for (const bad of [
          { enabled: true, percentage: 101, allowUsers: [] },
          { enabled: true, percentage: 10.5, allowUsers: [] },
          { enabled: 'yes', percentage: 10, allowUsers: [] },
          { enabled: true, percentage: 10, allowUsers: ['not-a-uuid'] },
          { enabled: true, percentage: 10, allowUsers: [buyer.user.id, buyer.user.id] },
          { enabled: true, percentage: 10, allowUsers: [], extra: 1 },
          { enabled: true },
        ]) {
          const res = await setFlag(app, admin, bad);
          assert.equal(res.statusCode, 400, JSON.stringify(bad));
          assert.equal(res.json().code, 'VALIDATION_FAILED');
        }
        const unknown = await app.inject({
          method: 'PUT',
          url: '/api/flags/no-such-flag',
          headers: bearer(admin.accessToken),
          payload: { enabled: true, percentage: 100, allowUsers: [] },
        });
        assert.equal(unknown.statusCode, 404);
        assert.equal(unknown.json().code, 'NOT_FOUND');

        // The product: 11 units of one product; the rule is off by default.
        const product = await app.inject({
          method: 'POST',
          url: '/api/products',
          headers: bearer(admin.accessToken),
          payload: {
            sku: `FLAG-${randomBytes(4).toString('hex')}`,
            name: 'Flagged',
            price: '1.00',
            stock: 1000,
          },
        });
        assert.equal(product.statusCode, 201, product.body);
        const order = (account: Account, quantity: number) =>
          app.inject({
            method: 'POST',
            url: '/api/orders',
            headers: bearer(account.accessToken),
            payload: { items: [{ productId: product.json().id, quantity }] },
          });
        assert.equal((await order(buyer, 11)).statusCode, 201);

        const changed = await setFlag(app, admin, {
          enabled: true,
          percentage: 0,
          allowUsers: [buyer.user.id],
        });
        assert.equal(changed.statusCode, 200, changed.body);
        assert.deepEqual(Object.keys(changed.json()).sort(), flagKeys);
        assert.deepEqual(Object.keys(changed.json().override).sort(), overrideKeys);
        assert.deepEqual(changed.json().override.allowUsers, [buyer.user.id]);
        assert.equal(changed.json().override.updatedBy, admin.user.id);
        const audit = logs.lines.find((line) => line.event === 'feature_flag_changed');
        assert.ok(audit !== undefined, 'the change is logged');
        assert.equal(audit.flag, flag);
        assert.equal(audit.by, admin.user.id);
        assert.equal(audit.before, null);
        assert.deepEqual((audit.after as { allowUsers: string[] }).allowUsers, [buyer.user.id]);

        const refused = await order(buyer, 11);
        assert.equal(refused.statusCode, 422);
        assert.equal(refused.json().code, 'VALIDATION_FAILED');
        assert.equal(refused.json().errors[0].path, '/body/items/0/quantity');
        assert.equal((await order(buyer, 10)).statusCode, 201, 'within the limit');
        assert.equal((await order(other, 11)).statusCode, 201, 'not on the allow-list');

        const reset = await app.inject({
          method: 'DELETE',
          url: `/api/flags/${flag}`,
          headers: bearer(admin.accessToken),
        });
        assert.equal(reset.statusCode, 200);
        assert.equal(reset.json().override, null);
        assert.equal(logs.lines.filter((line) => line.event === 'feature_flag_changed').length, 2);
        assert.equal((await order(buyer, 11)).statusCode, 201, 'back to the coded default');

        const metrics = await app.inject({ method: 'GET', url: '/metrics' });
        assert.match(
          metrics.body,
          /feature_flag_evaluations_total\{flag="checkout-unit-limit",result="on",reason="allow_list",source="override"\} 1\n/,
        );
        assert.match(
          metrics.body,
          /feature_flag_evaluations_total\{flag="checkout-unit-limit",result="off",reason="rollout",source="override"\} 1\n/,
        );
        assert.match(
          metrics.body,
          /feature_flag_evaluations_total\{flag="checkout-unit-limit",result="off",reason="disabled",source="code"\} 2\n/,
        );
      } finally {
        await app.close();
      }
    });

    test('two instances (in-process cache): a change is seen by the other within a second; a 10 % rollout is identical on both and after a restart', async () => {
      await twoInstances(engine, false, true);
    });
    if (engine === 'postgres') {
      test('two instances (Redis cache): a change is seen by the other within a second', async () => {
        await twoInstances(engine, true, false);
      });
    }
  });
}

async function twoInstances(engine: EngineName, redis: boolean, rollout: boolean): Promise<void> {
  const database = await testDatabaseEnv(engine);
  const prefix = `test:${process.pid}:flags:${randomBytes(4).toString('hex')}:`;
  const env = { ...database.env, ...(redis ? { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix } : {}) };
  const apps: FastifyInstance[] = [];
  const start = async () => {
    const app = await buildApp(testConfig(env));
    apps.push(app);
    await app.ready();
    return app;
  };
  try {
    const a = await start();
    const b = await start();
    const admin = await createAdmin(a);
    const user = randomUUID();
    const seen: number[] = [];
    for (const state of [true, false, true]) {
      assert.equal((await b.flags.evaluate(flag, { userId: user })).enabled, !state);
      const res = await setFlag(a, admin, { enabled: state, percentage: 100, allowUsers: [] });
      assert.equal(res.statusCode, 200, res.body);
      const changedAt = performance.now();
      assert.equal(
        (await a.flags.evaluate(flag, { userId: user })).enabled,
        state,
        'the writer sees it at once',
      );
      await waitUntil(async () => (await b.flags.evaluate(flag, { userId: user })).enabled === state, {
        intervalMs: 5,
        timeoutMs: 10_000,
        what: 'the other instance sees the change',
      });
      seen.push(performance.now() - changedAt);
    }
    console.log(
      `flags on ${engine}${redis ? ' + Redis' : ''}: changes seen by the other instance after ${seen.map((ms) => `${ms.toFixed(0)} ms`).join(', ')}`,
    );
    for (const ms of seen) assert.ok(ms < 1000, `${ms} ms`);
    if (!rollout) return;

    assert.equal(
      (await setFlag(a, admin, { enabled: true, percentage: 10, allowUsers: [] })).statusCode,
      200,
    );
    const users = ids(10_000);
    const onAt = async (app: FastifyInstance) => {
      await waitUntil(async () => (await app.flags.evaluate(flag, { userId: user })).source === 'override', {
        what: 'the rollout is in force',
      });
      const on: string[] = [];
      for (const id of users) if (await app.flags.enabled(flag, { userId: id })) on.push(id);
      return on;
    };
    const onA = await onAt(a);
    // The previous state (on for 100 %) was an override too: wait until the other instance has
    // the 10 % rollout, seen on a user it leaves out, before comparing the whole population.
    const outside = users.find((id) => !onA.includes(id));
    assert.ok(outside);
    await waitUntil(async () => !(await b.flags.enabled(flag, { userId: outside })), {
      what: 'the other instance has the 10 % rollout',
    });
    const onB = await onAt(b);
    const share = (onA.length / users.length) * 100;
    assert.ok(Math.abs(share - 10) <= rolloutTolerance, `${share} %`);
    assert.deepEqual(onB, onA, 'identical on both instances');
    await b.close();
    apps.splice(apps.indexOf(b), 1);
    const restarted = await start();
    assert.deepEqual(await onAt(restarted), onA, 'identical after a restart');
    console.log(
      `flags on ${engine}${redis ? ' + Redis' : ''}: 10 % rollout → ${onA.length} of 10,000 on both instances and after a restart`,
    );
  } finally {
    for (const app of apps) await app.close();
    await database.cleanup();
    if (redis) await deleteKeys(redisUrl, prefix);
  }
}

describe('feature flags with the store unreachable', { skip: await skipEngine('postgres') }, () => {
  test('the coded default, never a 5xx; the override again once the store is back', async () => {
    const database = await testDatabaseEnv('postgres');
    const url = new URL(database.env.DATABASE_URL ?? '');
    const proxy = await startFaultProxy({ name: 'postgres', target: { port: Number(url.port || 5432) } });
    url.host = proxy.address;
    const app = await buildApp(
      testConfig({ ...database.env, DATABASE_URL: url.toString(), DATABASE_CONNECT_TIMEOUT_MS: '1000' }),
      {
        extendApi: (api) => {
          api.get('/flag-probe', async (request) => {
            const userId = (request.query as { user?: string }).user;
            return app.flags.evaluate(flag, { userId });
          });
        },
      },
    );
    try {
      await app.ready();
      const admin = await createAdmin(app);
      assert.equal(
        (await setFlag(app, admin, { enabled: true, percentage: 100, allowUsers: [] })).statusCode,
        200,
      );
      const probe = () => app.inject({ method: 'GET', url: `/api/flag-probe?user=${randomUUID()}` });
      assert.deepEqual((await probe()).json(), { enabled: true, reason: 'rollout', source: 'override' });

      await proxy.down();
      await waitUntil(async () => (await probe()).json().source === 'fallback', { what: 'the fallback' });
      const statuses = new Set<number>();
      for (let i = 0; i < 50; i += 1) {
        const res = await probe();
        statuses.add(res.statusCode);
        assert.deepEqual(res.json(), { enabled: false, reason: 'disabled', source: 'fallback' });
      }
      assert.deepEqual([...statuses], [200]);

      await proxy.up();
      await waitUntil(async () => (await probe()).json().source === 'override', {
        what: 'the override again',
      });
    } finally {
      await app.close();
      await proxy.close();
      await database.cleanup();
    }
  });
});
