import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createJobQueue } from '../../src/jobs/queue.js';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, engines, skipEngine, type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';
import { bearer, login, registerUser, tokenIn } from '../support/accounts.js';

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

for (const engine of engines) {
  describe(`password reset and email verification through SMTP (${engine})`, {
    skip: await skipEngine(engine),
  }, () => {
    let smtp: TestSmtpServer;
    let shared: TestDatabaseEnv;
    let a: FastifyInstance;
    let b: FastifyInstance;
    before(async () => {
      smtp = await startSmtpServer();
      shared = await testDatabaseEnv(engine);
      const env = {
        ...shared.env,
        MAIL_SMTP_URL: smtp.url,
        PUBLIC_BASE_URL: 'https://shop.example.test',
        JOBS_POLL_INTERVAL_MS: '100',
        ACCOUNT_MAILS_PER_ADDRESS: '1000',
      };
      a = await buildTestApp({ engine, env });
      // A second instance on the same database (on SQLite: the same file), with its own worker.
      b = await buildTestApp({ engine, env });
    });
    after(async () => {
      await a?.close();
      await b?.close();
      await shared?.cleanup();
      await smtp?.close();
    });

    const requestReset = (app: FastifyInstance, email: string) =>
      app.inject({ method: 'POST', url: '/api/auth/password-reset', payload: { email } });
    const confirmReset = (app: FastifyInstance, token: string, newPassword: string) =>
      app.inject({
        method: 'POST',
        url: '/api/auth/password-reset/confirm',
        payload: { token, newPassword },
      });
    const me = async (app: FastifyInstance, token: string) =>
      (await app.inject({ url: '/api/users/me', headers: bearer(token) })).statusCode;

    test('registration mails a verification link that works once', async () => {
      const since = smtp.received.length;
      const account = await registerUser(a);
      assert.equal(account.user.emailVerified, false);
      const mail = await smtp.waitForMail(account.email, { since });
      assert.equal(mail.subject, 'Confirm your email address');
      const token = tokenIn(mail, 'verify-email');
      const verify = (app: FastifyInstance) =>
        app.inject({ method: 'POST', url: '/api/auth/verify-email', payload: { token } });
      assert.equal((await verify(b)).statusCode, 204);
      const meBody = (await a.inject({ url: '/api/users/me', headers: bearer(account.accessToken) })).json();
      assert.equal(meBody.emailVerified, true);
      const again = await verify(a);
      assert.equal(again.statusCode, 400);
      assert.equal(again.json().code, 'INVALID_TOKEN');
    });

    test('an email change clears the verification and mails the new address; resend mails again', async () => {
      const account = await registerUser(a);
      const first = await smtp.waitForMail(account.email);
      await a.inject({
        method: 'POST',
        url: '/api/auth/verify-email',
        payload: { token: tokenIn(first, 'verify-email') },
      });
      const newEmail = `new-${account.email}`;
      const since = smtp.received.length;
      const patched = await a.inject({
        method: 'PATCH',
        url: '/api/users/me',
        headers: bearer(account.accessToken),
        payload: { email: newEmail },
      });
      assert.equal(patched.statusCode, 200, patched.body);
      assert.equal(patched.json().emailVerified, false);
      const mail = await smtp.waitForMail(newEmail, { since });
      const oldToken = tokenIn(mail, 'verify-email');
      const resend = await a.inject({
        method: 'POST',
        url: '/api/auth/verify-email/resend',
        headers: bearer(account.accessToken),
      });
      assert.equal(resend.statusCode, 202);
      const second = await smtp.waitForMail(newEmail, { since: smtp.received.indexOf(mail) + 1 });
      assert.equal(
        (
          await a.inject({
            method: 'POST',
            url: '/api/auth/verify-email',
            payload: { token: tokenIn(second, 'verify-email') },
          })
        ).statusCode,
        204,
      );
      assert.equal(
        (
          await a.inject({
            method: 'POST',
            url: '/api/auth/verify-email/resend',
            headers: bearer(account.accessToken),
          })
        ).statusCode,
        202,
      );
      // The older link of the same address still works once (each link is its own token).
      assert.equal(
        (await a.inject({ method: 'POST', url: '/api/auth/verify-email', payload: { token: oldToken } }))
          .statusCode,
        204,
      );
      assert.equal(
        (await a.inject({ method: 'POST', url: '/api/auth/verify-email/resend' })).statusCode,
        401,
      );
    });

    test('reset: the link works once, revokes every session on both instances, and is refused after use', async () => {
      const account = await registerUser(a);
      const other = await login(b, account.username, account.password);
      const otherToken = other.json().accessToken as string;
      assert.equal(await me(a, account.accessToken), 200);
      assert.equal(await me(b, otherToken), 200);

      const since = smtp.received.length;
      const answer = await requestReset(b, account.email.toUpperCase());
      assert.equal(answer.statusCode, 202);
      assert.equal(answer.body, '');
      const mail = await smtp.waitForMail(account.email, { since, subject: /^Reset/ });
      assert.equal(mail.subject, 'Reset your Shipshape password');
      assert.ok(mail.text.includes('https://shop.example.test/#/reset-password?token='));
      const token = tokenIn(mail, 'reset-password');

      const weak = await confirmReset(a, token, 'password');
      assert.equal(weak.statusCode, 400, 'the password rules of registration apply');
      assert.equal(weak.json().code, 'VALIDATION_FAILED');

      const newPassword = 'a brand new reset password';
      assert.equal((await confirmReset(a, token, newPassword)).statusCode, 204);
      // Every session ends, on the instance that reset (at once) and on the other (within its poll).
      assert.equal(await me(a, account.accessToken), 401);
      await waitUntil(async () => (await me(b, otherToken)) === 401, {
        timeoutMs: 10_000,
        what: 'revocation on B',
      });
      await waitUntil(async () => (await me(b, account.accessToken)) === 401, {
        timeoutMs: 10_000,
        what: 'revocation on B',
      });
      assert.equal((await login(a, account.username, account.password)).statusCode, 401);
      assert.equal((await login(b, account.username, newPassword)).statusCode, 200);

      const reused = await confirmReset(b, token, 'yet another new password');
      assert.equal(reused.statusCode, 400);
      assert.equal(reused.json().code, 'INVALID_TOKEN');
      // A notice of the change goes to the account's address.
      const notice = await smtp.waitForMail(account.email, { since, subject: /changed/ });
      assert.equal(notice.subject, 'Your Shipshape password was changed');
    });

    test('a reset link expires, and a newer reset spends the older links', async () => {
      const account = await registerUser(a);
      const since = smtp.received.length;
      await requestReset(a, account.email);
      const first = tokenIn(
        await smtp.waitForMail(account.email, { since, subject: /^Reset/ }),
        'reset-password',
      );
      // Expire it (as PASSWORD_RESET_TTL_SECONDS passing would).
      await a.database.db
        .updateTable('account_tokens')
        .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
        .where('purpose', '=', 'password_reset')
        .where('user_id', '=', account.user.id)
        .execute();
      const expired = await confirmReset(a, first, 'a perfectly fine password');
      assert.equal(expired.statusCode, 400);
      assert.equal(expired.json().code, 'INVALID_TOKEN');

      const mark = smtp.received.length;
      await requestReset(a, account.email);
      await requestReset(a, account.email);
      await waitUntil(
        () => smtp.received.slice(mark).filter((m) => m.to.includes(account.email)).length >= 2,
        {
          what: 'two reset mails',
        },
      );
      const [older, newer] = smtp.received
        .slice(mark)
        .filter((m) => m.to.includes(account.email) && m.subject.startsWith('Reset'));
      assert.ok(older && newer);
      assert.equal(
        (await confirmReset(a, tokenIn(newer, 'reset-password'), 'the password after two requests'))
          .statusCode,
        204,
      );
      assert.equal(
        (await confirmReset(a, tokenIn(older, 'reset-password'), 'the password after two requests'))
          .statusCode,
        400,
      );
      assert.equal((await confirmReset(a, 'A'.repeat(43), 'whatever password it is')).statusCode, 400);
    });

    const changeEmail = async (app: FastifyInstance, accessToken: string, email: string) => {
      const res = await app.inject({
        method: 'PATCH',
        url: '/api/users/me',
        headers: bearer(accessToken),
        payload: { email },
      });
      assert.equal(res.statusCode, 200, res.body);
    };
    /** Asks for a reset and returns the token of the mail it sends. */
    const resetToken = async (app: FastifyInstance, email: string) => {
      const since = smtp.received.length;
      assert.equal((await requestReset(app, email)).statusCode, 202);
      return tokenIn(await smtp.waitForMail(email, { since, subject: /^Reset/ }), 'reset-password');
    };
    const jobState = async (id: string) =>
      (await a.database.db.selectFrom('jobs').select('state').where('id', '=', id).executeTakeFirstOrThrow())
        .state;

    test('a reset link mailed before an email change is refused after it, like an invalid one', async () => {
      const account = await registerUser(a);
      const token = await resetToken(b, account.email);
      // The owner moves to a new mailbox; whoever keeps the old one still has the link.
      await changeEmail(a, account.accessToken, `moved-${account.email}`);
      const refused = await confirmReset(b, token, 'the password of whoever kept the old mailbox');
      assert.equal(refused.statusCode, 400);
      assert.equal(refused.json().code, 'INVALID_TOKEN');
      // Nothing changed: the owner's password and session still work.
      assert.equal(await me(a, account.accessToken), 200);
      assert.equal((await login(a, account.username, account.password)).statusCode, 200);
      // A link mailed to the new address works.
      const fresh = await resetToken(a, `moved-${account.email}`);
      assert.equal((await confirmReset(a, fresh, 'the password after moving')).statusCode, 204);
    });

    test('a reset link mailed before a password change is refused after it', async () => {
      const account = await registerUser(a);
      const token = await resetToken(a, account.email);
      const changed = await a.inject({
        method: 'POST',
        url: '/api/users/me/password',
        headers: bearer(account.accessToken),
        payload: { currentPassword: account.password, newPassword: 'the owner changed it first' },
      });
      assert.equal(changed.statusCode, 204, changed.body);
      const refused = await confirmReset(b, token, 'the password of whoever has the mail');
      assert.equal(refused.statusCode, 400);
      assert.equal(refused.json().code, 'INVALID_TOKEN');
      assert.equal((await login(b, account.username, 'the owner changed it first')).statusCode, 200);
    });

    test('a reset token stored for a previous address (its job read the account before the change) is neither mailed nor accepted', async () => {
      const account = await registerUser(a);
      const token = await resetToken(a, account.email);
      const row = await a.database.db
        .selectFrom('account_tokens')
        .select('id')
        .where('user_id', '=', account.user.id)
        .where('purpose', '=', 'password_reset')
        .executeTakeFirstOrThrow();
      const newEmail = `elsewhere-${account.email}`;
      await changeEmail(a, account.accessToken, newEmail);
      // The race: the reset job had found the account under its old address, and stores its token
      // (for that address, unspent) and queues the mail after the change committed.
      await a.database.db
        .updateTable('account_tokens')
        .set({ used_at: null })
        .where('id', '=', row.id)
        .execute();
      const since = smtp.received.length;
      const queued = await createJobQueue({ maxAttempts: 3 }).enqueue(a.database.db, 'mail.account', {
        kind: 'password-reset',
        tokenId: row.id,
      });
      await waitUntil(async () => (await jobState(queued.id)) === 'succeeded', {
        what: 'the mail job to run',
      });
      assert.deepEqual(
        smtp.received.slice(since).filter((m) => m.to.includes(account.email)),
        [],
        'no reset mail to the previous address',
      );
      const refused = await confirmReset(a, token, 'the password of whoever kept the old mailbox');
      assert.equal(refused.statusCode, 400);
      assert.equal(refused.json().code, 'INVALID_TOKEN');
      assert.equal(await me(a, account.accessToken), 200);
    });

    test('the same reset link used twice at once: exactly one 204', async () => {
      const account = await registerUser(a);
      const token = await resetToken(a, account.email);
      const answers = await Promise.all([
        confirmReset(a, token, 'the first of two at once'),
        confirmReset(b, token, 'the second of two at once'),
        confirmReset(a, token, 'the third of three at once'),
      ]);
      const codes = answers.map((r) => r.statusCode).sort();
      assert.deepEqual(codes, [204, 400, 400], answers.map((r) => r.body).join('\n'));
      for (const r of answers.filter((r) => r.statusCode === 400))
        assert.equal(r.json().code, 'INVALID_TOKEN');
      // Exactly one of the passwords is the account's now.
      const logins = await Promise.all(
        ['the first of two at once', 'the second of two at once', 'the third of three at once'].map(
          async (password) => (await login(a, account.username, password)).statusCode,
        ),
      );
      assert.deepEqual(logins.sort(), [200, 401, 401]);
    });

    test('after a reset the refresh token is refused too', async () => {
      const account = await registerUser(a);
      const refresh = (app: FastifyInstance) =>
        app.inject({
          method: 'POST',
          url: '/api/auth/refresh',
          payload: { refreshToken: account.refreshToken },
        });
      const token = await resetToken(a, account.email);
      assert.equal((await confirmReset(a, token, 'a reset ends the refresh token')).statusCode, 204);
      for (const app of [a, b]) assert.equal((await refresh(app)).statusCode, 401);
    });

    test('a verification link expires', async () => {
      const since = smtp.received.length;
      const account = await registerUser(a);
      const token = tokenIn(await smtp.waitForMail(account.email, { since }), 'verify-email');
      // Expire it (as EMAIL_VERIFICATION_TTL_SECONDS passing would).
      await a.database.db
        .updateTable('account_tokens')
        .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
        .where('purpose', '=', 'verify_email')
        .where('user_id', '=', account.user.id)
        .execute();
      const expired = await a.inject({ method: 'POST', url: '/api/auth/verify-email', payload: { token } });
      assert.equal(expired.statusCode, 400);
      assert.equal(expired.json().code, 'INVALID_TOKEN');
      const meBody = (await a.inject({ url: '/api/users/me', headers: bearer(account.accessToken) })).json();
      assert.equal(meBody.emailVerified, false);
    });

    test('no enumeration: the same answer and the same timing for known and unknown addresses', async () => {
      const account = await registerUser(a);
      const unknown = `nobody-${account.email}`;
      const timings = { known: [] as number[], unknown: [] as number[] };
      for (let i = 0; i < 25; i++) {
        for (const [kind, email] of [
          ['known', account.email],
          ['unknown', unknown],
        ] as const) {
          const started = performance.now();
          const res = await requestReset(a, email);
          timings[kind].push(performance.now() - started);
          assert.equal(res.statusCode, 202);
          assert.equal(res.body, '');
          assert.deepEqual(
            Object.keys(res.headers)
              .filter((h) => !['date', 'x-request-id', 'ratelimit-remaining', 'ratelimit-reset'].includes(h))
              .sort(),
            Object.keys((await requestReset(a, kind === 'known' ? unknown : account.email)).headers)
              .filter((h) => !['date', 'x-request-id', 'ratelimit-remaining', 'ratelimit-reset'].includes(h))
              .sort(),
          );
        }
      }
      const known = median(timings.known);
      const notKnown = median(timings.unknown);
      console.log(`reset request median: known ${known.toFixed(2)} ms, unknown ${notKnown.toFixed(2)} ms`);
      // The request does the same work either way (one INSERT of a job); the lookup runs in the job.
      assert.ok(
        Math.abs(known - notKnown) < Math.max(10, 0.75 * Math.max(known, notKnown)),
        `${known} vs ${notKnown}`,
      );
      // The unknown address gets no mail, the known one does.
      await waitUntil(
        async () => {
          const row = await a.database.db
            .selectFrom('jobs')
            .select((eb) => eb.fn.countAll<number | string>().as('n'))
            .where('state', 'in', ['queued', 'running'])
            .executeTakeFirstOrThrow();
          return Number(row.n) === 0;
        },
        { what: 'the queue to drain' },
      );
      assert.ok(!smtp.received.some((m) => m.to.includes(unknown)));
      assert.ok(smtp.received.some((m) => m.to.includes(account.email) && m.subject.startsWith('Reset')));
    });
  });
}

describe('limits and required verification', { skip: await skipEngine('sqlite') }, () => {
  let smtp: TestSmtpServer;
  let app: FastifyInstance;
  before(async () => {
    smtp = await startSmtpServer();
    app = await buildTestApp({
      env: {
        MAIL_SMTP_URL: smtp.url,
        JOBS_POLL_INTERVAL_MS: '100',
        ACCOUNT_MAILS_PER_ADDRESS: '2',
        AUTH_RATE_LIMIT_MAX: '40',
        EMAIL_VERIFICATION_REQUIRED_FOR: 'orders',
      },
    });
  });
  after(async () => {
    await app?.close();
    await smtp?.close();
  });

  test('per address: at most ACCOUNT_MAILS_PER_ADDRESS reset mails per window, every answer 202', async () => {
    const account = await registerUser(app);
    for (let i = 0; i < 4; i++) {
      assert.equal(
        (
          await app.inject({
            method: 'POST',
            url: '/api/auth/password-reset',
            payload: { email: account.email },
          })
        ).statusCode,
        202,
      );
    }
    await waitUntil(
      async () => {
        const row = await app.database.db
          .selectFrom('jobs')
          .select((eb) => eb.fn.countAll<number | string>().as('n'))
          .where('state', 'in', ['queued', 'running'])
          .executeTakeFirstOrThrow();
        return Number(row.n) === 0;
      },
      { what: 'the queue to drain' },
    );
    const resets = smtp.received.filter((m) => m.to.includes(account.email) && m.subject.startsWith('Reset'));
    assert.equal(resets.length, 2);
  });

  test('per IP: the auth limit answers 429 with Retry-After', async () => {
    let limited: { statusCode: number; headers: Record<string, unknown> } | undefined;
    for (let i = 0; i < 60 && limited === undefined; i++) {
      const res = await app.inject({
        method: 'POST',
        url: '/api/auth/password-reset',
        payload: { email: 'x@example.test' },
        remoteAddress: '192.0.2.7',
      });
      if (res.statusCode === 429) limited = res;
    }
    assert.ok(limited, 'no 429 within 60 requests');
    assert.ok(limited.headers['retry-after']);
  });

  test('placing an order needs a verified email when EMAIL_VERIFICATION_REQUIRED_FOR=orders', async () => {
    const account = await registerUser(app, {});
    const order = () =>
      app.inject({
        method: 'POST',
        url: '/api/orders',
        headers: bearer(account.accessToken),
        payload: { items: [{ productId: '00000000-0000-4000-8000-000000000000', quantity: 1 }] },
      });
    const refused = await order();
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.json().code, 'EMAIL_NOT_VERIFIED');
    const mail = await smtp.waitForMail(account.email);
    await app.inject({
      method: 'POST',
      url: '/api/auth/verify-email',
      payload: { token: tokenIn(mail, 'verify-email') },
    });
    // Verified: the order goes on to validation (an unknown product → 422).
    assert.equal((await order()).statusCode, 422);
    // Browsing never needs it.
    assert.equal((await app.inject({ url: '/api/products' })).statusCode, 200);
  });
});
