import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { JobRow } from '../../src/jobs/jobs.table.js';
import { createJobQueue } from '../../src/jobs/queue.js';
import {
  backoffMs,
  createJobMetrics,
  createJobWorker,
  type JobHandler,
  LeaseLostError,
} from '../../src/jobs/worker.js';
import { waitUntil } from '../harness/wait.js';
import { buildTestApp, engines, skipEngine } from '../helper.js';

const silent = pino({ level: 'silent' });

for (const engine of engines) {
  describe(`the durable job queue on ${engine}`, { skip: await skipEngine(engine) }, () => {
    let app: FastifyInstance;
    before(async () => {
      // The service's own worker is off: each test runs workers of its own on the same tables.
      app = await buildTestApp({ engine, env: { JOBS_IN_PROCESS: 'false' } });
    });
    after(async () => {
      await app?.close();
    });

    const config = (overrides: Partial<ReturnType<typeof baseConfig>> = {}) => ({
      ...baseConfig(),
      ...overrides,
    });
    const baseConfig = () => ({ ...app.config.jobs, pollIntervalMs: 50, backoffBaseMs: 20, leaseSeconds: 2 });
    const job = async (id: string): Promise<JobRow> =>
      app.database.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    const worker = (handlers: Record<string, JobHandler>, overrides = {}, registry = new Registry()) =>
      createJobWorker({
        db: app.database.db,
        engine,
        config: config(overrides),
        handlers,
        metrics: createJobMetrics(registry),
        logger: silent,
      });

    test('a key makes enqueueing idempotent; a job enqueued in a rolled-back transaction never exists', async () => {
      const queue = createJobQueue({ maxAttempts: 3 });
      const first = await queue.enqueue(app.database.db, 'test.noop', { n: 1 }, { key: `k-${engine}-1` });
      const second = await queue.enqueue(app.database.db, 'test.noop', { n: 2 }, { key: `k-${engine}-1` });
      assert.equal(first.created, true);
      assert.equal(second.created, false);
      assert.equal(second.id, first.id);
      assert.equal(JSON.parse((await job(first.id)).payload).n, 1);
      let rolledBack = '';
      await app.database.db
        .transaction()
        .execute(async (trx) => {
          rolledBack = (await queue.enqueue(trx, 'test.noop', {})).id;
          throw new Error('roll back');
        })
        .catch(() => {});
      assert.equal(
        await app.database.db.selectFrom('jobs').select('id').where('id', '=', rolledBack).executeTakeFirst(),
        undefined,
      );
      await app.database.db.deleteFrom('jobs').execute();
    });

    test('a failing job is retried with backoff, then dead-lettered; metrics count each outcome', async () => {
      const queue = createJobQueue({ maxAttempts: 3 });
      const registry = new Registry();
      const attempts: number[] = [];
      const w = worker(
        {
          'test.flaky': async ({ takenOver }) => {
            // A retry after a recorded failure is not a takeover: the failed attempt's outcome is known.
            assert.equal(takenOver, false);
            attempts.push(Date.now());
            throw new Error('boom');
          },
          'test.ok': async () => {},
        },
        {},
        registry,
      );
      const { id } = await queue.enqueue(app.database.db, 'test.flaky', {});
      const ok = await queue.enqueue(app.database.db, 'test.ok', {});
      w.start();
      try {
        await waitUntil(async () => (await job(id)).state === 'dead', { what: 'the job to be dead' });
        await waitUntil(async () => (await job(ok.id)).state === 'succeeded', { what: 'the ok job' });
      } finally {
        await w.stop();
      }
      const dead = await job(id);
      assert.equal(dead.attempts, 3);
      assert.match(dead.last_error ?? '', /boom/);
      assert.equal(attempts.length, 3);
      // Backoff: the gaps grow (20 ms × 2^n with ±25 % jitter, plus polling).
      const [a1 = 0, a2 = 0, a3 = 0] = attempts;
      assert.ok(a2 - a1 >= 15 && a3 - a2 >= 30, `gaps ${a2 - a1} and ${a3 - a2} ms`);
      const text = await registry.metrics();
      assert.match(text, /jobs_finished_total\{name="test.flaky",result="failed"\} 2/);
      assert.match(text, /jobs_finished_total\{name="test.flaky",result="dead"\} 1/);
      assert.match(text, /jobs_finished_total\{name="test.ok",result="succeeded"\} 1/);
      assert.match(text, /jobs_latency_seconds_count\{name="test.ok"\} 1/);
      // The service's /metrics shows the queue by state, from the database.
      const metrics = await app.inject({ url: '/metrics' });
      assert.match(metrics.body, /^jobs\{state="dead"\} 1$/m);
      assert.match(metrics.body, /^jobs\{state="queued"\} 0$/m);
      await app.database.db.deleteFrom('jobs').execute();
    });

    test('a job whose worker stopped renewing its lease is taken over, and the old worker cannot finish it', async () => {
      const queue = createJobQueue({ maxAttempts: 5 });
      const { id } = await queue.enqueue(app.database.db, 'test.slow', {});
      let release: () => void = () => {};
      const stuck = new Promise<void>((resolve) => {
        release = resolve;
      });
      // Worker 1 claims it, then "hangs" with its lease renewals broken (as a paused process would).
      const w1 = createJobWorker({
        db: app.database.db,
        engine,
        // A long lease: no renewal falls inside the test (it renews every lease / 3).
        config: config({ leaseSeconds: 60 }),
        handlers: { 'test.slow': () => stuck },
        metrics: createJobMetrics(new Registry()),
        logger: silent,
        id: 'w1',
      });
      const run1 = w1.runOnce();
      await waitUntil(async () => (await job(id)).locked_by === 'w1', { what: 'w1 to hold the job' });
      // Expire its lease by hand (renewal would otherwise keep it).
      await app.database.db
        .updateTable('jobs')
        .set({ locked_until: new Date(Date.now() - 1000).toISOString() })
        .where('id', '=', id)
        .execute();
      const ran: string[] = [];
      const registry2 = new Registry();
      const w2 = createJobWorker({
        db: app.database.db,
        engine,
        config: config({ leaseSeconds: 30 }),
        handlers: { 'test.slow': async ({ takenOver }) => void ran.push(`w2 takenOver=${takenOver}`) },
        metrics: createJobMetrics(registry2),
        logger: silent,
        id: 'w2',
      });
      assert.equal(await w2.runOnce(), 1);
      // The handler knows the previous attempt's outcome is unknown (a mail may have gone out).
      assert.deepEqual(ran, ['w2 takenOver=true']);
      assert.match(await registry2.metrics(), /^jobs_taken_over_total\{name="test.slow"\} 1$/m);
      const done = await job(id);
      assert.equal(done.state, 'succeeded');
      assert.equal(done.attempts, 2);
      // w1 finally returns: its outcome is fenced off (attempt 1 is no longer the job's).
      release();
      await run1;
      const after = await job(id);
      assert.equal(after.state, 'succeeded');
      assert.equal(after.locked_by, 'w2');
      await app.database.db.deleteFrom('jobs').execute();
    });

    test('a worker whose lease was taken over learns it at its next renewal: its handler is aborted and it records and counts nothing', async () => {
      const queue = createJobQueue({ maxAttempts: 5 });
      const { id } = await queue.enqueue(app.database.db, 'test.effect', {});
      const effects: string[] = [];
      let w1Signal: AbortSignal | undefined;
      let w2Finished = false;
      const registry1 = new Registry();
      const w1 = createJobWorker({
        db: app.database.db,
        engine,
        // Renewals every second (lease / 3).
        config: config({ leaseSeconds: 3 }),
        handlers: {
          'test.effect': async ({ signal }) => {
            w1Signal = signal;
            // Stalled (a slow SMTP server, a paused process) until another worker has done the job.
            await waitUntil(() => w2Finished, { what: 'w2 to finish the job' });
            await waitUntil(() => signal.aborted, { what: 'w1 to learn it lost the lease' });
            // What the mail job does before it sends: this attempt is no longer the job's.
            if (!signal.aborted) effects.push('w1');
          },
        },
        metrics: createJobMetrics(registry1),
        logger: silent,
        id: 'w1',
      });
      const run1 = w1.runOnce();
      await waitUntil(async () => (await job(id)).locked_by === 'w1', { what: 'w1 to hold the job' });
      const registry2 = new Registry();
      const w2 = createJobWorker({
        db: app.database.db,
        engine,
        config: config({ leaseSeconds: 30 }),
        handlers: { 'test.effect': async () => void effects.push('w2') },
        metrics: createJobMetrics(registry2),
        logger: silent,
        id: 'w2',
      });
      // Its lease runs out (as if w1 had been paused past it), and w2 takes the job over. Again
      // until w2 has it: a renewal by w1 landing between the two would give w1 a fresh lease.
      await waitUntil(
        async () => {
          await app.database.db
            .updateTable('jobs')
            .set({ locked_until: new Date(Date.now() - 1000).toISOString() })
            .where('id', '=', id)
            .execute();
          return (await w2.runOnce()) === 1;
        },
        { what: 'w2 to take the job over' },
      );
      w2Finished = true;
      await run1;
      assert.equal(w1Signal?.aborted, true);
      assert.ok(w1Signal?.reason instanceof LeaseLostError, String(w1Signal?.reason));
      assert.deepEqual(effects, ['w2'], 'the effect happened once, by the holder');
      const done = await job(id);
      assert.deepEqual([done.state, done.locked_by, done.attempts], ['succeeded', 'w2', 2]);
      // One outcome in all: w2's. w1's fenced update matched no row, so it counted nothing.
      assert.match(
        await registry2.metrics(),
        /^jobs_finished_total\{name="test.effect",result="succeeded"\} 1$/m,
      );
      assert.doesNotMatch(await registry1.metrics(), /^jobs_finished_total\{/m);
      await app.database.db.deleteFrom('jobs').execute();
    });

    test('an outcome recorded after the lease was lost is not counted, whatever the handler did', async () => {
      const queue = createJobQueue({ maxAttempts: 5 });
      const ok = await queue.enqueue(app.database.db, 'test.ignores-signal', {});
      const failing = await queue.enqueue(app.database.db, 'test.fails-late', {});
      let release: () => void = () => {};
      const stuck = new Promise<void>((resolve) => {
        release = resolve;
      });
      const registry1 = new Registry();
      const w1 = createJobWorker({
        db: app.database.db,
        engine,
        // A long lease: no renewal falls inside the test; only the final UPDATE meets the takeover.
        config: config({ leaseSeconds: 60, concurrency: 2 }),
        handlers: {
          'test.ignores-signal': () => stuck,
          'test.fails-late': async () => {
            await stuck;
            throw new Error('late failure');
          },
        },
        metrics: createJobMetrics(registry1),
        logger: silent,
        id: 'w1',
      });
      const run1 = w1.runOnce();
      await waitUntil(
        async () => (await job(ok.id)).locked_by === 'w1' && (await job(failing.id)).locked_by === 'w1',
        { what: 'w1 to hold both jobs' },
      );
      // Another worker claims both, as after an expired lease, and is running them now.
      await app.database.db
        .updateTable('jobs')
        .set({ locked_by: 'w2', attempts: 2, locked_until: new Date(Date.now() + 60_000).toISOString() })
        .where('id', 'in', [ok.id, failing.id])
        .execute();
      release();
      await run1;
      assert.doesNotMatch(await registry1.metrics(), /^jobs_finished_total\{/m);
      for (const id of [ok.id, failing.id]) {
        const row = await job(id);
        assert.deepEqual([row.state, row.locked_by, row.last_error], ['running', 'w2', null]);
      }
      await app.database.db.deleteFrom('jobs').execute();
    });

    test('recurring jobs: one per interval whatever the number of workers', async () => {
      const queue = createJobQueue({ maxAttempts: 3 });
      const runs: string[] = [];
      const make = (name: string) =>
        createJobWorker({
          db: app.database.db,
          engine,
          config: config(),
          handlers: { 'test.tick': async () => void runs.push(name) },
          recurring: [{ name: 'test.tick', intervalMs: 3_600_000 }],
          enqueueRecurring: async (recurring, slot) => {
            await queue.enqueue(app.database.db, recurring.name, {}, { key: `${recurring.name}:${slot}` });
          },
          metrics: createJobMetrics(new Registry()),
          logger: silent,
        });
      const workers = [make('a'), make('b'), make('c')];
      for (const w of workers) await w.runOnce();
      for (const w of workers) await w.runOnce();
      assert.equal(runs.length, 1, `ran ${runs.join(',')}`);
      await app.database.db.deleteFrom('jobs').execute();
    });
  });
}

describe('backoff', () => {
  test('doubles per attempt within ±25 %, capped at an hour', () => {
    assert.equal(
      backoffMs(1000, 1, () => 0.5),
      1000,
    );
    assert.equal(
      backoffMs(1000, 4, () => 0.5),
      8000,
    );
    assert.equal(
      backoffMs(1000, 3, () => 0),
      3000,
    );
    assert.equal(
      backoffMs(1000, 3, () => 0.999_999),
      5000,
    );
    assert.equal(
      backoffMs(1000, 40, () => 0.5),
      3_600_000,
    );
  });
});
