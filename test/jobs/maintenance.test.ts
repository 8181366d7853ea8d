import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Config } from '../../src/config.js';
import { createMailer, type Mailer } from '../../src/infra/mail/mailer.js';
import type { JobRow } from '../../src/jobs/jobs.table.js';
import {
  createAccountsDeps,
  createQueue,
  createWorker,
  enqueueCacheWarmUp,
  maintenanceJobs,
} from '../../src/jobs/runtime.js';
import { createAuthDeps } from '../../src/modules/auth/auth.deps.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, cacheCounts, captureLogs, engines, skipEngine } from '../helper.js';
import { createProduct } from '../products/support.js';
import { type Account, createAdmin, registerUser } from '../support/accounts.js';

const silent = pino({ level: 'silent' });
const hourMs = 3_600_000;
const ago = (ms: number) => new Date(Date.now() - ms).toISOString();

/**
 * The maintenance jobs, run by the service's own worker set-up (`createWorker`: its handlers and
 * its recurring schedule) on the app's database, and checked by their effect.
 */
for (const engine of engines) {
  describe(`maintenance jobs on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    let mailer: Mailer;
    before(async () => {
      // The app's own worker is off: the test's workers run the jobs. Cache entries outlive any
      // pause of a loaded machine between the warm-up and the reads that count on it.
      app = await buildTestApp({
        engine,
        env: {
          JOBS_IN_PROCESS: 'false',
          CACHE_PRODUCT_TTL_SECONDS: '3600',
          CACHE_PRODUCT_LIST_TTL_SECONDS: '3600',
        },
      });
      mailer = createMailer(app.config.mail, app.config.env, silent);
    });
    after(async () => {
      mailer?.close();
      await app?.close();
    });

    const worker = (config: Config, logger = silent) => {
      const queue = createQueue(config);
      return createWorker({
        db: app.database.db,
        engine,
        config,
        queue,
        accounts: createAccountsDeps({
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
          queue,
          logger,
        }),
        mailer,
        registry: new Registry(),
        logger,
      });
    };
    const jobsNamed = (name: string): Promise<JobRow[]> =>
      app.database.db.selectFrom('jobs').selectAll().where('name', '=', name).execute();

    test('cleanup.sessions: removes sessions, refresh tokens, account tokens and finished jobs past their time; keeps the live ones', async () => {
      await app.database.db.deleteFrom('jobs').execute();
      const account: Account = await registerUser(app);
      const userId = account.user.id;
      const session = async (expiresAt: string) => {
        const id = randomUUID();
        await app.database.db
          .insertInto('sessions')
          .values({
            id,
            user_id: userId,
            last_used_at: expiresAt,
            expires_at: expiresAt,
            revoked_at: null,
            revoked_reason: null,
            user_agent: null,
            ip: null,
          })
          .execute();
        await app.database.db
          .insertInto('refresh_tokens')
          .values({
            token_hash: randomUUID().replaceAll('-', '').padEnd(64, '0'),
            session_id: id,
            expires_at: expiresAt,
            spent_at: null,
          })
          .execute();
        return id;
      };
      const accountToken = async (expiresAt: string) => {
        const id = randomUUID();
        await app.database.db
          .insertInto('account_tokens')
          .values({
            id,
            token_hash: randomUUID(),
            user_id: userId,
            purpose: 'password_reset',
            email: account.email,
            expires_at: expiresAt,
            used_at: null,
          })
          .execute();
        return id;
      };
      const finishedJob = async (state: 'succeeded' | 'dead' | 'queued', finishedAt: string | null) => {
        const id = randomUUID();
        await app.database.db
          .insertInto('jobs')
          .values({
            id,
            name: 'test.finished',
            key: null,
            payload: '{}',
            state,
            max_attempts: 3,
            // Not due: the worker must not claim the queued one.
            run_at: new Date(Date.now() + 24 * hourMs).toISOString(),
            locked_until: null,
            locked_by: null,
            last_error: null,
            trace_parent: null,
            started_at: null,
            finished_at: finishedAt,
          })
          .execute();
        return id;
      };
      const retention = app.config.jobs.retentionHours * hourMs;
      const gone = {
        session: await session(ago(25 * hourMs)),
        accountToken: await accountToken(ago(25 * hourMs)),
        succeeded: await finishedJob('succeeded', ago(retention + hourMs)),
        dead: await finishedJob('dead', ago(retention + hourMs)),
      };
      const kept = {
        // Ended less than a day ago: kept (an access token may still name it).
        recentlyEnded: await session(ago(hourMs)),
        live: await session(new Date(Date.now() + 24 * hourMs).toISOString()),
        accountToken: await accountToken(ago(hourMs)),
        succeeded: await finishedJob('succeeded', ago(retention - hourMs)),
        queued: await finishedJob('queued', null),
      };
      const logs = captureLogs('info');
      // The recurring schedule enqueues this interval's clean-ups, and the worker runs them.
      const w = worker(app.config, logs.logger);
      await waitUntil(
        async () => {
          await w.runOnce();
          const [cleanup] = await jobsNamed(maintenanceJobs.sessionCleanup);
          return cleanup?.state === 'succeeded';
        },
        { what: 'the clean-up job to succeed' },
      );

      const ids = async (table: 'sessions' | 'account_tokens' | 'jobs', wanted: string[]) =>
        (await app.database.db.selectFrom(table).select('id').where('id', 'in', wanted).execute())
          .map((r) => r.id)
          .sort();
      assert.deepEqual(await ids('sessions', [gone.session]), []);
      assert.deepEqual(await ids('account_tokens', [gone.accountToken]), []);
      assert.deepEqual(await ids('jobs', [gone.succeeded, gone.dead]), []);
      const refreshOf = (sessionId: string) =>
        app.database.db
          .selectFrom('refresh_tokens')
          .select('token_hash')
          .where('session_id', '=', sessionId)
          .execute();
      assert.equal((await refreshOf(gone.session)).length, 0);
      assert.deepEqual(
        await ids('sessions', [kept.recentlyEnded, kept.live]),
        [kept.recentlyEnded, kept.live].sort(),
      );
      assert.equal((await refreshOf(kept.live)).length, 1);
      assert.equal((await refreshOf(kept.recentlyEnded)).length, 1);
      assert.deepEqual(await ids('account_tokens', [kept.accountToken]), [kept.accountToken]);
      assert.deepEqual(
        await ids('jobs', [kept.succeeded, kept.queued]),
        [kept.succeeded, kept.queued].sort(),
      );
      // The registration's own session still works.
      const me = await app.inject({
        url: '/api/users/me',
        headers: { authorization: `Bearer ${account.accessToken}` },
      });
      assert.equal(me.statusCode, 200);
      const line = logs.lines.find((l) => l.event === 'cleanup');
      assert.ok(line, 'the clean-up logs what it removed');
      assert.equal(line.sessions, 1);
      assert.equal(line.refreshTokens, 1);
      assert.equal(line.accountTokens, 1);
      assert.ok(Number(line.jobs) >= 2);
      await app.database.db.deleteFrom('jobs').execute();
    });

    test('cache.warm-up: reads the catalog through the HTTP API, so the next reads are cache hits', async () => {
      await app.database.db.deleteFrom('jobs').execute();
      assert.equal(app.cache.kind, 'memory');
      const admin = await createAdmin(app);
      const products = [];
      for (let i = 0; i < 3; i++) products.push(await createProduct(app, admin, { name: `Warm ${i}` }));
      // The job reads the service over HTTP: the app listens on a port of its own.
      await app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = app.server.address() as AddressInfo;
      const config: Config = {
        ...app.config,
        jobs: { ...app.config.jobs, warmUpUrl: `http://127.0.0.1:${port}`, warmUpPages: 1 },
      };
      await enqueueCacheWarmUp(createQueue(config), app.database.db, config);
      const [queued] = await jobsNamed(maintenanceJobs.cacheWarmUp);
      assert.ok(queued, 'one warm-up job per build');
      // It is due a few seconds after the start: make it due now.
      await app.database.db
        .updateTable('jobs')
        .set({ run_at: new Date().toISOString() })
        .where('id', '=', queued.id)
        .execute();
      const cold = await cacheCounts(app, 'product');
      const w = worker(config);
      await waitUntil(
        async () => {
          await w.runOnce();
          const [row] = await jobsNamed(maintenanceJobs.cacheWarmUp);
          return row?.state === 'succeeded';
        },
        { what: 'the warm-up job to succeed' },
      );
      const warmed = await cacheCounts(app, 'product');
      assert.ok(warmed.loads - cold.loads >= products.length, `loaded ${warmed.loads - cold.loads}`);
      // Every product read now is answered from the cache.
      for (const product of products) {
        const res = await app.inject({ url: `/api/products/${product.id}` });
        assert.equal(res.statusCode, 200);
      }
      const after = await cacheCounts(app, 'product');
      assert.equal(after.hit - warmed.hit, products.length);
      assert.equal(after.miss - warmed.miss, 0);
      assert.equal(after.loads - warmed.loads, 0);
      // And so is the first page of the catalog.
      const listBefore = await cacheCounts(app, 'product_list');
      assert.equal((await app.inject({ url: '/api/products?limit=100' })).statusCode, 200);
      const listAfter = await cacheCounts(app, 'product_list');
      assert.equal(listAfter.hit - listBefore.hit, 1);
      assert.equal(listAfter.loads - listBefore.loads, 0);
      await app.database.db.deleteFrom('jobs').execute();
    });
  });
}
