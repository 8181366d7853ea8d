import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Config } from '../../src/config.js';
import { createMailer, type Mailer } from '../../src/infra/mail/mailer.js';
import type { JobRow } from '../../src/jobs/jobs.table.js';
import { createJobQueue } from '../../src/jobs/queue.js';
import { createAccountsDeps, jobHandlers } from '../../src/jobs/runtime.js';
import { createJobMetrics, createJobWorker, type JobRunner } from '../../src/jobs/worker.js';
import { createAuthDeps } from '../../src/modules/auth/auth.deps.js';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, captureLogs, engines, skipEngine } from '../helper.js';
import { type Account, registerUser, tokenIn } from '../support/accounts.js';

const silent = pino({ level: 'silent' });

/** The secret the other servers are rotating to (at least 32 bytes, like every JWT secret). */
const newSecret = 'the-next-secret-the-next-secret-0123456789abcdef';

/**
 * The account mail job (`mail.account`) run by workers of the test's own, each with the key ring a
 * server would have at some step of a secret rotation, on the app's database and a real SMTP server.
 */
for (const engine of engines) {
  describe(`the account mail job on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let smtp: TestSmtpServer;
    let app: FastifyInstance;
    let mailer: Mailer;
    let oldSecret: string;
    before(async () => {
      smtp = await startSmtpServer();
      // The app only answers requests: its jobs wait in the table for the test's workers.
      app = await buildTestApp({
        engine,
        env: { JOBS_IN_PROCESS: 'false', MAIL_SMTP_URL: smtp.url, ACCOUNT_MAILS_PER_ADDRESS: '1000' },
      });
      oldSecret = app.config.auth.jwtSecret;
      mailer = createMailer(app.config.mail, app.config.env, silent);
    });
    after(async () => {
      mailer?.close();
      await app?.close();
      await smtp?.close();
    });

    /** The app's configuration with another key ring, as a server at another step of a rotation. */
    const withRing = (current: string, previous: readonly string[] = []): Config => ({
      ...app.config,
      auth: { ...app.config.auth, jwtSecret: current, jwtPreviousSecrets: previous, jwtNextSecrets: [] },
    });

    const worker = (
      config: Config,
      options: {
        id: string;
        registry?: Registry;
        logger?: Logger;
        leaseSeconds?: number;
        runner?: JobRunner;
      },
    ) => {
      const logger = options.logger ?? silent;
      const accounts = createAccountsDeps({
        auth: createAuthDeps({
          db: app.database.db,
          engine,
          config: config.auth,
          counters: app.counters,
          registry: new Registry(),
          logger,
        }),
        config,
        counters: app.counters,
        queue: createJobQueue({ maxAttempts: 3 }),
        logger,
      });
      return createJobWorker({
        db: app.database.db,
        engine,
        config: {
          ...config.jobs,
          pollIntervalMs: 50,
          backoffBaseMs: 20,
          leaseSeconds: options.leaseSeconds ?? 30,
        },
        handlers: jobHandlers({ db: app.database.db, config, accounts, mailer }),
        metrics: createJobMetrics(options.registry ?? new Registry()),
        logger,
        id: options.id,
        ...(options.runner === undefined ? {} : { runner: options.runner }),
      });
    };

    const job = async (id: string): Promise<JobRow> =>
      app.database.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

    /**
     * A new account and a reset request for it, run by a server on the old secret: the token's
     * hash is stored (made with the old key), its mail job queued. Returns the mail job.
     */
    const resetQueuedOnOldSecret = async (): Promise<{ account: Account; mailJob: JobRow }> => {
      // Each test counts the jobs its workers claim: none left by an earlier one.
      await app.database.db.deleteFrom('jobs').execute();
      const account = await registerUser(app);
      const answer = await app.inject({
        method: 'POST',
        url: '/api/auth/password-reset',
        payload: { email: account.email },
      });
      assert.equal(answer.statusCode, 202);
      // The registration's verification mail and the reset job, in rounds until the reset job has
      // run (a round claims what is due when it starts: not the mail the reset job queues).
      const old = worker(withRing(oldSecret), { id: `old-${account.username}` });
      const mailJob = async () => {
        const token = await app.database.db
          .selectFrom('account_tokens')
          .select('id')
          .where('user_id', '=', account.user.id)
          .where('purpose', '=', 'password_reset')
          .executeTakeFirst();
        if (token === undefined) return undefined;
        return app.database.db
          .selectFrom('jobs')
          .selectAll()
          .where('key', '=', `mail:${token.id}`)
          .executeTakeFirst();
      };
      await waitUntil(
        async () => {
          if ((await mailJob()) !== undefined) return true;
          await old.runOnce();
          return false;
        },
        { what: 'the reset job to run' },
      );
      await smtp.waitForMail(account.email, { subject: /^Confirm/ });
      const queued = await mailJob();
      assert.equal(queued?.state, 'queued');
      return { account, mailJob: queued };
    };

    const resetMails = (account: Account) =>
      smtp.received.filter((m) => m.to.includes(account.email) && m.subject.startsWith('Reset'));

    test('a worker already on the new secret mails a link that works: it finds the old key in its ring', async () => {
      const { account, mailJob } = await resetQueuedOnOldSecret();
      const promoted = worker(withRing(newSecret, [oldSecret]), { id: 'promoted' });
      assert.equal(await promoted.runOnce(), 1);
      assert.equal((await job(mailJob.id)).state, 'succeeded');
      const mail = await smtp.waitForMail(account.email, { subject: /^Reset/ });
      const confirm = await app.inject({
        method: 'POST',
        url: '/api/auth/password-reset/confirm',
        payload: { token: tokenIn(mail, 'reset-password'), newPassword: 'the password after a rotation' },
      });
      assert.equal(confirm.statusCode, 204, confirm.body);
    });

    test('a worker without the key that made the token mails nothing: the job fails, retries, and is dead-lettered', async () => {
      const { account, mailJob } = await resetQueuedOnOldSecret();
      const registry = new Registry();
      const dropped = worker(withRing(newSecret), { id: 'old-key-dropped', registry });
      dropped.start();
      try {
        await waitUntil(async () => (await job(mailJob.id)).state === 'dead', {
          what: 'the mail job to be dead-lettered',
        });
      } finally {
        await dropped.stop();
      }
      const dead = await job(mailJob.id);
      assert.equal(dead.attempts, 3);
      assert.match(dead.last_error ?? '', /TokenKeyMissingError: no key of the JWT secret ring/);
      assert.deepEqual(resetMails(account), [], 'no link that cannot work was mailed');
      const text = await registry.metrics();
      assert.match(text, /^jobs_finished_total\{name="mail.account",result="failed"\} 2$/m);
      assert.match(text, /^jobs_finished_total\{name="mail.account",result="dead"\} 1$/m);
    });

    test('a worker that lost the lease of a mail job does not send it: the new holder sends it once, and only its outcome counts', async () => {
      const { account, mailJob } = await resetQueuedOnOldSecret();
      const logs = captureLogs('warn');
      const lost = () =>
        logs.lines.some(
          (l) => l.event === 'job_lease_lost' && l.jobId === mailJob.id && l.when === 'renewal',
        );
      const registry1 = new Registry();
      const w1 = worker(withRing(oldSecret), {
        id: 'w1',
        registry: registry1,
        logger: logs.logger,
        // Renewals every second (lease / 3).
        leaseSeconds: 3,
        // Stalled between the claim and the send (a paused or starved process) until its renewal
        // has found the job taken over.
        runner: async (_job, run) => {
          await waitUntil(lost, { timeoutMs: 30_000, what: 'w1 to find its lease lost' });
          await run();
        },
      });
      const run1 = w1.runOnce();
      await waitUntil(async () => (await job(mailJob.id)).locked_by === 'w1', {
        what: 'w1 to hold the mail job',
      });
      // Its lease runs out, and w2 takes the job over and sends the mail. Again until w2 has it: a
      // renewal by w1 landing between the two would give w1 a fresh lease.
      const registry2 = new Registry();
      const w2 = worker(withRing(oldSecret), { id: 'w2', registry: registry2 });
      await waitUntil(
        async () => {
          await app.database.db
            .updateTable('jobs')
            .set({ locked_until: new Date(Date.now() - 1000).toISOString() })
            .where('id', '=', mailJob.id)
            .execute();
          return (await w2.runOnce()) === 1;
        },
        { what: 'w2 to take the mail job over' },
      );
      await smtp.waitForMail(account.email, { subject: /^Reset/ });
      await run1;
      assert.ok(lost());
      const done = await job(mailJob.id);
      assert.deepEqual([done.state, done.locked_by, done.attempts], ['succeeded', 'w2', 2]);
      // w1 ran the handler with its signal aborted: nothing sent. Every mail is on the server by
      // now (w1's attempt has ended), so counting is final.
      assert.equal(resetMails(account).length, 1);
      assert.doesNotMatch(await registry1.metrics(), /^jobs_finished_total\{/m);
      assert.match(
        await registry2.metrics(),
        /^jobs_finished_total\{name="mail.account",result="succeeded"\} 1$/m,
      );
    });
  });
}
