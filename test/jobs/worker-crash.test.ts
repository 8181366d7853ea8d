import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import pg from 'pg';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, skipEngine, type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';
import { registerUser } from '../support/accounts.js';

const entry = new URL('../../src/worker.ts', import.meta.url).pathname;

interface WorkerProcess {
  readonly child: ChildProcess;
  readonly lines: Array<Record<string, unknown>>;
  readonly exited: Promise<unknown>;
}

/** `npm run worker` as a real process (through tsx); resolves once it logs worker_started. */
async function startWorker(env: Record<string, string>): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    env: { ...process.env, NODE_ENV: 'test', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = once(child, 'exit');
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line));
    } catch {
      // not a log line
    }
  });
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  await waitUntil(() => gone || lines.some((l) => l.event === 'worker_started'), {
    timeoutMs: 120_000,
    what: 'the worker to start',
  });
  if (gone) throw new Error(`the worker exited at start-up:\n${stderr}`);
  return { child, lines, exited };
}

describe('a worker killed with kill -9 mid-job', { skip: await skipEngine('postgres') }, () => {
  let smtp: TestSmtpServer;
  let shared: TestDatabaseEnv;
  let app: FastifyInstance;
  const workers: WorkerProcess[] = [];
  let env: Record<string, string>;
  /** Asks for a reset (202); returns how many mails the server had accepted before. */
  const requestReset = async (email: string): Promise<number> => {
    const since = smtp.received.length;
    const answer = await app.inject({ method: 'POST', url: '/api/auth/password-reset', payload: { email } });
    assert.equal(answer.statusCode, 202);
    return since;
  };
  before(async () => {
    smtp = await startSmtpServer();
    shared = await testDatabaseEnv('postgres');
    // The API process runs no jobs: only the worker processes do (as under PM2 with PM2_JOBS_WORKER).
    app = await buildTestApp({ env: { ...shared.env, JOBS_IN_PROCESS: 'false', MAIL_SMTP_URL: smtp.url } });
    env = {
      ...shared.env,
      DATABASE_MIGRATE_ON_START: 'false',
      MAIL_SMTP_URL: smtp.url,
      JOBS_POLL_INTERVAL_MS: '100',
      JOBS_LEASE_SECONDS: '2',
      CACHE_WARM_UP_PAGES: '0',
      JWT_SECRET: app.config.auth.jwtSecret,
    };
  });
  after(async () => {
    for (const w of workers)
      if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => w.exited));
    await app?.close();
    await shared?.cleanup();
    await smtp?.close();
  });

  test('its job runs again on the next worker, and the mail is delivered exactly once', async () => {
    const first = await startWorker(env);
    workers.push(first);
    const account = await registerUser(app);
    await smtp.waitForMail(account.email, { subject: /^Confirm/ });

    // The SMTP server now reads each message and keeps the sender waiting for its 250.
    smtp.hold(true);
    const since = await requestReset(account.email);
    await smtp.waitForHeld();
    const mailJob = await app.database.db
      .selectFrom('jobs')
      .selectAll()
      .where('name', '=', 'mail.account')
      .where('state', '=', 'running')
      .executeTakeFirstOrThrow();
    assert.equal(mailJob.attempts, 1);

    first.child.kill('SIGKILL');
    await first.exited;
    smtp.hold(false);
    assert.equal(smtp.received.length, since, 'nothing was accepted from the killed worker');

    const second = await startWorker(env);
    workers.push(second);
    const mail = await smtp.waitForMail(account.email, { since, subject: /^Reset/ });
    await waitUntil(
      async () =>
        (
          await app.database.db
            .selectFrom('jobs')
            .select('state')
            .where('id', '=', mailJob.id)
            .executeTakeFirstOrThrow()
        ).state === 'succeeded',
      { what: 'the mail job to succeed' },
    );
    const done = await app.database.db
      .selectFrom('jobs')
      .selectAll()
      .where('id', '=', mailJob.id)
      .executeTakeFirstOrThrow();
    assert.equal(done.attempts, 2, 'run again after the lease of the killed worker expired');
    assert.notEqual(done.locked_by, mailJob.locked_by);
    // Give any duplicate time to arrive, then count: one message, with the id made from the job.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const resets = smtp.received.filter((m) => m.to.includes(account.email) && m.subject.startsWith('Reset'));
    assert.equal(resets.length, 1);
    assert.match(mail.messageId, /^<password-reset-[0-9a-f-]{36}@shipshape>$/);
    // And the link in it works.
    const token = /[#?&]token=([A-Za-z0-9_-]+)/.exec(mail.text)?.[1] ?? '';
    const confirm = await app.inject({
      method: 'POST',
      url: '/api/auth/password-reset/confirm',
      payload: { token, newPassword: 'the password after a crash' },
    });
    assert.equal(confirm.statusCode, 204, confirm.body);
    // The second worker shuts down cleanly on SIGTERM.
    second.child.kill('SIGTERM');
    const [code] = (await second.exited) as [number | null];
    assert.equal(code, 0);
    assert.ok(second.lines.some((l) => l.event === 'worker_stopped'));
  });

  test('killed after the SMTP server accepted the mail, before the job was recorded: sent again with the same Message-ID; the link works once (decision 0098)', async () => {
    const first = await startWorker(env);
    workers.push(first);
    const account = await registerUser(app);
    await smtp.waitForMail(account.email, { subject: /^Confirm/ });
    // Before the 250, the test takes the mail job's row: the worker's UPDATE that records the
    // outcome (and its lease renewals) wait for it, so the kill lands between the two.
    const locker = new pg.Client({ connectionString: shared.env.DATABASE_URL });
    locker.on('error', () => {});
    await locker.connect();
    const blocked = sql<{ pid: number }>`SELECT pid FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE 'update "jobs"%'`;
    try {
      let jobId = '';
      smtp.beforeAccept(async (mail) => {
        if (!mail.to.includes(account.email) || !mail.subject.startsWith('Reset')) return;
        await locker.query('BEGIN');
        const { rows } = await locker.query<{ id: string }>(
          "SELECT id FROM jobs WHERE name = 'mail.account' AND state = 'running' FOR UPDATE",
        );
        jobId = rows[0]?.id ?? '';
      });
      const since = await requestReset(account.email);
      await smtp.waitForMail(account.email, { since, subject: /^Reset/ });
      smtp.beforeAccept(undefined);
      assert.notEqual(jobId, '');
      await waitUntil(async () => (await blocked.execute(app.database.db)).rows.length > 0, {
        what: "the worker's outcome UPDATE to wait for the row",
      });
      first.child.kill('SIGKILL');
      await first.exited;
      // A statement that reached the database before the crash would still commit once the row is
      // free; this models a crash before it was sent: its sessions end with it.
      await sql`SELECT pg_terminate_backend(pid) FROM (${blocked}) AS b`.execute(app.database.db);
      await locker.query('ROLLBACK');
      const unrecorded = await app.database.db
        .selectFrom('jobs')
        .selectAll()
        .where('id', '=', jobId)
        .executeTakeFirstOrThrow();
      assert.deepEqual([unrecorded.state, unrecorded.attempts], ['running', 1], 'delivered, not recorded');

      const second = await startWorker(env);
      workers.push(second);
      await smtp.waitForMail(account.email, { since: since + 1, subject: /^Reset/ });
      await waitUntil(
        async () =>
          (
            await app.database.db
              .selectFrom('jobs')
              .select('state')
              .where('id', '=', jobId)
              .executeTakeFirstOrThrow()
          ).state === 'succeeded',
        { what: 'the taken-over mail job to succeed' },
      );
      // At least once: the message went out twice, as one message — the same Message-ID (receivers
      // that dedupe keep one) with the same single-use link.
      const resets = smtp.received.filter(
        (m) => m.to.includes(account.email) && m.subject.startsWith('Reset'),
      );
      assert.equal(resets.length, 2);
      assert.equal(new Set(resets.map((m) => m.messageId)).size, 1);
      const tokens = resets.map((m) => /[#?&]token=([A-Za-z0-9_-]+)/.exec(m.text)?.[1] ?? '');
      assert.equal(new Set(tokens).size, 1);
      // Log lines reach stdout within a quarter second (the logger's buffer).
      await waitUntil(
        () =>
          second.lines.some(
            (l) => l.event === 'job_taken_over' && l.jobId === jobId && l.job === 'mail.account',
          ),
        { what: 'the resend logged as a takeover (jobs_taken_over_total counts it)' },
      );
      const confirm = (password: string) =>
        app.inject({
          method: 'POST',
          url: '/api/auth/password-reset/confirm',
          payload: { token: tokens[0], newPassword: password },
        });
      assert.equal((await confirm('the password after a resend')).statusCode, 204);
      assert.notEqual(
        (await confirm('the same link once more')).statusCode,
        204,
        'the duplicate link is spent',
      );
      second.child.kill('SIGTERM');
      await second.exited;
    } finally {
      smtp.beforeAccept(undefined);
      await locker.query('ROLLBACK').catch(() => {});
      await locker.end().catch(() => {});
    }
  });
});
