import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type Pm2Cluster, startPm2Cluster } from '../harness/pm2.js';
import { freePort } from '../harness/ports.js';
import { skipUnless } from '../harness/services.js';
import { startSmtpServer, type TestSmtpServer } from '../harness/smtp.js';
import { waitUntil } from '../harness/wait.js';
import { type TestDatabaseEnv, testDatabaseEnv } from '../helper.js';
import { send } from '../support/load.js';

interface JobState {
  id: string;
  state: string;
  attempts: number;
  locked_by: string | null;
}

/**
 * The shipped ecosystem file's job worker (`<app>-worker`, PM2_JOBS_WORKER=true) under a real PM2
 * daemon of its own: it runs the jobs the API cluster enqueues (the API workers then run none), and
 * pm2 reload / pm2 stop never lose or repeat a job in hand — it finishes before the old process
 * exits, or, when it outlasts the drain, the next worker runs it again once its lease runs out.
 */
describe('PM2 job worker app (real PM2, PostgreSQL, SMTP)', { skip: await skipUnless('postgres') }, () => {
  let database: TestDatabaseEnv;
  let smtp: TestSmtpServer;
  let cluster: Pm2Cluster;
  let db: pg.Client;
  const shutdownTimeoutMs = 6000;
  const workerApp = () => `${cluster.name}-worker`;

  /** The worker app's single process once it is online and has logged worker_started. */
  const onlineWorker = async (notPid?: number): Promise<number> => {
    let pid = 0;
    await waitUntil(
      async () => {
        const [worker] = (await cluster.processes()).filter((p) => p.name === workerApp());
        if (worker === undefined || worker.status !== 'online' || worker.pid === notPid) return false;
        pid = worker.pid;
        return workerLog().some((l) => l.event === 'worker_started' && l.pid === pid);
      },
      { timeoutMs: 90_000, what: 'the PM2 job worker to be online' },
    );
    return pid;
  };
  /** The worker app's log lines (PM2's timestamp, then the service's JSON). */
  const workerLog = (): Array<Record<string, unknown>> => {
    const file = join(cluster.logDir, 'worker-out.log');
    if (!existsSync(file)) return [];
    return readFileSync(file, 'utf8')
      .split('\n')
      .flatMap((line) => {
        const json = line.slice(line.indexOf('{'));
        try {
          return [JSON.parse(json) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  };
  const register = async (): Promise<string> => {
    const name = `pm2w${randomBytes(5).toString('hex')}`;
    const res = await send(cluster.port, {
      method: 'POST',
      path: '/api/auth/register',
      body: { email: `${name}@example.com`, username: name, password: 'a password for the worker test' },
    });
    assert.equal(res.status, 201, res.body);
    return `${name}@example.com`;
  };
  /** The verification-mail job enqueued by a registration (found by the address in its token's user). */
  const mailJob = async (email: string): Promise<JobState> => {
    const { rows } = await db.query<JobState>(
      `SELECT j.id, j.state, j.attempts, j.locked_by FROM jobs j
         JOIN account_tokens t ON t.id::text = (j.payload::json ->> 'tokenId')
         JOIN users u ON u.id = t.user_id
        WHERE j.name = 'mail.account' AND u.email = $1`,
      [email],
    );
    assert.equal(rows.length, 1, `one mail job for ${email}`);
    return rows[0] as JobState;
  };
  /** A registration whose verification mail the worker is sending now: the SMTP server holds it. */
  const mailInHand = async () => {
    const oldPid = await onlineWorker();
    const heldBefore = smtp.heldCount();
    smtp.hold(true);
    const email = await register();
    await smtp.waitForHeld(60_000, heldBefore);
    return { oldPid, email };
  };
  const mailsTo = (email: string) => smtp.received.filter((m) => m.to.includes(email)).length;

  before(async () => {
    database = await testDatabaseEnv('postgres');
    smtp = await startSmtpServer();
    cluster = await startPm2Cluster({
      instances: 1,
      port: await freePort(),
      metricsPort: await freePort(),
      env: {
        ...database.env,
        PM2_JOBS_WORKER: 'true',
        JWT_SECRET: randomBytes(48).toString('base64'),
        MAIL_SMTP_URL: smtp.url,
        LOG_LEVEL: 'info',
        JOBS_POLL_INTERVAL_MS: '200',
        JOBS_LEASE_SECONDS: '3',
        CACHE_WARM_UP_PAGES: '0',
        SHUTDOWN_GRACE_MS: '300',
        SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs),
        ARGON2_MEMORY_KIB: '19456',
      },
    });
    db = new pg.Client({ connectionString: database.env.DATABASE_URL });
    db.on('error', () => {});
    await db.connect();
  });
  after(async () => {
    await db?.end().catch(() => {});
    await cluster?.destroy();
    await smtp?.close();
    await database?.cleanup();
  });

  test('the worker app runs the jobs the API enqueues; the API workers run none', async () => {
    const pid = await onlineWorker();
    const [api] = await cluster.workers();
    assert.ok(api !== undefined && api.pid !== pid);
    const email = await register();
    const mail = await smtp.waitForMail(email, { subject: /^Confirm/ });
    assert.match(mail.text, /#\/verify-email\?token=/);
    await waitUntil(async () => (await mailJob(email)).state === 'succeeded', { what: 'the job to succeed' });
    const job = await mailJob(email);
    assert.equal(job.attempts, 1);
    assert.match(job.locked_by ?? '', new RegExp(`:${pid}:`), 'claimed by the PM2 worker process');
  });

  test('pm2 reload while a job is in hand: the old worker finishes it, then exits; one mail', async () => {
    const { oldPid, email } = await mailInHand();
    const running = await mailJob(email);
    assert.equal(running.state, 'running');
    assert.match(running.locked_by ?? '', new RegExp(`:${oldPid}:`));

    const reloaded = cluster.reload();
    // The old worker has its signal and is draining: only now does the SMTP server answer.
    await waitUntil(() => workerLog().some((l) => l.event === 'worker_stopping' && l.pid === oldPid), {
      timeoutMs: 90_000,
      what: 'the old worker to be told to stop',
    });
    smtp.release();
    await reloaded;
    const newPid = await onlineWorker(oldPid);
    assert.notEqual(newPid, oldPid);
    assert.ok(
      workerLog().some((l) => l.event === 'worker_stopped' && l.pid === oldPid),
      'a clean exit',
    );
    const done = await mailJob(email);
    assert.equal(done.state, 'succeeded');
    assert.equal(done.attempts, 1, 'finished by the worker that had it, not run again');
    assert.match(done.locked_by ?? '', new RegExp(`:${oldPid}:`));
    assert.equal(mailsTo(email), 1);
  });

  test('pm2:reload waits for the job worker’s ready; one that cannot start fails the reload with its log', async () => {
    const ok = await cluster.wrapper('reload', {});
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`every worker is ready \\(1\\), and the job worker ${workerApp()}`));
    // Its metrics port taken: the job worker exits at boot, again and again; the API workers are fine.
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const port = (blocker.address() as { port: number }).port;
      const broken = await cluster.wrapper('reload', {
        JOBS_METRICS_PORT: String(port),
        PM2_LISTEN_TIMEOUT_MS: '5000',
      });
      assert.equal(broken.code, 1, broken.stdout);
      // Told as soon as PM2 has restarted it a few times (not at the deadline).
      assert.match(
        broken.stderr,
        new RegExp(`not ready: ${workerApp()} worker 0 restarted \\d+ times \\(crash loop\\)`),
      );
      assert.match(broken.stderr, /worker-err\.log/);
    } finally {
      blocker.close();
    }
    const restored = await cluster.wrapper('reload', {});
    assert.equal(restored.code, 0, restored.stderr);
    await onlineWorker();
  });

  test('pm2 stop with a job outlasting the drain: the next worker runs it again; one mail', async () => {
    const { oldPid, email } = await mailInHand();
    const received = smtp.received.length;
    // Stops claiming, waits SHUTDOWN_TIMEOUT_MS for the held mail, then exits with the job unfinished.
    await cluster.pm2('stop', workerApp());
    assert.ok(
      workerLog().some((l) => l.pid === oldPid && /SHUTDOWN_TIMEOUT_MS/.test(String(l.msg))),
      `the worker gave up at its drain deadline:\n${workerLog()
        .filter((l) => l.pid === oldPid)
        .slice(-8)
        .map((l) => JSON.stringify(l))
        .join('\n')}`,
    );
    // The server would have accepted now, but the sender is gone: nothing is delivered.
    smtp.release();
    assert.equal(smtp.received.length, received);
    const unfinished = await mailJob(email);
    assert.equal(unfinished.state, 'running', 'still leased to the stopped worker');
    assert.equal(unfinished.attempts, 1);

    await cluster.pm2('start', workerApp());
    const newPid = await onlineWorker(oldPid);
    await smtp.waitForMail(email, { since: received, subject: /^Confirm/ });
    await waitUntil(async () => (await mailJob(email)).state === 'succeeded', { what: 'the retried job' });
    const done = await mailJob(email);
    assert.equal(done.attempts, 2, 'run again once the lease of the stopped worker ran out');
    assert.match(done.locked_by ?? '', new RegExp(`:${newPid}:`));
    assert.equal(mailsTo(email), 1);
  });
});
