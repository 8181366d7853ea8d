import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { buildTestApp, type EngineName, engines, skipEngine } from '../helper.js';
import { type Account, bearer, createAdmin, login, registerUser } from '../support/accounts.js';

/**
 * Security probe 2026-12-02, findings 2 and 4: a login that verified the old password (or an
 * account still active) while a password change (or deactivation) ran created a session that
 * outlived the change. Here the two race at many offsets, in both orders; whatever the interleaving,
 * once the change has answered no session but the changer's own is live, and a token the racing
 * login got is refused. Bounded: at most `trials` rounds or `budgetMs`, whichever comes first.
 * RACE_TRIALS raises the count for a longer run (`RACE_TRIALS=2000 npm test -- test/auth/credential-races.test.ts`).
 */

const extra = Number(process.env.RACE_TRIALS ?? 0);
const trials = { postgres: extra || 120, sqlite: extra || 30 } as const;
const budgetMs = extra > 0 ? 600_000 : 15_000;
const parallel = 4;
/** Offsets (ms) of the login relative to the change: negative means the login starts first. */
const offsets = [-6, -4, -3, -2, -1, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12];

type Outcome = 'login_won' | 'change_won';

async function liveSessionsExcept(app: FastifyInstance, userId: string, except?: string) {
  let query = app.database.db
    .selectFrom('sessions')
    .select('id')
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null);
  if (except !== undefined) query = query.where('id', '!=', except);
  return (await query.execute()).length;
}

function sessionIdOf(accessToken: string): string {
  const payload = accessToken.split('.')[1] ?? '';
  return (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { sid: string }).sid;
}

/** Starts `first` now and `second` after `offsetMs` (or the other way round when negative). */
async function race<A, B>(offsetMs: number, change: () => Promise<A>, loginNow: () => Promise<B>) {
  const delayed = async <T>(ms: number, run: () => Promise<T>) => {
    if (ms > 0) await sleep(ms);
    return run();
  };
  return Promise.all([delayed(-offsetMs, change), delayed(offsetMs, loginNow)]);
}

interface Attempt {
  readonly status: number;
  readonly accessToken?: string;
  readonly refreshToken?: string;
}

async function loginAttempt(app: FastifyInstance, account: Account): Promise<Attempt> {
  const res = await login(app, account.username, account.password);
  return res.statusCode === 200
    ? { status: 200, ...(res.json() as { accessToken: string; refreshToken: string }) }
    : { status: res.statusCode };
}

/** What a login that raced must not keep: its access token and its refresh token. */
async function assertLoginLeftNothing(app: FastifyInstance, attempt: Attempt) {
  if (attempt.status !== 200) {
    assert.equal(attempt.status, 401, 'a losing login is refused like any wrong password');
    return;
  }
  const me = await app.inject({ url: '/api/users/me', headers: bearer(attempt.accessToken ?? '') });
  assert.equal(me.statusCode, 401, 'the racing login’s access token is refused');
  const refreshed = await app.inject({
    method: 'POST',
    url: '/api/auth/refresh',
    payload: { refreshToken: attempt.refreshToken },
  });
  assert.equal(refreshed.statusCode, 401, 'the racing login’s refresh token is refused');
}

async function runTrials(
  engine: EngineName,
  trial: (offsetMs: number) => Promise<Outcome>,
): Promise<Record<Outcome, number>> {
  const counts: Record<Outcome, number> = { login_won: 0, change_won: 0 };
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < trials[engine] && performance.now() - started < budgetMs) {
      const i = next++;
      counts[await trial(offsets[i % offsets.length] ?? 0)] += 1;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  const total = counts.login_won + counts.change_won;
  console.log(
    `${engine}: ${total} trials in ${((performance.now() - started) / 1000).toFixed(1)} s; ` +
      `login committed first ${counts.login_won}×, change first ${counts.change_won}×`,
  );
  assert.ok(total >= Math.min(20, trials[engine]), 'enough trials ran');
  return counts;
}

for (const engine of engines) {
  describe(`credential changes racing logins on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let admin: Account;
    before(async () => {
      app = await buildTestApp({ engine });
      admin = await createAdmin(app);
    });
    after(() => app?.close());

    test('password change: no session made with the old password survives it', async () => {
      await runTrials(engine, async (offsetMs) => {
        const account = await registerUser(app);
        const [changed, attempt] = await race(
          offsetMs,
          () =>
            app.inject({
              method: 'POST',
              url: '/api/users/me/password',
              headers: bearer(account.accessToken),
              payload: { currentPassword: account.password, newPassword: 'a brand new pass phrase' },
            }),
          () => loginAttempt(app, account),
        );
        assert.equal(changed.statusCode, 204, changed.body);
        assert.equal(
          await liveSessionsExcept(app, account.user.id, sessionIdOf(account.accessToken)),
          0,
          'only the changer’s own session is live',
        );
        await assertLoginLeftNothing(app, attempt);
        return attempt.status === 200 ? 'login_won' : 'change_won';
      });
    });

    test('deactivation (by an admin, or DELETE /me): no session of the account survives it', async () => {
      let round = 0;
      await runTrials(engine, async (offsetMs) => {
        const account = await registerUser(app);
        const byAdmin = round++ % 2 === 0;
        const [deactivated, attempt] = await race(
          offsetMs,
          () =>
            byAdmin
              ? app.inject({
                  method: 'PATCH',
                  url: `/api/users/${account.user.id}`,
                  headers: bearer(admin.accessToken),
                  payload: { isActive: false },
                })
              : app.inject({ method: 'DELETE', url: '/api/users/me', headers: bearer(account.accessToken) }),
          () => loginAttempt(app, account),
        );
        assert.equal(deactivated.statusCode, byAdmin ? 200 : 204, deactivated.body);
        assert.equal(await liveSessionsExcept(app, account.user.id), 0, 'no live session');
        await assertLoginLeftNothing(app, attempt);
        if (attempt.status === 200) {
          const order = await app.inject({
            method: 'POST',
            url: '/api/orders',
            headers: bearer(attempt.accessToken ?? ''),
            payload: { items: [{ productId: '00000000-0000-4000-8000-000000000000', quantity: 1 }] },
          });
          assert.equal(order.statusCode, 401, 'a deactivated account places no order');
        }
        return attempt.status === 200 ? 'login_won' : 'change_won';
      });
    });
  });
}
